package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// A directory's run is guarded by an exclusive flock(2) on LockFile,
// taken by the launcher before it starts the shim and held from then on
// by the shim itself, which inherits the locked file (lockFD) and keeps
// it until it exits. A lock is released by the kernel when its last
// holder dies, so the lock is free exactly when no shim runs in the
// directory and none is being launched there: this is what lets a
// launcher that crashed mid-start be followed by one that finds the run
// it started (Resume) instead of starting a second one.

// ErrBusy reports a Launch into a directory where a shim runs or is being
// launched.
var ErrBusy = errors.New("a shim runs or is being started in this directory")

// ErrNoRun reports, from Resume, that nothing runs or ran in a directory:
// no shim holds it, none answers, and no exit was recorded. A launch
// there that was cut short left nothing running, and may be made again.
var ErrNoRun = errors.New("no shim runs or ran in this directory")

// lockFD is the file descriptor on which a launcher passes the locked
// LockFile to the shim.
const lockFD = 4

// resumePoll is how often Resume looks again at a directory whose shim is
// still starting.
const resumePoll = 10 * time.Millisecond

// lockDir takes dir's lock without waiting. It fails with ErrBusy when a
// shim or a launcher holds it.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrBusy)
		}
		return nil, fmt.Errorf("lock %s: %w", filepath.Join(dir, LockFile), err)
	}
	return f, nil
}

// inheritedLock returns the locked LockFile a launcher passed on lockFD,
// made close-on-exec so that the tender does not hold it, or nil when the
// shim was started without one (by hand).
func inheritedLock() *os.File {
	var st unix.Stat_t
	if err := unix.Fstat(lockFD, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	unix.CloseOnExec(lockFD)
	return os.NewFile(lockFD, LockFile)
}

// Resume finds the run a Launch into dir started, typically by a launcher
// that died before it could report it: it waits while a shim is still
// starting there, and returns the shim and tender once the shim answers,
// or the exited tender (from the exit record) when the run is already
// over. It returns ErrNoRun when nothing runs or ran in dir, so that the
// caller may launch there afresh. The returned Process has no Done
// channel: its shim is not the caller's child.
func Resume(ctx context.Context, dir string) (*Process, error) {
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultReadyTimeout)
		defer cancel()
	}
	c := Dial(dir)
	for {
		info, err := c.Info(ctx)
		if err == nil {
			return &Process{ShimPID: info.ShimPID, TenderPID: info.TenderPID, StartedAt: info.StartedAt, Dir: dir}, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("resume the run in %s: %w", dir, ctx.Err())
		}
		if errors.Is(err, ErrShimLost) {
			lock, lerr := lockDir(dir)
			if lerr == nil {
				// Nobody holds the directory: no shim runs there, and one
				// that ran would have left its exit record before exiting.
				_ = lock.Close()
				if info, err := c.Info(ctx); err == nil {
					return &Process{ShimPID: info.ShimPID, TenderPID: info.TenderPID, StartedAt: info.StartedAt, Dir: dir}, nil
				}
				return nil, fmt.Errorf("%s: %w", dir, ErrNoRun)
			}
			if !errors.Is(lerr, ErrBusy) {
				return nil, fmt.Errorf("resume the run in %s: %w", dir, lerr)
			}
		}
		t := time.NewTimer(resumePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("resume the run in %s: %w", dir, ctx.Err())
		case <-t.C:
		}
	}
}
