package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// Validate checks spec against the image and the host without starting
// anything.
func (b *Backend) Validate(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.ValidateResponse, error) {
	res, _, err := b.validate(ctx, spec)
	return res, err
}

// validate returns the verdict and, when the spec is acceptable, the plan
// of the QEMU command line (without its directory).
func (b *Backend) validate(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.ValidateResponse, *plan, error) {
	v, err := b.snapshot(ctx)
	if err != nil {
		return nil, nil, err
	}
	im, err := checkSpec(spec, maxMemoryMB())
	if errors.Is(err, errRefused) {
		return &pluginv1.ValidateResponse{Reason: strings.TrimPrefix(err.Error(), errRefused.Error()+": ")}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	res := &pluginv1.ValidateResponse{Ok: true, Target: im.target}
	if im.solo5 != nil {
		res.AbiVersion = im.solo5.ABIVersion
	}
	switch {
	case v.host.qemuErr != nil:
		return nil, nil, fmt.Errorf("%w: backend %s: %v", hypervisor.ErrUnavailable, Name, v.host.qemuErr)
	case v.fwErr != nil:
		return nil, nil, fmt.Errorf("%w: backend %s: %v", hypervisor.ErrUnavailable, Name, v.fwErr)
	}
	accel, warning, err := chooseAccel(v.cfg, v.host, im.target)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: backend %s: %v", hypervisor.ErrUnavailable, Name, err)
	}
	p := &plan{qemu: v.host.qemu, image: im, accel: accel, warning: warning, cpuModel: cpuModel(v.cfg, v.host, accel),
		machine: v.cfg.machine, firmware: firmwareFor(v, im.target, len(spec.GetNets())+len(spec.GetBlocks())), sandbox: v.sandbox,
		extra: v.cfg.extra, spec: spec}
	return res, p, nil
}

// firmwareFor is the -bios file for a guest. With firmware "auto", qboot
// boots guests much faster than SeaBIOS, but it assigns no PCI resources:
// Linux assigns them itself, Solo5's virtio binding expects the firmware
// to have done it, so a unikernel with devices gets SeaBIOS.
func firmwareFor(v view, target string, devices int) string {
	if v.cfg.firmware == "auto" && target == TargetVirtio && devices > 0 {
		return ""
	}
	return v.firmware
}

// checkSpec checks everything about spec that does not depend on the
// host's QEMU; refusals wrap errRefused.
func checkSpec(spec *pluginv1.VMSpec, maxMB uint32) (guestImage, error) {
	if !hypervisor.ValidID(spec.GetId()) {
		return guestImage{}, refusedf("VM id %q is not of the form [a-z0-9-]{1,64}", spec.GetId())
	}
	im, err := inspectImage(spec.GetImagePath())
	if err != nil {
		return guestImage{}, err
	}
	minMB := uint32(MinMemoryMB)
	if im.target == TargetLinux {
		minMB = LinuxMinMemoryMB
	}
	if m := spec.GetMemoryMb(); m < minMB || m > maxMB {
		if im.target == TargetLinux && m < minMB {
			return guestImage{}, refusedf("memory %d MB is too little for a Linux guest (at least %d MB: below about 80 MB the kernel triple-faults and QEMU exits as if it had powered off)", m, minMB)
		}
		return guestImage{}, refusedf("memory %d MB is outside what the qemu backend accepts (%d-%d MB)", m, minMB, maxMB)
	}
	nets, blocks, err := checkDevices(spec)
	if err != nil {
		return guestImage{}, err
	}
	switch im.target {
	case TargetVirtio:
		if spec.GetInitrdPath() != "" || spec.GetKernelCmdline() != "" {
			return guestImage{}, refusedf("image is a Solo5 virtio unikernel: it takes arguments, not an initrd or a kernel command line")
		}
		if err := solo5.ValidateDevices(im.solo5, nets, blocks); err != nil {
			return guestImage{}, refusedf("%v", err)
		}
		if err := solo5.CheckArgs(spec.GetArgs()); err != nil {
			return guestImage{}, refusedf("%v", err)
		}
	case TargetLinux:
		if p := spec.GetInitrdPath(); p != "" {
			f, err := os.Open(p)
			if err != nil {
				return guestImage{}, refusedf("initrd: %v", err)
			}
			_ = f.Close()
		}
		if strings.ContainsAny(spec.GetKernelCmdline(), "\x00\n") {
			return guestImage{}, refusedf("kernel command line contains a NUL or newline")
		}
	}
	for _, a := range spec.GetArgs() {
		if strings.ContainsAny(a, "\x00\n") {
			return guestImage{}, refusedf("argument %q contains a NUL or newline", a)
		}
	}
	return im, nil
}

// checkDevices checks device names, host interfaces, MACs, block files
// and sector sizes, and returns the net and block device names.
func checkDevices(spec *pluginv1.VMSpec) (nets, blocks []string, err error) {
	seen := map[string]bool{}
	claim := func(name string) error {
		if name == "" {
			return refusedf("a device has no name")
		}
		if seen[name] {
			return refusedf("device %q configured twice", name)
		}
		seen[name] = true
		return nil
	}
	for _, n := range spec.GetNets() {
		if err := claim(n.GetName()); err != nil {
			return nil, nil, err
		}
		if !validIfName(n.GetHostIf()) {
			return nil, nil, refusedf("net device %q: host interface %q is not a valid interface name", n.GetName(), n.GetHostIf())
		}
		if m := n.GetMac(); m != "" && !validMAC(m) {
			return nil, nil, refusedf("net device %q: MAC %q is not of the form xx:xx:xx:xx:xx:xx with a unicast first octet", n.GetName(), m)
		}
		nets = append(nets, n.GetName())
	}
	for _, bl := range spec.GetBlocks() {
		if err := claim(bl.GetName()); err != nil {
			return nil, nil, err
		}
		fi, err := os.Stat(bl.GetPath())
		if err != nil {
			return nil, nil, refusedf("block device %q: %v", bl.GetName(), err)
		}
		if fi.IsDir() {
			return nil, nil, refusedf("block device %q: %s is a directory", bl.GetName(), bl.GetPath())
		}
		if s := bl.GetSectorSize(); s != 0 && (s < 512 || s > 2<<20 || s&(s-1) != 0) {
			return nil, nil, refusedf("block device %q: sector size %d is not a power of two between 512 and 2097152", bl.GetName(), s)
		}
		blocks = append(blocks, bl.GetName())
	}
	return nets, blocks, nil
}

// validIfName reports whether s is a Linux interface name: 1 to 15 bytes,
// no slash, colon, comma or white space.
func validIfName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || c == '/' || c == ':' || c == ',' {
			return false
		}
	}
	return true
}

// validMAC reports whether s is xx:xx:xx:xx:xx:xx in hex with a unicast
// first octet.
func validMAC(s string) bool {
	if len(s) != 17 {
		return false
	}
	for i := 0; i < 17; i++ {
		c := s[i]
		if i%3 == 2 {
			if c != ':' {
				return false
			}
			continue
		}
		if !strings.ContainsRune("0123456789abcdefABCDEF", rune(c)) {
			return false
		}
	}
	first := strings.IndexByte("0123456789abcdef", strings.ToLower(s[1:2])[0])
	return first&1 == 0
}
