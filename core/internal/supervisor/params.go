package supervisor

import (
	"context"
	"fmt"
	"strings"

	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/vmrecord"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// CreateParams is a create request after parsing.
type CreateParams struct {
	Name        string
	Backend     string
	ImageSHA256 string
	ImageName   string
	MemoryMB    uint32
	CPUs        []uint32
	Args        []string
	Restart     RestartPolicy
	Startup     int32
	Force       bool
	// Blocks attach block devices; Device is a label in the VM's path
	// (default: the manifest name).
	Blocks []BlockParam
	// Nets attach network devices to bridges.
	Nets []NetParam
	// InitrdSHA256 and KernelCmdline are for Linux guests.
	InitrdSHA256  string
	KernelCmdline string
	// ImageRef and ImageDigest record the OCI reference the image was
	// pulled by and its manifest digest (see vmrecord.Record).
	ImageRef, ImageDigest string
}

// MaxArgBytes bounds a VM's arguments joined with single spaces (with a
// Linux guest's kernel command line in front): Solo5's command line limit
// (solo5.MaxCmdline, 8192 bytes with the terminating NUL), applied to
// every backend, so that arguments no guest could take are refused as the
// caller's mistake before anything starts, rather than by the tender or,
// far larger, by the kernel when the tender is executed. A Linux kernel
// takes less on most architectures (2048 bytes on x86) and says so itself.
const MaxArgBytes = solo5.MaxCmdline - 1

// checkArgs refuses arguments that no guest's command line can carry:
// with NUL bytes, or longer than MaxArgBytes joined with spaces.
func checkArgs(args []string, kernelCmdline string) error {
	if strings.IndexByte(kernelCmdline, 0) >= 0 {
		return invalid("the kernel command line contains a NUL byte, which a command line cannot carry")
	}
	n := len(kernelCmdline)
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return invalid("argument %d contains a NUL byte, which a command line cannot carry", i+1)
		}
		if n > 0 || i > 0 {
			n++
		}
		n += len(a)
	}
	if n > MaxArgBytes {
		return invalid("the arguments take %d bytes joined with spaces; a guest's command line holds at most %d (Solo5's %d bytes with the terminating NUL)", n, MaxArgBytes, solo5.MaxCmdline)
	}
	return nil
}

// checkParams validates what can be checked without the backend.
func (s *Supervisor) checkParams(p *CreateParams) error {
	n, err := name.ParseVM(p.Name)
	if err != nil {
		return invalid("%v", err)
	}
	p.Name = n.String()
	if len(n.FileKey()) > 250 {
		return invalid("name %q is longer than 250 bytes", p.Name)
	}
	if p.Backend == "" {
		p.Backend = s.opts.DefaultBackend
	}
	if p.MemoryMB == 0 {
		p.MemoryMB = 32
	}
	if err := checkArgs(p.Args, p.KernelCmdline); err != nil {
		return err
	}
	if s.opts.HostMemoryMB > 0 && p.MemoryMB > s.opts.HostMemoryMB {
		return invalid("%d MB of memory requested, the host has %d MB", p.MemoryMB, s.opts.HostMemoryMB)
	}
	seen := map[uint32]bool{}
	for _, c := range p.CPUs {
		if int(c) >= s.opts.HostCPUs {
			return invalid("CPU %d does not exist (the host has CPUs 0-%d)", c, s.opts.HostCPUs-1)
		}
		if seen[c] {
			return invalid("CPU %d given twice", c)
		}
		seen[c] = true
	}
	for _, c := range p.Restart.ExitCodes {
		if c < 0 || c > 255 {
			return invalid("exit code %d is outside 0-255", c)
		}
	}
	if len(p.Restart.ExitCodes) > 0 {
		p.Restart.OnFailure = true
	}
	names := map[string]bool{}
	devices := map[string]bool{}
	for i, b := range p.Blocks {
		if b.Name == "" {
			return invalid("block attachment %d has no manifest device name", i+1)
		}
		if names[b.Name] {
			return invalid("block device %q attached twice", b.Name)
		}
		names[b.Name] = true
		label := b.Device
		if label == "" {
			label = b.Name
		}
		dev, err := n.Parent().Child(label)
		if err != nil {
			return invalid("block device %q: %v (give a label; it is looked up in the VM's path %s)", label, err, n.Parent())
		}
		if devices[dev.String()] {
			return invalid("block device %s attached twice", dev)
		}
		devices[dev.String()] = true
		if s := b.SectorSize; s != 0 && (s < 512 || s&(s-1) != 0) {
			return invalid("sector size %d of %q is not a power of two of at least 512", s, b.Name)
		}
		p.Blocks[i].Device = dev.String()
	}
	if len(p.Blocks) > 0 && s.opts.Blocks == nil {
		return invalid("this host has no block device storage")
	}
	if len(p.Nets) > 0 && s.opts.Network == nil {
		return invalid("no network plugin is configured on this host")
	}
	for i, nt := range p.Nets {
		if nt.Name == "" || nt.Bridge == "" {
			return invalid("network attachment %d needs NAME:BRIDGE", i+1)
		}
		if names[nt.Name] {
			return invalid("device %q configured twice", nt.Name)
		}
		names[nt.Name] = true
		if nt.MAC == "" {
			p.Nets[i].MAC = s.opts.Network.DeriveMAC(p.Name, nt.Name)
		} else {
			mac, err := s.opts.Network.ParseMAC(nt.MAC)
			if err != nil {
				return invalid("device %q: %v", nt.Name, err)
			}
			p.Nets[i].MAC = mac
		}
		p.Nets[i].HostIf = s.opts.Network.TapName(p.Name, nt.Name)
	}
	return nil
}

// checkNets verifies that the bridges exist and that no other VM uses
// the MACs. Caller holds v.mu.
func (s *Supervisor) checkNets(ctx context.Context, v *vm, nets []NetParam) error {
	if len(nets) == 0 {
		return nil
	}
	mine := map[string]bool{}
	for _, nt := range nets {
		if mine[nt.MAC] {
			return invalid("MAC %s given to two devices", nt.MAC)
		}
		mine[nt.MAC] = true
		ok, err := s.opts.Network.BridgeExists(ctx, nt.Bridge)
		if err != nil {
			return fmt.Errorf("look up bridge %s: %w", nt.Bridge, err)
		}
		if !ok {
			return invalid("bridge %s does not exist on this host (see petrel bridges)", nt.Bridge)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, other := range s.vms {
		if other == v {
			continue
		}
		other.pubMu.Lock()
		r := other.pub
		other.pubMu.Unlock()
		if vmrecord.Down(r.State) {
			continue
		}
		for _, nt := range r.Nets {
			if mine[nt.MAC] {
				return invalid("MAC %s is already used by VM %s", nt.MAC, r.Name)
			}
		}
	}
	return nil
}
