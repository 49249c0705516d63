package shim

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// wait6 calls wait6(2) without rusage or siginfo. On 386 the 64-bit id_t
// takes two argument words, low word first.
func wait6(idtype, id, options int) unix.Errno {
	var status int32
	_, _, errno := unix.Syscall9(unix.SYS_WAIT6, uintptr(idtype), uintptr(id), 0, uintptr(unsafe.Pointer(&status)), uintptr(options), 0, 0, 0, 0)
	return errno
}
