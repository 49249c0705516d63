package backend

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/plugins/qemu/testguest"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// Addresses inside the network test's private namespace.
const (
	netHost  = "10.213.7.1"
	netGuest = "10.213.7.2"
)

// netns creates a network namespace holding tap0, addressed netHost/24
// and up, and returns its name; it is removed when the test ends.
func netns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the network test needs root for a network namespace and a tap")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the network test needs the ip command (install iproute2)")
	}
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("the network test needs ping (install iputils-ping)")
	}
	ns := fmt.Sprintf("petrel-qemu-test-%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ip("-n", ns, "tuntap", "add", "tap0", "mode", "tap")
	ip("-n", ns, "addr", "add", netHost+"/24", "dev", "tap0")
	ip("-n", ns, "link", "set", "tap0", "up")
	return ns
}

// TestLinuxNetworkPing attaches the guest to a tap inside a private
// network namespace (the shim, and so QEMU, run in that namespace): the
// guest configures its address from the command line and answers ping
// from the namespace with the MAC the spec gave it.
func TestLinuxNetworkPing(t *testing.T) {
	t.Parallel()
	needLinux(t)
	ns := netns(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(t.TempDir(), "shim-in-netns")
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s env %s=1 %q \"$@\"\n", ns, sdktest.EnvRunShim, exe)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	hv, _ := served(t, runDir(t), map[string]string{SettingShim: wrapper})
	const mac = "02:00:5e:10:20:30"
	spec := linuxSpec(testguest.ParamIP + "=" + netGuest + "/24")
	spec.Nets = []*pluginv1.NetDevice{{Name: "service", HostIf: "tap0", Mac: mac}}
	if _, err := hv.Start(context.Background(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	destroyLater(t, hv, spec.GetId())
	awaitLine(t, hv, spec.GetId(), testguest.LinuxNetUp, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-w", "20", netGuest).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from the namespace: %v\n%s", netGuest, err, out)
	}
	neigh, err := exec.Command("ip", "-n", ns, "neigh", "show", netGuest).CombinedOutput()
	if err != nil || !strings.Contains(string(neigh), mac) {
		t.Fatalf("neighbour entry of the guest %q (%v); want MAC %s", neigh, err, mac)
	}
	t.Logf("%s", lastLine(string(out)))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
