package shim

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// onExit calls fn once process pid, an unreaped child of the caller, has
// exited, leaving it unreaped so that its pid stays reserved until fn (or
// a later wait) reaps it.
//
// A plugin keeps one launched shim per VM as its child, so waiting for
// each in a goroutine of its own would cost a goroutine stack (and, with
// a blocking waitid, an OS thread) per VM. Instead every child's pidfd is
// added to one epoll set, which the runtime's poller watches: one
// goroutine serves all of them, and only while there is something to
// watch. fn runs on that goroutine and must not block. Without pidfds
// (Linux before 5.3) it falls back to a goroutine per child.
func onExit(pid int, fn func()) {
	w, err := exits.get()
	if err == nil {
		err = w.add(pid, fn)
	}
	if err != nil {
		go func() {
			_ = waitExited(pid)
			fn()
		}()
	}
}

// exitWatcher is the shared watcher behind onExit.
type exitWatcher struct {
	ep *os.File // the epoll set, in the runtime's poller

	mu      sync.Mutex
	watches map[int32]exitWatch // by pidfd
	running bool                // the serving goroutine runs
}

// exitWatch is one child waited for.
type exitWatch struct {
	pid int
	fn  func()
}

// exitWatcherOnce creates the watcher on first use.
type exitWatcherOnce struct {
	once sync.Once
	w    *exitWatcher
	err  error
}

// exits is the process's watcher.
var exits exitWatcherOnce

func (o *exitWatcherOnce) get() (*exitWatcher, error) {
	o.once.Do(func() { o.w, o.err = newExitWatcher() })
	return o.w, o.err
}

// newExitWatcher creates the epoll set and checks that the runtime's
// poller accepts it.
func newExitWatcher() (*exitWatcher, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "exit-watch-epoll")
	// Only files in the poller take deadlines: this tells whether the
	// epoll set can be waited for without holding a thread.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll set not pollable: %w", err)
	}
	return &exitWatcher{ep: f, watches: map[int32]exitWatch{}}, nil
}

// add watches pid.
func (w *exitWatcher) add(pid int, fn func()) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watches[int32(pidfd)] = exitWatch{pid: pid, fn: fn}
	rc, err := w.ep.SyscallConn()
	if err == nil {
		err = rc.Control(func(ep uintptr) {
			err = unix.EpollCtl(int(ep), unix.EPOLL_CTL_ADD, pidfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(pidfd)})
		})
	}
	if err != nil {
		delete(w.watches, int32(pidfd))
		unix.Close(pidfd)
		return fmt.Errorf("watch pidfd of %d: %w", pid, err)
	}
	if !w.running {
		w.running = true
		go w.serve()
	}
	return nil
}

// serve calls the callbacks of exited children until none is watched.
func (w *exitWatcher) serve() {
	rc, err := w.ep.SyscallConn()
	events := make([]unix.EpollEvent, 64)
	for {
		w.mu.Lock()
		if len(w.watches) == 0 || err != nil {
			w.running = false
			w.fallBackLocked()
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		n := 0
		werr := rc.Read(func(ep uintptr) bool {
			var eerr error
			n, eerr = unix.EpollWait(int(ep), events, 0)
			switch {
			case errors.Is(eerr, unix.EINTR):
				n = 0
				return false
			case eerr != nil:
				err = fmt.Errorf("epoll_wait: %w", eerr)
				return true
			}
			return n > 0
		})
		if werr != nil && err == nil {
			err = fmt.Errorf("wait for epoll set: %w", werr)
		}
		for _, ev := range events[:n] {
			if fn := w.takeIfExited(ev.Fd); fn != nil {
				fn()
			}
		}
	}
}

// takeIfExited stops watching pidfd and returns its callback if its
// process has exited, else nil.
func (w *exitWatcher) takeIfExited(pidfd int32) func() {
	var si unix.Siginfo
	err := unix.Waitid(unix.P_PIDFD, int(pidfd), &si, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
	// Linux leaves si_signo zero when WNOHANG finds no exit.
	if err == nil && si.Signo != int32(unix.SIGCHLD) {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	x, ok := w.watches[pidfd]
	if !ok {
		return nil
	}
	w.removeLocked(pidfd)
	return x.fn
}

// removeLocked stops watching pidfd and closes it.
func (w *exitWatcher) removeLocked(pidfd int32) {
	delete(w.watches, pidfd)
	if rc, err := w.ep.SyscallConn(); err == nil {
		_ = rc.Control(func(ep uintptr) { _ = unix.EpollCtl(int(ep), unix.EPOLL_CTL_DEL, int(pidfd), nil) })
	}
	unix.Close(int(pidfd))
}

// fallBackLocked hands every remaining child to a goroutine of its own,
// for when the epoll set cannot be waited for any more.
func (w *exitWatcher) fallBackLocked() {
	for pidfd, x := range w.watches {
		w.removeLocked(pidfd)
		go func() {
			_ = waitExited(x.pid)
			x.fn()
		}()
	}
}
