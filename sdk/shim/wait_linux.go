package shim

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// waitExited blocks until process pid has exited without reaping it, so
// its pid cannot be recycled until the caller reaps it with wait4 (or
// exec.Cmd.Wait). This lets a concurrent kill, made under a lock that also
// records the exit, never hit an unrelated process.
//
// pid must be an unreaped child of the caller. The wait goes through a
// pidfd in the runtime's network poller, so a waiting goroutine parks
// without holding an OS thread: a plugin that launched a thousand shims
// would otherwise keep a thousand threads (each with its own system and
// signal stacks) blocked in waitid. Kernels without pollable pidfds
// (before Linux 5.10) fall back to a blocking waitid.
func waitExited(pid int) error {
	err := waitExitedPidfd(pid)
	if !errors.Is(err, errNoPidfd) {
		return err
	}
	var si unix.Siginfo
	err = unix.EINTR
	for err == unix.EINTR {
		err = unix.Waitid(unix.P_PID, pid, &si, unix.WEXITED|unix.WNOWAIT, nil)
	}
	return err
}

// errNoPidfd marks a kernel that cannot give a non-blocking pidfd.
var errNoPidfd = errors.New("no pollable pidfd")

// waitExitedPidfd is waitExited through a non-blocking pidfd, which
// becomes readable once the process has exited.
func waitExitedPidfd(pid int) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%w: %w", errNoPidfd, err)
		}
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	var werr error
	err = rc.Read(func(fd uintptr) bool {
		// Linux leaves si_signo zero when WNOHANG finds no exit, and sets
		// it to SIGCHLD when the process has exited.
		var si unix.Siginfo
		werr = unix.Waitid(unix.P_PIDFD, int(fd), &si, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
		if werr == unix.EINTR {
			werr = nil
			return false
		}
		return werr != nil || si.Signo == int32(unix.SIGCHLD)
	})
	if err != nil {
		// The pidfd could not be polled (the poller refused it): wait
		// the blocking way instead.
		return fmt.Errorf("%w: poll pidfd of %d: %w", errNoPidfd, pid, err)
	}
	if werr != nil {
		return fmt.Errorf("waitid %d: %w", pid, werr)
	}
	return nil
}
