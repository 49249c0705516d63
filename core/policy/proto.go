package policy

import (
	"math"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// ToProto returns p as the daemon API's Policy message: petreld's
// answers, `petrel policy add`'s request and the policy a fleet node
// reports all go through it, so that the message holds every field of
// Policy and no caller converts field by field. The optional allowances
// stay absent when p leaves them unstated. The message carries VMs and
// CPU ids as int32; every valid policy fits, and a value that does not
// is saturated, so that an invalid policy stays invalid on the other
// side instead of wrapping round to a small, valid number.
func ToProto(p Policy) *daemonv1.Policy {
	m := &daemonv1.Policy{Vms: int32Of(p.VMs), MemoryMb: int64(p.MemoryMB), Bridges: p.Bridges}
	for _, c := range p.CPUs {
		m.Cpus = append(m.Cpus, int32Of(c))
	}
	if p.BlockMB != nil {
		b := int64(*p.BlockMB)
		m.BlockMb = &b
	}
	if p.ImagesMB != nil {
		n := int64(*p.ImagesMB)
		m.ImagesMb = &n
	}
	return m
}

// FromProto returns the Policy a daemon API message describes, the
// inverse of ToProto: petreld reads `policy add` requests with it, and
// clients read listings with it. A nil message is the zero policy, as
// the message's getters treat it. The result is not validated; the tree
// validates what it is given.
func FromProto(m *daemonv1.Policy) Policy {
	p := Policy{VMs: int(m.GetVms()), MemoryMB: int(m.GetMemoryMb()), Bridges: m.GetBridges()}
	for _, c := range m.GetCpus() {
		p.CPUs = append(p.CPUs, int(c))
	}
	if m != nil && m.BlockMb != nil {
		b := int(m.GetBlockMb())
		p.BlockMB = &b
	}
	if m != nil && m.ImagesMb != nil {
		n := int(m.GetImagesMb())
		p.ImagesMB = &n
	}
	return p
}

// int32Of converts v to int32, saturating at its bounds.
func int32Of(v int) int32 {
	return int32(max(math.MinInt32, min(v, math.MaxInt32)))
}
