//go:build linux

package backend

import "golang.org/x/sys/unix"

// maxMemoryMB is the host's RAM, the most a guest can sensibly get.
func maxMemoryMB() uint32 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 1 << 20
	}
	mb := uint64(si.Totalram) * uint64(si.Unit) >> 20
	if mb > 1<<31 {
		mb = 1 << 31
	}
	return uint32(mb)
}
