package policy

import (
	"fmt"
	"maps"
	"math"
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
	// Images are the images held: the VMs' images and initrds and the
	// uploads waiting for a create, by SHA-256 digest, with their sizes
	// in bytes. Images are content-addressed and shared, so they are a
	// set like CPUs: one image used by two VMs counts once.
	Images map[string]int64 `json:"images,omitempty"`
}

// ImagesMB returns the size in MiB, rounded up, of the images in set,
// saturated rather than wrapped.
func ImagesMB(set map[string]int64) int64 {
	return mbCeil(imageBytes(set))
}

// imageBytes sums the sizes in set, saturating at math.MaxInt64.
func imageBytes(set map[string]int64) int64 {
	var n int64
	for _, b := range set {
		if b <= 0 {
			continue
		}
		var ok bool
		if n, ok = AddMB(n, b); !ok {
			return math.MaxInt64
		}
	}
	return n
}

// mbCeil converts bytes to MiB, rounding up: a 1-byte image takes 1 MB
// of an allowance, so no number of small images is free.
func mbCeil(b int64) int64 {
	if b <= 0 {
		return 0
	}
	return (b-1)/(1<<20) + 1
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
	if len(u.Images)+len(v.Images) > 0 {
		out.Images = make(map[string]int64, len(u.Images)+len(v.Images))
		maps.Copy(out.Images, u.Images)
		maps.Copy(out.Images, v.Images)
	}
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
	if mb := ImagesMB(u.Images); mb > int64(p.Images()) {
		probs = append(probs, fmt.Sprintf("images %d MB > %d MB", mb, p.Images()))
	}
	if extra := missing(u.CPUs, p.CPUs); len(extra) > 0 {
		probs = append(probs, fmt.Sprintf("cpus %v in use are not in %v", extra, p.CPUs))
	}
	if extra := missing(u.Bridges, p.Bridges); len(extra) > 0 {
		probs = append(probs, fmt.Sprintf("bridges %q in use are not in %q", extra, p.Bridges))
	}
	return probs
}
