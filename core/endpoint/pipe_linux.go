package endpoint

import (
	"os"

	"golang.org/x/sys/unix"
)

// growPipe asks for a pipe of pipeSize, which Linux allows.
func growPipe(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
}
