package main

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// hostChecks are the checks of this host's devices and network: KVM,
// /dev/net/tun and bridges.
func hostChecks(env hostEnv) []checkResult {
	return []checkResult{checkKVM(env), checkTun(env), checkBridges(env)}
}

// kvmGetAPIVersion is the KVM_GET_API_VERSION ioctl, _IO(0xAE, 0x00).
const kvmGetAPIVersion = 0xAE00

// kvmAPIVersion is the only KVM API version Linux has ever reported.
const kvmAPIVersion = 12

// checkKVM opens /dev/kvm read-write and asks for its API version, as a
// tender would.
func checkKVM(env hostEnv) checkResult {
	path := filepath.Join(env.devDir, "kvm")
	flavour := ""
	if _, err := os.Stat(filepath.Join(env.sysDir, "module", "kvm_pvm")); err == nil {
		flavour = " (kvm_pvm: KVM on PVM, nested without hardware virtualization)"
	}
	fi, err := os.Stat(path)
	if err != nil {
		return warn("kvm", "%s is missing: the hvt backend cannot run VMs here, spt runs Solo5 unikernels without KVM and qemu runs guests under TCG (slow); for hvt, enable virtualization (VT-x/AMD-V) in the firmware, or nested virtualization in the hypervisor running this host, then load the module (modprobe kvm_intel or kvm_amd)", path)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return fail("kvm", "%s is not a character device: remove it and load the KVM module (modprobe kvm_intel or kvm_amd)", path)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			if !env.root {
				return warn("kvm", "%s exists but this user cannot open it read-write (petreld runs as root and can; to run tenders by hand, join the group that owns %s)%s", path, path, flavour)
			}
			return fail("kvm", "root cannot open %s read-write (%v): a device cgroup or security policy forbids it (DeviceAllow=/dev/kvm rw in petreld.service)", path, err)
		}
		return fail("kvm", "open %s: %v: check that the KVM module is loaded (lsmod | grep kvm)", path, err)
	}
	defer unix.Close(fd)
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil {
		return fail("kvm", "%s does not answer KVM_GET_API_VERSION (%v): it is not a KVM device", path, err)
	}
	if v != kvmAPIVersion {
		return fail("kvm", "%s reports KVM API version %d, tenders need %d", path, v, kvmAPIVersion)
	}
	return ok("kvm", "%s usable (KVM API %d)%s", path, v, flavour)
}

// checkTun checks /dev/net/tun, which taps for VM network devices need.
func checkTun(env hostEnv) checkResult {
	path := filepath.Join(env.devDir, "net", "tun")
	fi, err := os.Stat(path)
	if err != nil {
		return fail("tun", "%s is missing: load the tun module (modprobe tun); without it VMs cannot have network devices", path)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return fail("tun", "%s is not a character device: remove it and load the tun module (modprobe tun)", path)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if !env.root && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) {
			return warn("tun", "%s exists but this user cannot open it (petreld runs as root and can)", path)
		}
		return fail("tun", "open %s: %v: VMs cannot have network devices (DeviceAllow=/dev/net/tun rw in petreld.service)", path, err)
	}
	unix.Close(fd)
	return ok("tun", "%s usable", path)
}

// checkBridges lists the host's bridges: VM network devices are taps on
// existing bridges, which Petrel never creates.
func checkBridges(env hostEnv) checkResult {
	dirs, _ := filepath.Glob(filepath.Join(env.sysDir, "class", "net", "*", "bridge"))
	var names []string
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			names = append(names, filepath.Base(filepath.Dir(d)))
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return warn("bridges", "no bridges: VMs without network devices run fine; for networked VMs create one, e.g. ip link add br0 type bridge && ip link set br0 up (and make it permanent in /etc/network/interfaces or systemd-networkd)")
	}
	return ok("bridges", "%s (petrel create NAME IMAGE --net DEVICE:BRIDGE)", strings.Join(names, ", "))
}
