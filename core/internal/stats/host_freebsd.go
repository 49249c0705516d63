package stats

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// hostSample reads the host's memory, load and CPU count from sysctl(3).
// Figures it cannot read stay zero, so one missing source does not cost
// the others. Available memory counts free and inactive pages, the pages
// FreeBSD can hand out without swapping.
func hostSample() *pluginv1.HostSample {
	h := &pluginv1.HostSample{}
	if mem, err := unix.SysctlUint64("hw.physmem"); err == nil {
		h.MemoryTotalBytes = mem
	}
	if n, err := unix.SysctlUint32("hw.ncpu"); err == nil {
		h.Cpus = n
	}
	h.Load1 = load1()
	free, errFree := unix.SysctlUint32("vm.stats.vm.v_free_count")
	inactive, errInactive := unix.SysctlUint32("vm.stats.vm.v_inactive_count")
	if errFree == nil && errInactive == nil {
		h.MemoryAvailableBytes = (uint64(free) + uint64(inactive)) * uint64(unix.Getpagesize())
	}
	return h
}

// load1 returns the one-minute load average from vm.loadavg, a struct
// loadavg: three fixed-point uint32 averages, then the long scale factor
// (after padding on 64-bit platforms). It returns 0 if the value is
// unreadable or malformed.
func load1() float64 {
	b, err := unix.SysctlRaw("vm.loadavg")
	if err != nil {
		return 0
	}
	var scale uint64
	switch len(b) {
	case 16:
		scale = uint64(binary.NativeEndian.Uint32(b[12:]))
	case 24:
		scale = binary.NativeEndian.Uint64(b[16:])
	default:
		return 0
	}
	if scale == 0 {
		return 0
	}
	return float64(binary.NativeEndian.Uint32(b[0:4])) / float64(scale)
}
