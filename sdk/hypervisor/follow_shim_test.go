package hypervisor

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/shim"
)

// dirsOnly is a ShimDirs backend with VMs in the given directories.
type dirsOnly struct {
	Hypervisor
	dirs map[string]string
}

func (d dirsOnly) ShimDir(id string) (string, error) {
	if dir, ok := d.dirs[id]; ok {
		return dir, nil
	}
	return "", ErrUnknownVM
}

// fakeShim answers one console request on dir's socket with reply, line
// by line, and returns the request it got.
func fakeShim(t *testing.T, dir string, reply ...string) <-chan string {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(dir, shim.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, _ := bufio.NewReader(c).ReadString('\n')
		got <- req
		for _, r := range reply {
			if _, err := io.WriteString(c, r+"\n"); err != nil {
				return
			}
		}
	}()
	return got
}

// TestFollowConsolesShimDirs follows VMs of a ShimDirs backend through
// their shims' sockets: lines lost by the shim reach petreld as a marker
// before the lines after them, an unknown VM ends with NOT_FOUND, and a
// lost shim's console simply ends.
func TestFollowConsolesShimDirs(t *testing.T) {
	live, lost := t.TempDir(), t.TempDir()
	t0 := time.Unix(1700000000, 0).UnixNano()
	reqc := fakeShim(t, live,
		`{"batch":{"dropped":3,"n":2,"t":1700000000000000000,"d":[1000],"x":"a\nb"}}`,
		`{"end":true}`)
	// A socket nobody listens on, and no exit record: a killed shim.
	l, err := net.Listen("unix", filepath.Join(lost, shim.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	impl := dirsOnly{dirs: map[string]string{"live": live, "lost": lost}}
	var reqs []*pluginv1.FollowConsolesRequest
	for _, id := range []string{"live", "lost", "gone"} {
		reqs = append(reqs, &pluginv1.FollowConsolesRequest{Id: id, SinceNs: 5})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, done := followConsoles(ctx, impl, reqs...)
	var lines []*pluginv1.ConsoleLine
	ends := map[string]*pluginv1.FollowConsolesMessage{}
	for len(ends) < 3 {
		select {
		case m := <-msgs:
			if m.GetId() == "live" {
				lines = append(lines, m.GetLines()...)
			}
			if m.GetEnd() {
				ends[m.GetId()] = m
			}
		case <-ctx.Done():
			t.Fatalf("ends so far: %v", ends)
		}
	}
	if req := <-reqc; !strings.Contains(req, `"op":"console"`) || !strings.Contains(req, `"follow":true`) ||
		!strings.Contains(req, `"batch":true`) || !strings.Contains(req, `"since":"`+time.Unix(0, 5).Format(time.RFC3339Nano)+`"`) {
		t.Errorf("the shim was asked %q, want the console from 5 ns, followed, in batches", req)
	}
	if len(lines) != 3 || lines[0].GetDropped() != 3 || lines[0].GetText() != "" || lines[0].GetTimeNs() != t0 ||
		lines[1].GetText() != "a" || lines[2].GetText() != "b" || lines[2].GetTimeNs() != t0+1000 {
		t.Errorf("lines of live: %v", lines)
	}
	if m := ends["live"]; m.GetCode() != 0 {
		t.Errorf("end of live: %v", m)
	}
	if m := ends["lost"]; m.GetCode() != 0 {
		t.Errorf("end of a lost shim's console: %v, want a plain end", m)
	}
	if m := ends["gone"]; codes.Code(m.GetCode()) != codes.NotFound || !errors.Is(FollowEndError(m), ErrUnknownVM) {
		t.Errorf("end of an unknown VM: %v", m)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("FollowConsoles returned %v", err)
	}
}

// TestFollowConsolesPacked: a caller that accepts packed lines gets a
// shim's batch as one packed message, with the count of lines lost
// before it, the times as differences and the cut lines marked.
func TestFollowConsolesPacked(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Unix(1700000000, 0).UnixNano()
	fakeShim(t, dir,
		`{"batch":{"dropped":3,"n":3,"t":1700000000000000000,"d":[1000,5],"x":"a\n\nccc","tr":[2]}}`,
		`{"end":true}`)
	impl := dirsOnly{dirs: map[string]string{"vm": dir}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, done := followConsoles(ctx, impl, &pluginv1.FollowConsolesRequest{Id: "vm", Packed: true})
	var got []*pluginv1.FollowConsolesMessage
	for {
		select {
		case m := <-msgs:
			got = append(got, m)
		case <-ctx.Done():
			t.Fatalf("messages so far: %v", got)
		}
		if got[len(got)-1].GetEnd() {
			break
		}
	}
	cancel()
	<-done
	if len(got) != 2 || len(got[0].GetLines()) != 0 {
		t.Fatalf("messages: %v, want one packed message and the end", got)
	}
	p := got[0].GetPacked()
	if p.GetCount() != 3 || p.GetDropped() != 3 || p.GetStartNs() != t0 || len(p.GetDeltas()) != 2 ||
		p.GetDeltas()[0] != 1000 || p.GetDeltas()[1] != 5 || p.GetText() != "a\n\nccc" ||
		len(p.GetTruncated()) != 1 || p.GetTruncated()[0] != 2 {
		t.Errorf("packed lines: %v", p)
	}
}

// TestPackBatchEmpty: a batch with nothing is no message, and one with
// only lost lines carries their count alone.
func TestPackBatchEmpty(t *testing.T) {
	if p := packBatch(shim.Batch{}); p != nil {
		t.Errorf("empty batch packed as %v", p)
	}
	if p := packBatch(shim.Batch{Dropped: 7}); p == nil || p.GetDropped() != 7 || p.GetCount() != 0 || p.GetText() != "" || len(p.GetDeltas()) != 0 {
		t.Errorf("batch of lost lines packed as %v", p)
	}
}

// followConsoles runs FollowConsoles over impl with reqs as the caller's
// requests (then none, until ctx ends), until ctx ends: msgs receives
// what it sends, done its result.
func followConsoles(ctx context.Context, impl Hypervisor, reqs ...*pluginv1.FollowConsolesRequest) (msgs chan *pluginv1.FollowConsolesMessage, done chan error) {
	queue := make(chan *pluginv1.FollowConsolesRequest, len(reqs))
	for _, r := range reqs {
		queue <- r
	}
	msgs, done = make(chan *pluginv1.FollowConsolesMessage, 10), make(chan error, 1)
	go func() {
		done <- FollowConsoles(ctx, impl, func() (*pluginv1.FollowConsolesRequest, error) {
			select {
			case r := <-queue:
				return r, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}, func(m *pluginv1.FollowConsolesMessage) error { msgs <- m; return nil })
	}()
	return msgs, done
}
