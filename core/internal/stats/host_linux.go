package stats

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// hostSample reads the host's memory, load and CPU count from sysinfo(2),
// petreld's affinity mask and /proc/meminfo. Figures it cannot read stay
// zero, so one missing source does not cost the others.
func hostSample() *pluginv1.HostSample {
	h := &pluginv1.HostSample{}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err == nil {
		unit := uint64(si.Unit)
		if unit == 0 {
			unit = 1
		}
		h.MemoryTotalBytes = uint64(si.Totalram) * unit
		h.Load1 = float64(si.Loads[0]) / 65536
	}
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil {
		h.Cpus = uint32(set.Count())
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range bytes.Split(b, []byte("\n")) {
			if f := bytes.Fields(line); len(f) >= 2 && string(f[0]) == "MemAvailable:" {
				kb, _ := strconv.ParseUint(string(f[1]), 10, 64)
				h.MemoryAvailableBytes = kb << 10
			}
		}
	}
	return h
}
