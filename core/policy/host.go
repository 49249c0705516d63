package policy

import "sort"

// DefaultHostVMs is the root policy's VM count. The host has no natural
// limit on the number of VMs (memory and CPUs run out first), so the root
// allows many; owners delegate smaller numbers.
const DefaultHostVMs = 1024

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

	cpus, err := hostCPUs()
	if err != nil {
		return Policy{}, err
	}
	p.CPUs = cpus

	mem, err := hostMemoryBytes()
	if err != nil {
		return Policy{}, err
	}
	p.MemoryMB = clampMB(mem/(1<<20), MaxMemoryMB)

	free, err := freeBytes(dataDir)
	if err != nil {
		return Policy{}, err
	}
	block := clampMB(free/(1<<20), MaxBlockMB)
	p.BlockMB = &block

	bridges, err := hostBridges()
	if err != nil {
		return Policy{}, err
	}
	p.Bridges = bridges
	return p.Canonical(), nil
}

// bridgeList turns the host's bridge names into the policy's list: names
// the policy cannot hold are skipped rather than failing start-up, and the
// rest are sorted and capped at MaxBridges.
func bridgeList(names []string) []string {
	var out []string
	for _, name := range names {
		if CheckBridgeName(name) == nil {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	if len(out) > MaxBridges {
		out = out[:MaxBridges]
	}
	return out
}

// clampMB converts a size in MiB to int, capped at limit so an exotic
// filesystem cannot produce an invalid policy.
func clampMB(mb uint64, limit int) int {
	if mb > uint64(limit) {
		return limit
	}
	return int(mb)
}
