package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/internal/block"
	"github.com/petrel-vmm/petrel/core/internal/console"
	"github.com/petrel-vmm/petrel/core/internal/supervisor"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/sdk/client"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/network"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// TestGRPCError: each class of error becomes the status code the CLI
// turns into its exit code, however deeply it is wrapped; a status error
// passes unchanged; anything else is Internal.
func TestGRPCError(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("create web: %w", fmt.Errorf("step: %w", err)) }
	for _, c := range []struct {
		err  error
		want codes.Code
	}{
		{block.ErrBusy, codes.Aborted},
		{block.ErrInvalid, codes.InvalidArgument},
		{block.ErrNotFound, codes.NotFound},
		{block.ErrExists, codes.AlreadyExists},
		{network.ErrInvalid, codes.InvalidArgument},
		{network.ErrUnavailable, codes.FailedPrecondition},
		{policy.ErrExceeded, codes.ResourceExhausted},
		{policy.ErrNotFound, codes.NotFound},
		{supervisor.ErrNotFound, codes.NotFound},
		{supervisor.ErrExists, codes.AlreadyExists},
		{hypervisor.ErrInvalid, codes.InvalidArgument},
		{hypervisor.ErrUnavailable, codes.FailedPrecondition},
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("disk on fire"), codes.Internal},
		{status.Error(codes.PermissionDenied, "not yours"), codes.PermissionDenied},
	} {
		got := grpcError(wrap(c.err))
		if c.want == codes.PermissionDenied {
			got = grpcError(c.err) // a status error is passed as it is
		}
		st, ok := status.FromError(got)
		if !ok || st.Code() != c.want {
			t.Errorf("grpcError(%v) = %v, want %s", c.err, got, c.want)
			continue
		}
		if c.want != codes.PermissionDenied && !strings.Contains(st.Message(), "create web: step: ") {
			t.Errorf("grpcError(%v) lost the context: %q", c.err, st.Message())
		}
	}
	if grpcError(nil) != nil {
		t.Error("grpcError(nil) is not nil")
	}
}

// consoleStream records what Console sends.
type consoleStream struct {
	grpc.ServerStream
	sent []*daemonv1.ConsoleLine
	fail error
}

func (s *consoleStream) Send(m *daemonv1.ConsoleLine) error {
	if s.fail != nil {
		return s.fail
	}
	s.sent = append(s.sent, m)
	return nil
}

func (s *consoleStream) Context() context.Context { return context.Background() }

// lines makes n console lines of size bytes each, numbered in their text.
func lines(n, size int) []console.Line {
	out := make([]console.Line, n)
	base := time.Unix(1700000000, 0)
	for i := range out {
		text := fmt.Sprintf("%08d", i)
		text += strings.Repeat("x", max(0, size-len(text)))
		out[i] = console.Line{Time: base.Add(time.Duration(i)), Text: text}
	}
	return out
}

// flatten returns the texts of sent messages in order, with each
// message's size in lines.
func flatten(sent []*daemonv1.ConsoleLine) (texts []string, sizes []int) {
	for _, m := range sent {
		texts = append(texts, m.GetText())
		for _, l := range m.GetMore() {
			texts = append(texts, l.GetText())
			if len(l.GetMore()) != 0 {
				panic("nested batch")
			}
		}
		sizes = append(sizes, 1+len(m.GetMore()))
	}
	return texts, sizes
}

// TestSendLines: without batches every line is a message; with batches
// lines go in as few messages as the bounds allow (consoleBatchLines
// lines, consoleBatchBytes of text, a longer line alone), in order and
// with their times.
func TestSendLines(t *testing.T) {
	for _, c := range []struct {
		what      string
		in        []console.Line
		batch     bool
		wantSizes string
	}{
		{"one per message", lines(3, 10), false, "[1 1 1]"},
		{"one batch", lines(3, 10), true, "[3]"},
		{"line bound", lines(consoleBatchLines*2+1, 10), true, fmt.Sprint([]int{consoleBatchLines, consoleBatchLines, 1})},
		{"byte bound", lines(5, consoleBatchBytes/2), true, "[2 2 1]"},
		{"a line past the byte bound goes alone", append(lines(1, consoleBatchBytes+1), lines(2, 10)...), true, "[1 2]"},
		{"nothing", nil, true, "[]"},
	} {
		s := &consoleStream{}
		if err := sendLines(s, c.in, c.batch); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		texts, sizes := flatten(s.sent)
		if got := fmt.Sprint(sizes); got != c.wantSizes {
			t.Errorf("%s: messages of %s lines, want %s", c.what, got, c.wantSizes)
		}
		if len(texts) != len(c.in) {
			t.Fatalf("%s: %d lines sent of %d", c.what, len(texts), len(c.in))
		}
		for i := range texts {
			if texts[i] != c.in[i].Text {
				t.Fatalf("%s: line %d is %.20q, want %.20q", c.what, i, texts[i], c.in[i].Text)
			}
		}
	}
	s := &consoleStream{}
	if err := sendLines(s, lines(2, 10), true); err != nil || s.sent[0].GetMore()[0].GetTimeNs() != lines(2, 10)[1].Time.UnixNano() {
		t.Fatalf("the time of a batched line is lost: %v", err)
	}
	gone := errors.New("client gone")
	if err := sendLines(&consoleStream{fail: gone}, lines(2, 10), true); !errors.Is(err, gone) {
		t.Fatalf("a failed send is %v, want %v", err, gone)
	}
}

// TestSendPacked: packed lines go in as few messages as the bounds of a
// batch allow, a marker's count with the lines after it, a text with a
// newline alone and plain; what a client unpacks is what was sent.
func TestSendPacked(t *testing.T) {
	base := time.Unix(1700000000, 0)
	marker := func(n uint64) console.Line { return console.Line{Time: base, Dropped: n} }
	cut := lines(3, 10)
	cut[1].Truncated = true
	for _, c := range []struct {
		what      string
		in        []console.Line
		wantSizes string // lines (with markers) per message
	}{
		{"one message", cut, "[3]"},
		{"line bound", lines(consoleBatchLines*2+1, 10), fmt.Sprint([]int{consoleBatchLines, consoleBatchLines, 1})},
		{"byte bound", lines(5, consoleBatchBytes/2), "[2 2 1]"},
		{"markers", append(append(append(lines(2, 10), marker(4)), lines(2, 10)...), marker(1), marker(2)), "[2 3 1 1]"},
		{"a newline", append(append(lines(1, 10), console.Line{Time: base, Text: "a\nb"}), lines(1, 10)...), "[1 1 1]"},
		{"nothing", nil, "[]"},
	} {
		s := &consoleStream{}
		if err := sendPacked(s, c.in); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		var got []client.ConsoleLine
		var sizes []int
		for _, m := range s.sent {
			n := len(got)
			var err error
			if got, err = client.AppendConsoleLines(got, m); err != nil {
				t.Fatalf("%s: %v", c.what, err)
			}
			sizes = append(sizes, len(got)-n)
		}
		if g := fmt.Sprint(sizes); g != c.wantSizes {
			t.Errorf("%s: messages of %s lines, want %s", c.what, g, c.wantSizes)
		}
		if len(got) != len(c.in) {
			t.Fatalf("%s: %d lines received of %d", c.what, len(got), len(c.in))
		}
		for i, l := range c.in {
			want := client.ConsoleLine{TimeNs: l.Time.UnixNano(), Text: l.Text, Truncated: l.Truncated, Dropped: l.Dropped}
			if l.Dropped > 0 && i+1 < len(c.in) && c.in[i+1].Dropped == 0 {
				want.TimeNs = c.in[i+1].Time.UnixNano() // a marker takes the time of the lines after it
			}
			if got[i] != want {
				t.Fatalf("%s: line %d is %+.40v, want %+.40v", c.what, i, got[i], want)
			}
		}
	}
	gone := errors.New("client gone")
	if err := sendPacked(&consoleStream{fail: gone}, lines(2, 10)); !errors.Is(err, gone) {
		t.Fatalf("a failed send is %v, want %v", err, gone)
	}
}
