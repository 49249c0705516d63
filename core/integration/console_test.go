package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// followResult is what a console follower received: the numbers of the
// fake tender's "line N" lines in order of arrival, the other lines, and
// the lines markers said were lost.
type followResult struct {
	seq    []int
	other  int
	missed uint64
}

// follow follows name's console in batches until it ends. pause, when
// set, is called after the first message, to stall the follower.
func follow(ctx context.Context, c daemonv1.DaemonClient, name string, pause func()) (followResult, error) {
	var res followResult
	stream, err := c.Console(ctx, &daemonv1.ConsoleRequest{Name: name, Follow: true, Batch: true})
	if err != nil {
		return res, err
	}
	take := func(l *daemonv1.ConsoleLine) {
		switch n, ok := strings.CutPrefix(l.GetText(), "line "); {
		case l.GetDropped() > 0:
			res.missed += l.GetDropped()
		case ok:
			i, _ := strconv.Atoi(n)
			res.seq = append(res.seq, i)
		default:
			res.other++
		}
	}
	for first := true; ; first = false {
		l, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		take(l)
		for _, m := range l.GetMore() {
			take(m)
		}
		if first && pause != nil {
			pause()
		}
	}
}

// consoleEnv starts petreld and uploads the fake tender's image.
func consoleEnv(t *testing.T) (*client.Client, string, string) {
	e := newEnv(t)
	e.start()
	c := e.client()
	ref, err := c.c.UploadImageFile(context.Background(), e.image("chatty.hvt", solo5.TargetHVT), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.c, ref.GetSha256(), e.socket
}

// TestConsoleFollowKeepsUp has a guest print 200 000 lines at 200 000
// lines/s to a follower that reads as fast as it can, and checks that every
// line arrives once and in order: no line is lost on the way through the
// shim, the plugin and petreld.
func TestConsoleFollowKeepsUp(t *testing.T) {
	const lines = 200000
	c, sha, _ := consoleEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The delay lets the follower attach before the first line.
	if _, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: "chatty", ImageSha256: sha, MemoryMb: 16,
		Args: []string{"delay=300ms", "rate=200000", fmt.Sprintf("lines=%d", lines)}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := follow(ctx, c.API, "chatty", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.missed != 0 || len(res.seq) != lines {
		t.Fatalf("follower got %d of %d lines, %d reported missed", len(res.seq), lines, res.missed)
	}
	for i, n := range res.seq {
		if n != i+1 {
			t.Fatalf("line %d arrived where line %d was due", n, i+1)
		}
	}
	t.Logf("%d lines in order in %v", lines, time.Since(start).Round(time.Millisecond))
}

// TestConsoleSlowFollowerToldWhatItMissed stalls a follower while the guest
// prints, and checks that the follower is told how many lines it missed:
// the markers' counts plus the lines received make every line printed, and
// the lines received are in order.
func TestConsoleSlowFollowerToldWhatItMissed(t *testing.T) {
	const lines = 300000
	c, sha, socket := consoleEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: "chatty", ImageSha256: sha, MemoryMb: 16,
		Args: []string{"delay=300ms", fmt.Sprintf("lines=%d", lines)}}); err != nil {
		t.Fatal(err)
	}
	// A connection with small flow-control windows, so that the stall
	// is not absorbed by the transport's buffers.
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := follow(ctx, daemonv1.NewDaemonClient(conn), "chatty", func() { time.Sleep(3 * time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	// The fake tender prints a line before and one after its numbered
	// lines.
	if total := uint64(len(res.seq)+res.other) + res.missed; total != lines+2 {
		t.Fatalf("%d lines received + %d missed = %d, want %d", len(res.seq)+res.other, res.missed, total, lines+2)
	}
	if res.missed == 0 {
		t.Fatalf("a follower stalled for 3 s missed no line of %d; the test proves nothing", lines)
	}
	for i := 1; i < len(res.seq); i++ {
		if res.seq[i] <= res.seq[i-1] {
			t.Fatalf("line %d after line %d", res.seq[i], res.seq[i-1])
		}
	}
	t.Logf("received %d lines, told of %d missed", len(res.seq)+res.other, res.missed)
}

// TestConsoleStalledFollowerDoesNotSlowGuest compares how long a guest
// takes to print 200 000 lines with no follower and with a follower that
// never reads: the guest must not wait for it.
func TestConsoleStalledFollowerDoesNotSlowGuest(t *testing.T) {
	const lines = 200000
	c, sha, _ := consoleEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(name string, stalled bool) time.Duration {
		t.Helper()
		if _, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: name, ImageSha256: sha, MemoryMb: 16,
			Args: []string{"delay=300ms", fmt.Sprintf("lines=%d", lines)}}); err != nil {
			t.Fatal(err)
		}
		if stalled {
			sctx, stop := context.WithCancel(ctx)
			defer stop()
			// The stream is opened and never read.
			if _, err := c.API.Console(sctx, &daemonv1.ConsoleRequest{Name: name, Follow: true, Batch: true}); err != nil {
				t.Fatal(err)
			}
		}
		for {
			res, err := c.API.Info(ctx, &daemonv1.InfoRequest{Name: name})
			if err != nil {
				t.Fatal(err)
			}
			if vm := res.GetVms()[0]; vm.GetState() == "exited" {
				return time.Duration(vm.GetExitedAtNs()-vm.GetStartedAtNs()) - 300*time.Millisecond
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Alternate, so that other load on the host hits both alike, and
	// compare the best of each.
	var free, stalled time.Duration
	for i := 0; i < 3; i++ {
		if d := run(fmt.Sprintf("free%d", i), false); free == 0 || d < free {
			free = d
		}
		if d := run(fmt.Sprintf("stalled%d", i), true); stalled == 0 || d < stalled {
			stalled = d
		}
	}
	t.Logf("guest printed %d lines in %v without a follower, %v with a stalled one", lines, free, stalled)
	if stalled > free*3/2+100*time.Millisecond {
		t.Fatalf("a stalled follower slowed the guest: %v against %v", stalled, free)
	}
}
