package backend

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Accelerators QEMU runs guests with.
const (
	accelKVM = "kvm"
	accelTCG = "tcg"
)

// I/O ports of the isa-debug-exit device through which a guest ends QEMU
// with a status of its choice (QEMU exits with 2*value+1). Solo5's virtio
// binding writes to 0x501 in solo5_exit; for Linux guests the device sits
// at 0xf4, the port test frameworks conventionally use.
const (
	virtioDebugExit = "isa-debug-exit,iobase=0x501,iosize=2"
	linuxDebugExit  = "isa-debug-exit,iobase=0xf4,iosize=4"
)

// plan is everything needed to build one QEMU command line.
type plan struct {
	qemu     string
	dir      string
	image    guestImage
	accel    string
	warning  string // printed on the console before QEMU starts
	cpuModel string // empty for QEMU's default
	machine  string
	firmware string // -bios file, empty for QEMU's default
	sandbox  bool
	extra    []string
	spec     *pluginv1.VMSpec
}

// optEscape escapes a value for QEMU's option syntax, where a comma ends
// a value unless it is doubled.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// smp is the number of virtual CPUs: one per pinned host CPU, at least one.
func smp(spec *pluginv1.VMSpec) int {
	if n := len(spec.GetCpus()); n > 0 {
		return n
	}
	return 1
}

// defaultMAC derives a stable, locally administered unicast MAC for net
// device index i of VM id, used when the spec leaves the MAC to the
// backend (QEMU's own default would give every VM the same address).
func defaultMAC(id string, i int) string {
	h := sha256.Sum256([]byte("petrel-qemu-mac\x00" + id + "\x00" + strconv.Itoa(i)))
	h[0] = h[0]&0xfc | 0x02
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4], h[5])
}

// kernelCmdline is the command line of a Linux guest: the spec's kernel
// command line followed by its args, with the serial console added when
// the command line names no console, so that the shim captures it.
func kernelCmdline(spec *pluginv1.VMSpec) string {
	words := strings.Fields(spec.GetKernelCmdline())
	words = append(words, spec.GetArgs()...)
	hasConsole := false
	for _, w := range words {
		if strings.HasPrefix(w, "console=") {
			hasConsole = true
		}
	}
	if !hasConsole {
		words = append([]string{"console=ttyS0"}, words...)
	}
	return strings.Join(words, " ")
}

// argv returns QEMU's command line for p.
func (p plan) argv() []string {
	spec := p.spec
	a := []string{p.qemu,
		"-name", "petrel-" + spec.GetId() + ",debug-threads=on",
		"-nodefaults", "-no-user-config",
		"-machine", p.machine,
		"-accel", p.accel,
	}
	if p.firmware != "" {
		a = append(a, "-bios", p.firmware)
	}
	if p.cpuModel != "" {
		a = append(a, "-cpu", p.cpuModel)
	}
	a = append(a,
		"-m", strconv.FormatUint(uint64(spec.GetMemoryMb()), 10),
		"-smp", strconv.Itoa(smp(spec)),
		"-display", "none", "-monitor", "none", "-serial", "stdio",
		"-no-reboot",
		"-qmp", "unix:"+optEscape(filepath.Join(p.dir, QMPSocket))+",server=on,wait=off",
	)
	if p.sandbox {
		a = append(a, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
	}
	a = append(a, "-kernel", spec.GetImagePath())
	switch p.image.target {
	case TargetLinux:
		if spec.GetInitrdPath() != "" {
			a = append(a, "-initrd", spec.GetInitrdPath())
		}
		a = append(a, "-append", kernelCmdline(spec),
			"-device", linuxDebugExit,
			// A kernel panic pauses the guest (state guest-panicked),
			// which the failure monitor reports, instead of looking like
			// a clean power-off.
			"-device", "pvpanic", "-action", "panic=pause")
	default:
		if args := strings.Join(spec.GetArgs(), " "); args != "" {
			a = append(a, "-append", args)
		}
		a = append(a, "-device", virtioDebugExit)
	}
	for i, n := range spec.GetNets() {
		mac := n.GetMac()
		if mac == "" {
			mac = defaultMAC(spec.GetId(), i)
		}
		id := "net" + strconv.Itoa(i)
		a = append(a,
			"-netdev", "tap,id="+id+",ifname="+optEscape(n.GetHostIf())+",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev="+id+",mac="+mac)
	}
	for i, b := range spec.GetBlocks() {
		id := "blk" + strconv.Itoa(i)
		dev := "virtio-blk-pci,drive=" + id + ",serial=" + optEscape(blockSerial(b.GetName()))
		if s := b.GetSectorSize(); s != 0 {
			ss := strconv.FormatUint(uint64(s), 10)
			dev += ",logical_block_size=" + ss + ",physical_block_size=" + ss
		}
		a = append(a,
			"-drive", "file="+optEscape(b.GetPath())+",if=none,id="+id+",format=raw",
			"-device", dev)
	}
	return append(a, p.extra...)
}

// blockSerial is the virtio-blk serial number guests see for a block
// device: its name, cut to the 20 bytes virtio-blk allows, so that a guest
// can find its disks by name (/dev/disk/by-id/virtio-NAME on Linux).
func blockSerial(name string) string {
	if len(name) > 20 {
		return name[:20]
	}
	return name
}
