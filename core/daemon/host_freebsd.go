package daemon

import "golang.org/x/sys/unix"

// hostMemoryMB returns the host's physical memory (hw.physmem) in MiB for
// the daemon's status, or 0 if the sysctl fails.
func hostMemoryMB() uint32 {
	mem, err := unix.SysctlUint64("hw.physmem")
	if err != nil {
		return 0
	}
	return uint32(mem >> 20)
}
