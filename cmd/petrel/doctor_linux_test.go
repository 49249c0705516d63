package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/kvm"
)

func TestCheckKVM(t *testing.T) {
	dev, sys := t.TempDir(), t.TempDir()
	env := hostEnv{devDir: dev, sysDir: sys, root: true}
	expect(t, checkKVM(env), statusWarn, "is missing: the hvt backend cannot run VMs here, spt runs Solo5 unikernels without KVM")

	writeFile(t, filepath.Join(dev, "kvm"), "", 0o666)
	expect(t, checkKVM(env), statusFail, "not a character device")

	// A character device that is not KVM: it opens but refuses the ioctl.
	os.Remove(filepath.Join(dev, "kvm"))
	if err := os.Symlink("/dev/null", filepath.Join(dev, "kvm")); err != nil {
		t.Fatal(err)
	}
	expect(t, checkKVM(env), statusFail, "not a KVM device")

	if err := kvm.Probe(); err != nil {
		t.Skip("the usable case needs a usable KVM:", err)
	}
	env.devDir = "/dev"
	mkdirs(t, sys, "module/kvm_pvm")
	r := checkKVM(env)
	if os.Geteuid() != 0 && r.Status == statusWarn {
		t.Skip("not root and /dev/kvm is not open to this user")
	}
	expect(t, r, statusOK, "usable (KVM API 12) (kvm_pvm")
}

func TestCheckTun(t *testing.T) {
	dev := t.TempDir()
	env := hostEnv{devDir: dev, root: true}
	expect(t, checkTun(env), statusFail, "modprobe tun")
	writeFile(t, filepath.Join(dev, "net", "tun"), "", 0o666)
	expect(t, checkTun(env), statusFail, "not a character device")
	os.Remove(filepath.Join(dev, "net", "tun"))
	if err := os.Symlink("/dev/null", filepath.Join(dev, "net", "tun")); err != nil {
		t.Fatal(err)
	}
	expect(t, checkTun(env), statusOK, "usable")
}

func TestCheckBridges(t *testing.T) {
	sys := t.TempDir()
	env := hostEnv{sysDir: sys}
	mkdirs(t, sys, "class/net/eth0", "class/net/lo")
	expect(t, checkBridges(env), statusWarn, "ip link add br0 type bridge")
	mkdirs(t, sys, "class/net/service/bridge", "class/net/br0/bridge")
	writeFile(t, filepath.Join(sys, "class/net/eth0/bridge"), "", 0o644)
	expect(t, checkBridges(env), statusOK, "br0, service (")
}
