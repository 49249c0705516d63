package supervisor

import (
	"sort"

	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/policy"
)

// holdsResources reports whether a VM in state counts against policies:
// one that runs, may run (unsupervised) or will run again does; one that
// exited or failed does not.
func holdsResources(state string) bool {
	return state == StateStarting || state == StateRunning || state == StateRestarting || state == StateUnsupervised
}

// usageOf is what one VM takes from its ancestors' policies.
func usageOf(r Record) policy.Usage {
	u := policy.Usage{VMs: 1, MemoryMB: int(r.MemoryMB)}
	for _, c := range r.CPUs {
		u.CPUs = append(u.CPUs, int(c))
	}
	for _, n := range r.Nets {
		u.Bridges = append(u.Bridges, n.Bridge)
	}
	sort.Ints(u.CPUs)
	sort.Strings(u.Bridges)
	return u
}

// UsageUnder sums what the VMs under path take (running, starting or
// restarting ones, and creates being admitted), leaving out the VM named
// except.
func (s *Supervisor) UsageUnder(path name.Path, except string) policy.Usage {
	var allocs []policy.Allocation
	s.mu.Lock()
	for n, v := range s.vms {
		if n == except {
			continue
		}
		v.pubMu.Lock()
		r := v.pub
		v.pubMu.Unlock()
		if !holdsResources(r.State) {
			continue
		}
		if p, err := name.Parse(r.Name); err == nil {
			allocs = append(allocs, policy.Allocation{VM: p, Usage: usageOf(r)})
		}
	}
	for n, u := range s.reserved {
		if n == except {
			continue
		}
		if p, err := name.Parse(n); err == nil {
			allocs = append(allocs, policy.Allocation{VM: p, Usage: u})
		}
	}
	s.mu.Unlock()
	return policy.Sum(path, allocs)
}

// admit checks rec against the policy of every ancestor and reserves its
// usage until release is called (by then the VM's record counts, or the
// create failed). Checks and reservations are serialised, so concurrent
// creates cannot together exceed a policy.
func (s *Supervisor) admit(rec Record) (release func(), err error) {
	if s.opts.Policies == nil {
		return func() {}, nil
	}
	vm, err := name.ParseVM(rec.Name)
	if err != nil {
		return nil, invalid("%v", err)
	}
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	if s.opts.BeforeAdmit != nil {
		s.opts.BeforeAdmit()
	}
	want := usageOf(rec)
	if err := s.opts.Policies.CheckDeploy(vm, want, func(p name.Path) policy.Usage { return s.UsageUnder(p, rec.Name) }); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.reserved[rec.Name] = want
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.reserved, rec.Name)
		s.mu.Unlock()
	}, nil
}
