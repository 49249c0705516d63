package policy

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// sysClassNet is where Linux lists network interfaces; a variable so
// tests can point it at a fixture.
var sysClassNet = "/sys/class/net"

// hostCPUs lists, in ascending order, the CPUs in petreld's affinity mask
// up to MaxCPUID, so a daemon confined by a cpuset offers only those.
func hostCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("host policy: sched_getaffinity: %w", err)
	}
	var cpus []int
	for id := 0; id <= MaxCPUID; id++ {
		if set.IsSet(id) {
			cpus = append(cpus, id)
		}
	}
	return cpus, nil
}

// hostMemoryBytes returns the total RAM of the host.
func hostMemoryBytes() (uint64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("host policy: sysinfo: %w", err)
	}
	unit := uint64(si.Unit)
	if unit == 0 {
		unit = 1
	}
	return uint64(si.Totalram) * unit, nil
}

// freeBytes returns the space free to unprivileged users on the
// filesystem holding dir.
func freeBytes(dir string) (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, fmt.Errorf("host policy: statfs %s: %w", dir, err)
	}
	return fs.Bavail * uint64(fs.Bsize), nil
}

// hostBridges lists the interfaces that are bridges, recognised by the
// "bridge" directory the kernel creates for them in sysfs.
func hostBridges() ([]string, error) {
	ents, err := os.ReadDir(sysClassNet)
	if err != nil {
		return nil, fmt.Errorf("host policy: list bridges: %w", err)
	}
	var names []string
	for _, e := range ents {
		if fi, err := os.Stat(filepath.Join(sysClassNet, e.Name(), "bridge")); err == nil && fi.IsDir() {
			names = append(names, e.Name())
		}
	}
	return bridgeList(names), nil
}
