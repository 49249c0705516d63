package policy

import (
	"fmt"
	"slices"

	"github.com/petrel-vmm/petrel/core/name"
)

// Usage is what one VM, or all VMs under a path, take from a policy. VMs,
// memory and block are counted and summed; CPUs and bridges are sets,
// because VMs share them and a policy only restricts which ones may be
// used.
type Usage struct {
	// VMs is the number of VMs.
	VMs int `json:"vms"`
	// CPUs lists the CPU ids the VMs are pinned to.
	CPUs []int `json:"cpus,omitempty"`
	// MemoryMB is the sum of the VMs' memory in MiB.
	MemoryMB int `json:"memory_mb"`
	// BlockMB is the sum of the sizes of the VMs' block devices in MiB.
	BlockMB int `json:"block_mb"`
	// Bridges lists the bridges the VMs are attached to.
	Bridges []string `json:"bridges,omitempty"`
}

// Add returns the usage of u and v together: counts summed (saturated
// rather than wrapped, so a huge sum still exceeds every limit), CPU and
// bridge sets merged (sorted, without duplicates).
func (u Usage) Add(v Usage) Usage {
	out := Usage{
		VMs:      addSat(u.VMs, v.VMs),
		MemoryMB: addSat(u.MemoryMB, v.MemoryMB),
		BlockMB:  addSat(u.BlockMB, v.BlockMB),
		CPUs:     append(slices.Clone(u.CPUs), v.CPUs...),
		Bridges:  append(slices.Clone(u.Bridges), v.Bridges...),
	}
	slices.Sort(out.CPUs)
	out.CPUs = slices.Compact(out.CPUs)
	slices.Sort(out.Bridges)
	out.Bridges = slices.Compact(out.Bridges)
	return out
}

// Allocation is the usage of one VM, identified by its name. The daemon
// keeps one per VM it has admitted and sums them with Sum.
type Allocation struct {
	// VM is the VM's full name.
	VM name.Path `json:"vm"`
	// Usage is what the VM takes; its VMs field is ignored by Sum, which
	// counts each allocation as one VM.
	Usage Usage `json:"usage"`
}

// Sum returns the usage of every allocation governed by the policy at
// path, that is every VM whose name has path as a proper ancestor. It is
// the reference implementation of the usageUnder callbacks Tree takes.
func Sum(path name.Path, allocs []Allocation) Usage {
	var u Usage
	for _, a := range allocs {
		if a.VM.Equal(path) || !path.IsPrefixOf(a.VM) {
			continue
		}
		one := a.Usage
		one.VMs = 1
		u = u.Add(one)
	}
	return u
}

// UsageFunc returns a usageUnder callback over a fixed set of
// allocations, for callers that have them in a slice.
func UsageFunc(allocs []Allocation) func(name.Path) Usage {
	return func(p name.Path) Usage { return Sum(p, allocs) }
}

// exceeds lists, one phrase each, the ways in which usage u does not fit
// policy p.
func exceeds(u Usage, p Policy) []string {
	var probs []string
	if u.VMs > p.VMs {
		probs = append(probs, fmt.Sprintf("%d VMs > %d", u.VMs, p.VMs))
	}
	if u.MemoryMB > p.MemoryMB {
		probs = append(probs, fmt.Sprintf("memory %d MB > %d MB", u.MemoryMB, p.MemoryMB))
	}
	if u.BlockMB > p.Block() {
		probs = append(probs, fmt.Sprintf("block %d MB > %d MB", u.BlockMB, p.Block()))
	}
	if extra := missing(u.CPUs, p.CPUs); len(extra) > 0 {
		probs = append(probs, fmt.Sprintf("cpus %v in use are not in %v", extra, p.CPUs))
	}
	if extra := missing(u.Bridges, p.Bridges); len(extra) > 0 {
		probs = append(probs, fmt.Sprintf("bridges %q in use are not in %q", extra, p.Bridges))
	}
	return probs
}
