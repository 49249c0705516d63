package shim

import "golang.org/x/sys/unix"

// pPID is FreeBSD's P_PID idtype_t: wait6 selects a single process id.
const pPID = 0

// waitExited blocks until process pid has exited without reaping it, so
// its pid cannot be recycled until the caller reaps it with wait4 (or
// exec.Cmd.Wait). golang.org/x/sys has no waitid for FreeBSD, so this uses
// wait6(2) with WNOWAIT, as the os package does for the same purpose.
func waitExited(pid int) error {
	err := unix.EINTR
	for err == unix.EINTR {
		err = wait6(pPID, pid, unix.WEXITED|unix.WNOWAIT)
	}
	if err != 0 {
		return err
	}
	return nil
}
