package shim

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadCount is the number of OS threads of this process.
func threadCount(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// TestWaitExitedHoldsNoThread waits for many children at once and checks
// that the waiters hold no OS thread each, that each returns once its
// child exits, and that the children are left for the caller to reap.
func TestWaitExitedHoldsNoThread(t *testing.T) {
	if fd, err := unix.PidfdOpen(os.Getpid(), unix.PIDFD_NONBLOCK); err != nil {
		t.Skipf("needs pollable pidfds (Linux 5.10 or later): %v", err)
	} else {
		unix.Close(fd)
	}
	const n = 64
	before := threadCount(t)
	cmds := startSleepers(t, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	done := make([]chan struct{}, n)
	for i, c := range cmds {
		done[i] = make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[i])
			errs[i] = waitExited(c.Process.Pid)
		}()
	}
	time.Sleep(200 * time.Millisecond)
	if during := threadCount(t); during >= before+n/2 {
		t.Fatalf("%d waiters hold threads: %d threads before, %d while waiting", n, before, during)
	}
	for i := range cmds {
		select {
		case <-done[i]:
			t.Fatalf("waiter %d returned before its child exited: %v", i, errs[i])
		default:
		}
	}
	for _, c := range cmds {
		if err := c.Process.Signal(unix.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("waiters did not return after their children exited")
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("waiter %d: %v", i, err)
		}
	}
	// The exit must still be there to reap: the pid stays reserved.
	for _, c := range cmds {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(c.Process.Pid) + "/stat")
		if err != nil {
			t.Fatalf("child %d was reaped by waitExited: %v", c.Process.Pid, err)
		}
		if f := bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:]); len(f) == 0 || string(f[0]) != "Z" {
			t.Fatalf("child %d is not a zombie after waitExited: %s", c.Process.Pid, stat)
		}
	}
}

// zombie reports whether pid has exited and is not yet reaped.
func zombie(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])
	return len(f) > 0 && string(f[0]) == "Z"
}

// TestOnExitWatchesWithoutGoroutines watches many children and checks
// that the watch costs neither a goroutine nor a thread per child, that
// each callback runs once its child has exited (and not before), and
// that the child is still unreaped when it does.
func TestOnExitWatchesWithoutGoroutines(t *testing.T) {
	if _, err := exits.get(); err != nil {
		t.Skipf("needs an epoll set in the runtime's poller: %v", err)
	}
	if fd, err := unix.PidfdOpen(os.Getpid(), 0); err != nil {
		t.Skipf("needs pidfds (Linux 5.3 or later): %v", err)
	} else {
		unix.Close(fd)
	}
	const n = 64
	threads, goroutines := threadCount(t), runtime.NumGoroutine()
	cmds := startSleepers(t, n)
	fired := make([]chan bool, n)
	for i, c := range cmds {
		fired[i] = make(chan bool, 1)
		pid := c.Process.Pid
		onExit(pid, func() { fired[i] <- zombie(pid) })
	}
	time.Sleep(200 * time.Millisecond)
	if g := runtime.NumGoroutine(); g > goroutines+4 {
		t.Errorf("watching %d children added %d goroutines", n, g-goroutines)
	}
	if th := threadCount(t); th >= threads+n/2 {
		t.Errorf("watching %d children holds threads: %d before, %d while watching", n, threads, th)
	}
	for i := range cmds {
		select {
		case <-fired[i]:
			t.Fatalf("callback %d ran before its child exited", i)
		default:
		}
	}
	// Half now, half later: the watcher keeps serving after a batch.
	for _, half := range [][]*exec.Cmd{cmds[:n/2], cmds[n/2:]} {
		for _, c := range half {
			if err := c.Process.Signal(unix.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	deadline := time.After(10 * time.Second)
	for i := range cmds {
		select {
		case wasZombie := <-fired[i]:
			if !wasZombie {
				t.Errorf("child %d was not an unreaped exited process when its callback ran", i)
			}
		case <-deadline:
			t.Fatalf("callback %d did not run after its child exited", i)
		}
	}
	// With nothing left to watch, the watcher's goroutine ends.
	waitUntil := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(waitUntil) {
		time.Sleep(10 * time.Millisecond)
	}
	exits.w.mu.Lock()
	running := exits.w.running
	exits.w.mu.Unlock()
	if running {
		t.Error("the watcher still runs with nothing to watch")
	}
}

// startSleepers starts n children that sleep for a minute, killed and
// reaped when the test ends.
func startSleepers(t *testing.T, n int) []*exec.Cmd {
	t.Helper()
	var cmds []*exec.Cmd
	t.Cleanup(func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	for i := 0; i < n; i++ {
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			t.Skipf("needs sleep(1): %v", err)
		}
		cmds = append(cmds, c)
	}
	return cmds
}
