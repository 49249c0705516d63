package daemon

import "golang.org/x/sys/unix"

// hostMemoryMB returns the host's total RAM in MiB for the daemon's
// status, or 0 if sysinfo(2) fails.
func hostMemoryMB() uint32 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return uint32(uint64(si.Totalram) * uint64(si.Unit) >> 20)
}
