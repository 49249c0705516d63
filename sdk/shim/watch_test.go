package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// followed collects what a Watcher delivers for one key.
type followed struct {
	mu      sync.Mutex
	lines   []Line
	dropped uint64
	ended   chan error
}

func newFollowed() *followed { return &followed{ended: make(chan error, 2)} }

func (f *followed) fn(b Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines = append(f.lines, b.Lines...)
	f.dropped += b.Dropped
	return nil
}

func (f *followed) end(err error) { f.ended <- err }

func (f *followed) got() []Line {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Line(nil), f.lines...)
}

// wait returns the error the follow ended with.
func (f *followed) wait(t *testing.T, what string) error {
	t.Helper()
	select {
	case err := <-f.ended:
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: follow did not end; lines %q", what, texts(f.got()))
		return nil
	}
}

// TestWatcherFollowsMany follows three shims with one Watcher, each from
// its first line to the tender's exit, with a pause between lines so
// that lines come both with the request's history and live.
func TestWatcherFollowsMany(t *testing.T) {
	w := NewWatcher()
	defer w.Close()
	if runtime.GOOS == "linux" && w.loop == nil {
		t.Fatal("no epoll loop on Linux")
	}
	var fs []*followed
	for i := 0; i < 3; i++ {
		p := launch(t, testConfig(t, "print:3", "sleep:300ms", "print:2", "exit:0"))
		waitLines(t, Dial(p.Dir), 1)
		f := newFollowed()
		fs = append(fs, f)
		w.Follow(fmt.Sprint(i), p.Dir, time.Time{}, f.fn, f.end)
	}
	for i, f := range fs {
		if err := f.wait(t, fmt.Sprint(i)); err != nil {
			t.Errorf("follow %d ended with %v", i, err)
		}
		wantTexts(t, fmt.Sprint("follow ", i), f.got(), "line 0", "line 1", "line 2", "line 3", "line 4")
	}
}

// TestWatcherSince follows from a time: only the lines at or after it.
func TestWatcherSince(t *testing.T) {
	p := launch(t, testConfig(t, "print:4", "exit:0"))
	waitDone(t, p)
	lines := history(t, Dial(p.Dir), time.Time{}, 0)
	w := NewWatcher()
	defer w.Close()
	f := newFollowed()
	w.Follow("a", p.Dir, lines[2].Time, f.fn, f.end)
	if err := f.wait(t, "since"); err != nil {
		t.Errorf("follow ended with %v", err)
	}
	wantTexts(t, "since line 2", f.got(), "line 2", "line 3")
}

// TestWatcherStop stops one follow and replaces another: neither tells
// its end, and the replacement delivers; with the loop, and with a
// goroutine for each follow, as where there is no loop.
func TestWatcherStop(t *testing.T) {
	for _, loop := range []bool{true, false} {
		t.Run(map[bool]string{true: "loop", false: "goroutines"}[loop], func(t *testing.T) {
			testWatcherStop(t, newWatcher(loop))
		})
	}
}

func testWatcherStop(t *testing.T, w *Watcher) {
	p := launch(t, testConfig(t, "print:1", "hang"))
	waitLines(t, Dial(p.Dir), 1)
	defer w.Close()
	stopped, replaced, again := newFollowed(), newFollowed(), newFollowed()
	w.Follow("stopped", p.Dir, time.Time{}, stopped.fn, stopped.end)
	w.Follow("replaced", p.Dir, time.Time{}, replaced.fn, replaced.end)
	w.Stop("stopped")
	w.Follow("replaced", p.Dir, time.Time{}, again.fn, again.end)
	deadline := time.Now().Add(15 * time.Second)
	for len(again.got()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	wantTexts(t, "replacement", again.got(), "line 0")
	if err := Dial(p.Dir).Kill(testCtx(t), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := again.wait(t, "replacement"); err != nil {
		t.Errorf("replacement ended with %v", err)
	}
	// Had the others still been followed, their ends would come now.
	time.Sleep(200 * time.Millisecond)
	for name, f := range map[string]*followed{"stopped": stopped, "replaced": replaced} {
		select {
		case err := <-f.ended:
			t.Errorf("%s follow told its end (%v)", name, err)
		default:
		}
	}
}

// TestWatcherShimKilled: a follow whose shim is killed ends with
// ErrShimLost, as ConsoleBatches does, after the lines it had.
func TestWatcherShimKilled(t *testing.T) {
	p := launch(t, testConfig(t, "print:2", "hang"))
	t.Cleanup(func() { reapOrphan(p.TenderPID) })
	waitLines(t, Dial(p.Dir), 2)
	w := NewWatcher()
	defer w.Close()
	f := newFollowed()
	w.Follow("a", p.Dir, time.Time{}, f.fn, f.end)
	deadline := time.Now().Add(15 * time.Second)
	for len(f.got()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := unix.Kill(p.ShimPID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := f.wait(t, "killed shim"); !errors.Is(err, ErrShimLost) {
		t.Errorf("follow ended with %v, want ErrShimLost", err)
	}
	wantTexts(t, "killed shim", f.got(), "line 0", "line 1")
}

// TestWatcherAfterExit follows a VM whose shim is gone: its saved
// console, then the end.
func TestWatcherAfterExit(t *testing.T) {
	p := launch(t, testConfig(t, "print:3", "exit:0"))
	waitDone(t, p)
	w := NewWatcher()
	defer w.Close()
	f := newFollowed()
	w.Follow("a", p.Dir, time.Time{}, f.fn, f.end)
	if err := f.wait(t, "exited"); err != nil {
		t.Errorf("follow ended with %v", err)
	}
	wantTexts(t, "exited", f.got(), "line 0", "line 1", "line 2")
}

// TestWatchConsumeSplit feeds a watch responses cut at every few bytes,
// as reads of a socket may: each line arrives once, whole, in order.
func TestWatchConsumeSplit(t *testing.T) {
	t0 := time.Unix(1700000000, 0).UTC()
	var data []byte
	var want []string
	for i := 0; i < 5; i++ {
		lines := []Line{{Time: t0.Add(time.Duration(2*i) * time.Millisecond), Text: fmt.Sprintf("a%d", i)},
			{Time: t0.Add(time.Duration(2*i+1) * time.Millisecond), Text: fmt.Sprintf("b%d", i)}}
		want = append(want, lines[0].Text, lines[1].Text)
		b, err := json.Marshal(response{Batch: encodeBatch(lines, uint64(i))})
		if err != nil {
			t.Fatal(err)
		}
		data = append(append(data, b...), '\n')
	}
	end, _ := json.Marshal(response{End: true})
	data = append(append(data, end...), '\n')
	for _, step := range []int{1, 7, 64, len(data)} {
		f := newFollowed()
		wt := &watch{c: Dial(t.TempDir()), fn: f.fn}
		done, err := false, error(nil)
		for i := 0; i < len(data) && !done; i += step {
			done, err = wt.consume(data[i:min(i+step, len(data))])
		}
		if !done || err != nil {
			t.Errorf("step %d: done %v, err %v", step, done, err)
		}
		wantTexts(t, fmt.Sprint("step ", step), f.got(), want...)
		if f.dropped != 0+1+2+3+4 {
			t.Errorf("step %d: %d lines counted lost, want 10", step, f.dropped)
		}
		if wt.partial != nil {
			t.Errorf("step %d: %d bytes kept after the last response", step, len(wt.partial))
		}
	}
}
