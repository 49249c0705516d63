//go:build !linux

package backend

import "golang.org/x/sys/unix"

// maxMemoryMB is the host's RAM, the most a guest can sensibly get.
func maxMemoryMB() uint32 {
	b, err := unix.SysctlUint64("hw.physmem")
	if err != nil {
		return 1 << 20
	}
	mb := b >> 20
	if mb > 1<<31 {
		mb = 1 << 31
	}
	return uint32(mb)
}
