package supervisor

import (
	"fmt"
	"sort"

	"github.com/petrel-vmm/petrel/core/internal/console"
	"github.com/petrel-vmm/petrel/core/internal/stats"
	"github.com/petrel-vmm/petrel/core/name"
)

// Info returns the VM called n, or every VM under the path n ("" or ":"
// for all), sorted by name.
func (s *Supervisor) Info(n string) ([]Record, error) {
	p, err := name.Parse(n)
	if err != nil {
		return nil, invalid("%v", err)
	}
	s.mu.Lock()
	var out []Record
	for _, v := range s.vms {
		v.pubMu.Lock()
		r := v.pub
		v.pubMu.Unlock()
		if r.State == "" {
			continue // a create in progress
		}
		rp, err := name.Parse(r.Name)
		if err == nil && p.IsPrefixOf(rp) {
			out = append(out, r.Clone())
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) == 0 && !p.IsRoot() {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	return out, nil
}

// ImagesInUse lists the image (and initrd) digests some VM refers to.
func (s *Supervisor) ImagesInUse() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := map[string]bool{}
	for _, v := range s.vms {
		v.pubMu.Lock()
		if v.pub.ImageSHA256 != "" {
			in[v.pub.ImageSHA256] = true
		}
		if v.pub.InitrdSHA256 != "" {
			in[v.pub.InitrdSHA256] = true
		}
		v.pubMu.Unlock()
	}
	return in
}

// Console returns a VM's console ring.
func (s *Supervisor) Console(n string) (*console.Ring, error) {
	p, err := name.ParseVM(n)
	if err != nil {
		return nil, invalid("%v", err)
	}
	s.mu.Lock()
	v := s.vms[p.String()]
	s.mu.Unlock()
	if v == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	v.pubMu.Lock()
	defer v.pubMu.Unlock()
	if v.pub.State == "" {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	return v.ring, nil
}

// StatsVMs lists every VM for the statistics loop.
func (s *Supervisor) StatsVMs() []stats.VM {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]stats.VM, 0, len(s.vms))
	for _, v := range s.vms {
		v.pubMu.Lock()
		r := v.pub
		v.pubMu.Unlock()
		if r.State == "" {
			continue
		}
		vm := stats.VM{Name: r.Name, Backend: r.Backend, State: r.State, RunID: r.RunID, MemoryMB: r.MemoryMB,
			Restarts: r.Restarts, StartedAt: r.StartedAt}
		for _, n := range r.Nets {
			vm.Nets = append(vm.Nets, stats.Net{Name: n.Name, HostIf: n.HostIf, Bridge: n.Bridge})
		}
		out = append(out, vm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
