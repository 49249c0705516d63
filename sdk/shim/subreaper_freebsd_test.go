//go:build freebsd && (amd64 || arm64 || riscv64)

package shim

import "golang.org/x/sys/unix"

// procReapAcquire is FreeBSD's PROC_REAP_ACQUIRE procctl(2) command.
const procReapAcquire = 2

// becomeSubreaper makes the test process the reaper of orphans in its
// subtree, so that tests can kill and reap tenders whose shim is gone.
// golang.org/x/sys has no procctl wrapper; P_PID with id 0 names the
// calling process, and on 64-bit platforms id_t fits one register.
func becomeSubreaper() error {
	if _, _, errno := unix.Syscall6(unix.SYS_PROCCTL, pPID, 0, procReapAcquire, 0, 0, 0); errno != 0 {
		return errno
	}
	return nil
}
