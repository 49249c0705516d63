package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/petrel-vmm/petrel/core/vmrecord"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// BlockDevices hands block devices to VMs, one VM at a time.
type BlockDevices interface {
	// Acquire reserves device dev for vm (again, harmlessly, if vm holds
	// it already) and returns its file and size.
	Acquire(dev, vm string) (path string, sizeMB int64, err error)
	// Release returns a device vm holds, and leaves alone one vm does
	// not hold: every path that ends a run gives its devices back, so a
	// VM's devices may be released more than once, after another VM has
	// taken them.
	Release(dev, vm string)
}

// Network gives VMs taps on host bridges.
type Network interface {
	// TapName and DeriveMAC are the deterministic names and addresses of
	// a VM's devices.
	TapName(vm, netName string) string
	DeriveMAC(vm, netName string) string
	// ParseMAC normalises a MAC given by a user.
	ParseMAC(mac string) (string, error)
	// BridgeExists reports whether bridge exists on the host.
	BridgeExists(ctx context.Context, bridge string) (bool, error)
	// Attach creates (or, if it is already there, reuses) hostIf on
	// bridge, up. When it fails it leaves no tap of its making behind:
	// the supervisor removes only the taps attached before the failing
	// one.
	Attach(ctx context.Context, vm, netName, bridge, mac, hostIf string) error
	// Detach removes hostIf; a missing one is not an error.
	Detach(ctx context.Context, hostIf string) error
	// Reconcile removes every tap not in keep and returns what it removed.
	Reconcile(ctx context.Context, keep []string) ([]string, error)
}

// attachNets creates v's taps and fills spec. On failure it removes the
// taps it made. A VM created with network devices may be started again
// by a daemon configured without a network plugin (after a reboot, a
// restart, or a restart on failure): that start is refused, as a create
// would be. Caller holds v.mu.
func (s *Supervisor) attachNets(ctx context.Context, v *vm, spec *pluginv1.VMSpec) error {
	spec.Nets = nil
	if len(v.rec.Nets) > 0 && s.opts.Network == nil {
		return invalid("VM %s has network devices, and no network plugin is configured on this host", v.rec.Name)
	}
	for i, nt := range v.rec.Nets {
		if err := s.opts.Network.Attach(ctx, v.rec.Name, nt.Name, nt.Bridge, nt.MAC, nt.HostIf); err != nil {
			for _, made := range v.rec.Nets[:i] {
				s.detachOne(made.HostIf)
			}
			return fmt.Errorf("attach %s to %s: %w", nt.HostIf, nt.Bridge, err)
		}
		spec.Nets = append(spec.Nets, &pluginv1.NetDevice{Name: nt.Name, HostIf: nt.HostIf, Mac: nt.MAC})
	}
	return nil
}

// detachOne removes one tap, logging rather than returning a failure:
// it serves paths that give devices back after the VM is down or never
// came up, where nothing would be done with the error but report it.
func (s *Supervisor) detachOne(hostIf string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.opts.Network.Detach(ctx, hostIf); err != nil {
		s.opts.Logger.Error("remove tap", "tap", hostIf, "error", err)
	}
}

// detachNets removes v's taps. Caller holds v.mu.
func (s *Supervisor) detachNets(v *vm) {
	if s.opts.Network == nil {
		return
	}
	for _, nt := range v.rec.Nets {
		s.detachOne(nt.HostIf)
	}
}

// releaseDevices gives back what a VM that no longer runs held.
func (s *Supervisor) releaseDevices(v *vm) {
	s.releaseBlocks(v)
	s.detachNets(v)
}

// acquireBlocks reserves v's block devices and fills spec. On failure it
// releases what it took. Caller holds v.mu.
func (s *Supervisor) acquireBlocks(v *vm, spec *pluginv1.VMSpec) error {
	spec.Blocks = nil
	if len(v.rec.Blocks) > 0 && s.opts.Blocks == nil {
		return invalid("this host has no block device storage")
	}
	for i, b := range v.rec.Blocks {
		path, sizeMB, err := s.opts.Blocks.Acquire(b.Device, v.rec.Name)
		if err == nil && b.SectorSize != 0 && (sizeMB<<20)%int64(b.SectorSize) != 0 {
			s.opts.Blocks.Release(b.Device, v.rec.Name)
			err = invalid("sector size %d does not divide the %d MB of %s", b.SectorSize, sizeMB, b.Device)
		}
		if err != nil {
			for _, taken := range v.rec.Blocks[:i] {
				s.opts.Blocks.Release(taken.Device, v.rec.Name)
			}
			return fmt.Errorf("block device %s: %w", b.Device, err)
		}
		spec.Blocks = append(spec.Blocks, &pluginv1.BlockDevice{Name: b.Name, Path: path, SectorSize: b.SectorSize})
	}
	return nil
}

// releaseBlocks returns v's block devices. Caller holds v.mu.
func (s *Supervisor) releaseBlocks(v *vm) {
	if s.opts.Blocks == nil {
		return
	}
	for _, b := range v.rec.Blocks {
		s.opts.Blocks.Release(b.Device, v.rec.Name)
	}
}

// reclaimBlocks takes back the block devices of a VM found running (or
// perhaps running) at start-up, which still uses them. Caller holds v.mu.
func (s *Supervisor) reclaimBlocks(v *vm) {
	if s.opts.Blocks == nil {
		return
	}
	for _, b := range v.rec.Blocks {
		if _, _, err := s.opts.Blocks.Acquire(b.Device, v.rec.Name); err != nil {
			s.opts.Logger.Warn("reclaim block device", "vm", v.rec.Name, "device", b.Device, "error", err)
		}
	}
}

// ReconcileNets removes taps that belong to no VM that runs or is about
// to (left by a daemon killed mid-create, or by VMs destroyed meanwhile).
// Recover calls it at start-up, and petreld whenever the network plugin
// comes back after a crash, which may have interrupted a create or destroy.
func (s *Supervisor) ReconcileNets(ctx context.Context) {
	if s.opts.Network == nil {
		return
	}
	s.startMu.Lock()
	defer s.startMu.Unlock()
	var keep []string
	s.mu.Lock()
	for _, v := range s.vms {
		v.pubMu.Lock()
		r := v.pub
		v.pubMu.Unlock()
		if vmrecord.Down(r.State) {
			continue
		}
		for _, nt := range r.Nets {
			keep = append(keep, nt.HostIf)
		}
	}
	s.mu.Unlock()
	removed, err := s.opts.Network.Reconcile(ctx, keep)
	if err != nil {
		s.opts.Logger.Error("reconcile taps", "error", err)
		return
	}
	if len(removed) > 0 {
		s.opts.Logger.Info("removed orphaned taps", "taps", removed)
	}
}
