package shim

import "golang.org/x/sys/unix"

// waitExited blocks until process pid has exited without reaping it, so
// its pid cannot be recycled until the caller reaps it with wait4 (or
// exec.Cmd.Wait). This lets a concurrent kill, made under a lock that also
// records the exit, never hit an unrelated process.
func waitExited(pid int) error {
	var si unix.Siginfo
	var err error = unix.EINTR
	for err == unix.EINTR {
		err = unix.Waitid(unix.P_PID, pid, &si, unix.WEXITED|unix.WNOWAIT, nil)
	}
	return err
}
