package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// DefaultHostVMs is the root policy's VM count. The host has no natural
// limit on the number of VMs (memory and CPUs run out first), so the root
// allows many; owners delegate smaller numbers.
const DefaultHostVMs = 1024

// sysClassNet is where Linux lists network interfaces; a variable so
// tests can point it at a fixture.
var sysClassNet = "/sys/class/net"

// HostPolicy discovers the root policy from the host: the CPUs petreld
// may run on (its affinity mask, so a daemon confined by a cpuset offers
// only those), total memory, the existing bridges, DefaultHostVMs VMs, and
// as block allowance the space free to unprivileged users on the
// filesystem of dataDir, where block devices are created. Space already
// taken by existing block devices is not free any more, so the daemon
// adds their sizes to BlockMB.
func HostPolicy(dataDir string) (Policy, error) {
	var p Policy
	p.VMs = DefaultHostVMs

	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return Policy{}, fmt.Errorf("host policy: sched_getaffinity: %w", err)
	}
	for id := 0; id <= MaxCPUID; id++ {
		if set.IsSet(id) {
			p.CPUs = append(p.CPUs, id)
		}
	}

	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return Policy{}, fmt.Errorf("host policy: sysinfo: %w", err)
	}
	unit := uint64(si.Unit)
	if unit == 0 {
		unit = 1
	}
	p.MemoryMB = clampMB(uint64(si.Totalram)*unit/(1<<20), MaxMemoryMB)

	var fs unix.Statfs_t
	if err := unix.Statfs(dataDir, &fs); err != nil {
		return Policy{}, fmt.Errorf("host policy: statfs %s: %w", dataDir, err)
	}
	block := clampMB(fs.Bavail*uint64(fs.Bsize)/(1<<20), MaxBlockMB)
	p.BlockMB = &block

	bridges, err := hostBridges()
	if err != nil {
		return Policy{}, err
	}
	p.Bridges = bridges
	return p.Canonical(), nil
}

// hostBridges lists the interfaces that are bridges, recognised by the
// "bridge" directory the kernel creates for them in sysfs. Names the
// policy cannot hold are skipped rather than failing start-up.
func hostBridges() ([]string, error) {
	ents, err := os.ReadDir(sysClassNet)
	if err != nil {
		return nil, fmt.Errorf("host policy: list bridges: %w", err)
	}
	var out []string
	for _, e := range ents {
		if CheckBridgeName(e.Name()) != nil {
			continue
		}
		if fi, err := os.Stat(filepath.Join(sysClassNet, e.Name(), "bridge")); err == nil && fi.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	if len(out) > MaxBridges {
		out = out[:MaxBridges]
	}
	return out, nil
}

// clampMB converts a size in MiB to int, capped at limit so an exotic
// filesystem cannot produce an invalid policy.
func clampMB(mb uint64, limit int) int {
	if mb > uint64(limit) {
		return limit
	}
	return int(mb)
}
