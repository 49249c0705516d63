//go:build freebsd && (amd64 || arm64 || riscv64)

package shim

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// wait6 calls wait6(2) without rusage or siginfo. On 64-bit platforms
// id_t fits one argument register.
func wait6(idtype, id, options int) unix.Errno {
	var status int32
	_, _, errno := unix.Syscall6(unix.SYS_WAIT6, uintptr(idtype), uintptr(id), uintptr(unsafe.Pointer(&status)), uintptr(options), 0, 0)
	return errno
}
