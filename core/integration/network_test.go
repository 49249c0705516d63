package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/network"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

var netImage = []solo5.Device{{Name: "service0", Type: solo5.DeviceNet}}

// TestNetworkTaps: petreld in a throwaway namespace gives VMs taps on a
// bridge, passes them to the tender, and removes them on destroy, on
// exit, after failures, and after petreld was killed.
func TestNetworkTaps(t *testing.T) {
	e := newEnv(t)
	e.inNetns()
	e.start()
	img := e.image("net.hvt", solo5.TargetHVT, netImage...)

	bridges := e.mustPetrel("bridges", "--json")
	if !strings.Contains(bridges, `"br0"`) || !strings.Contains(bridges, `"mtu": 1400`) {
		t.Fatalf("bridges: %s", bridges)
	}

	e.mustPetrel("create", "web", img, "--net", "service0:br0", "--arg", "run=forever")
	vm := e.info("web")
	id := e.instanceID()
	tap := network.TapNameFor(id, "web", "service0")
	mac := network.DeriveMACFor(id, "web", "service0")
	links := e.links()
	if !strings.Contains(links, tap+":") || !strings.Contains(links, "master br0") || !strings.Contains(links, "mtu 1400") {
		t.Fatalf("tap %s not on br0 with MTU 1400:\n%s", tap, links)
	}
	if !strings.Contains(strings.Join(vm.Command, " "), "--net:service0="+tap) || !strings.Contains(strings.Join(vm.Command, " "), "--net-mac:service0="+mac) {
		t.Fatalf("tender command line %q lacks the tap or MAC", vm.Command)
	}
	out := e.mustPetrel("info", "web")
	if !strings.Contains(out, tap) || !strings.Contains(out, mac) || !strings.Contains(out, "br0") {
		t.Fatalf("info does not show the interface:\n%s", out)
	}

	// Refused before anything is created.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "x", img, "--net", "service0:nobridge"}, "nobridge"},
		{[]string{"create", "x", img, "--net", "other:br0"}, "other"},
		{[]string{"create", "x", img, "--net", "service0:br0", "--net", "service0:br0"}, "twice"},
		{[]string{"create", "x", img, "--net", "service0:br0@" + mac}, "already used"},
		{[]string{"create", "x", img, "--net", "service0:br0@01:00:5e:00:00:01"}, "multicast"},
		{[]string{"create", "x", img}, "service0"},
	} {
		r := e.petrel(c.args...)
		if r.code != 6 || !strings.Contains(r.err, c.want) {
			t.Errorf("petrel %v: exit %d %q, want 6 mentioning %q", c.args, r.code, r.err, c.want)
		}
	}
	if strings.Count(e.links(), "master br0") != 1 {
		t.Fatalf("refused creates left taps:\n%s", e.links())
	}

	// Exit without restart removes the tap; restart on failure keeps it
	// and the MAC.
	e.mustPetrel("create", "flaky", img, "--net", "service0:br0", "--arg", "exit=3", "--arg", "run=200ms", "--restart-on-fail")
	waitFor(t, "a restart", 15*time.Second, func() bool { return e.info("flaky").Restarts >= 1 })
	if !strings.Contains(e.links(), network.TapNameFor(id, "flaky", "service0")) {
		t.Fatal("tap of a restarting VM was removed")
	}
	e.mustPetrel("destroy", "flaky")
	e.mustPetrel("create", "once", img, "--net", "service0:br0", "--arg", "exit=0")
	waitFor(t, "exit", 10*time.Second, func() bool { return e.info("once").State == "exited" })
	waitFor(t, "tap of exited VM removed", 5*time.Second, func() bool {
		return !strings.Contains(e.links(), network.TapNameFor(id, "once", "service0"))
	})
	e.mustPetrel("destroy", "once")

	// kill -9 petreld, the VM exits meanwhile, petreld comes back: the tap
	// goes.
	e.kill9()
	syscall.Kill(vm.Pid, syscall.SIGKILL)
	waitFor(t, "tender gone", 5*time.Second, func() bool { return !alive(vm.Pid) })
	e.start()
	waitFor(t, "tap of the VM that died while petreld was down", 10*time.Second, func() bool {
		return !strings.Contains(e.links(), tap)
	})
	// An orphan tap (as left by a daemon killed mid-create) is removed at
	// start-up.
	e.stop()
	orphan := network.TapNameFor(id, "ghost", "service0")
	e.sh("ip", "-n", e.netns, "tuntap", "add", "dev", orphan, "mode", "tap")
	e.sh("ip", "-n", e.netns, "link", "set", orphan, "alias", mustAlias(t, "ghost", "service0", id))
	e.start()
	waitFor(t, "orphan tap removed", 10*time.Second, func() bool { return !strings.Contains(e.links(), orphan) })
	e.mustPetrel("destroy", "web")
	if strings.Contains(e.links(), "master br0") {
		t.Fatalf("taps left:\n%s", e.links())
	}
}

func mustAlias(t *testing.T, vm, netName, owner string) string {
	a, err := network.Tag{VM: vm, Net: netName, Owner: owner}.Alias()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestNetworkChurn: many create/destroy cycles with a tap leave no tap.
func TestNetworkChurn(t *testing.T) {
	e := newEnv(t)
	e.inNetns()
	e.start()
	img := e.image("net.hvt", solo5.TargetHVT, netImage...)
	cycles := 500
	if testing.Short() {
		cycles = 50
	}
	start := time.Now()
	c := e.client()
	for i := 0; i < cycles; i++ {
		n := fmt.Sprintf("churn%d", i%7)
		if err := c.create(n, img, "service0:br0"); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if err := c.destroy(n); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	t.Logf("%d create/destroy cycles with a tap in %v (%.1f ms each)", cycles, time.Since(start), float64(time.Since(start).Milliseconds())/float64(cycles))
	out, _ := exec.Command("ip", "-n", e.netns, "-j", "link", "show").Output()
	var links []map[string]any
	json.Unmarshal(out, &links)
	for _, l := range links {
		if name, _ := l["ifname"].(string); strings.HasPrefix(name, network.TapPrefix) {
			t.Errorf("tap left: %s", name)
		}
	}
}

// TestNetworkTwoInstances: two petreld instances, each with its own data
// and run directories, in one network namespace: the second's start-up
// (and restart) leaves the first's taps and VMs alone, each derives tap
// names and MACs of its own (so both can run a VM of the same name on the
// same bridge), neither removes the other's taps on destroy, each still
// removes its own orphans, and a third petreld cannot take the first's
// run directory, which holds its running VMs.
func TestNetworkTwoInstances(t *testing.T) {
	a := newEnv(t)
	a.inNetns()
	a.start()
	img := a.image("net.hvt", solo5.TargetHVT, netImage...)
	a.mustPetrel("create", "web", img, "--net", "service0:br0", "--arg", "run=forever")
	web := a.info("web")
	if len(web.Nets) != 1 {
		t.Fatalf("web: %+v", web)
	}
	tapA := web.Nets[0].Tap
	onBridge := func(tap string) bool {
		for _, l := range strings.Split(a.links(), "\n") {
			if strings.Contains(l, ": "+tap+":") {
				return strings.Contains(l, "master br0")
			}
		}
		return false
	}
	if !onBridge(tapA) {
		t.Fatalf("tap %s of the first instance not on br0:\n%s", tapA, a.links())
	}

	b := newEnv(t)
	b.netns = a.netns
	b.start()
	intact := func(when string) {
		t.Helper()
		if !onBridge(tapA) {
			t.Fatalf("%s: the first instance's tap %s is gone:\n%s", when, tapA, a.links())
		}
		if vm := a.info("web"); vm.State != "running" || vm.Pid != web.Pid || !alive(web.Pid) {
			t.Fatalf("%s: the first instance's VM: %+v", when, vm)
		}
	}
	intact("after the second instance started")

	b.mustPetrel("create", "web", img, "--net", "service0:br0", "--arg", "run=forever")
	tapB := b.info("web").Nets[0].Tap
	if tapB == tapA || !onBridge(tapB) || a.instanceID() == b.instanceID() {
		t.Fatalf("the second instance's tap %s (the first's is %s):\n%s", tapB, tapA, a.links())
	}
	b.kill9()
	b.start()
	intact("after the second instance restarted")
	if !onBridge(tapB) {
		t.Fatalf("the second instance lost its own tap %s on restart", tapB)
	}
	b.mustPetrel("destroy", "web")
	intact("after the second instance destroyed its VM of the same name")
	if onBridge(tapB) {
		t.Fatalf("the second instance's tap %s outlived its VM", tapB)
	}

	// An orphan of the first instance (tagged with its id) is still its
	// to remove; the second's start left it alone.
	orphan := network.TapNameFor(a.instanceID(), "ghost", "service0")
	a.sh("ip", "-n", a.netns, "tuntap", "add", "dev", orphan, "mode", "tap")
	a.sh("ip", "-n", a.netns, "link", "set", orphan, "alias", mustAlias(t, "ghost", "service0", a.instanceID()))
	b.kill9()
	b.start()
	if !strings.Contains(a.links(), orphan) {
		t.Fatal("the second instance removed the first's orphan")
	}
	a.kill9()
	a.start()
	waitFor(t, "the first instance's orphan removed", 10*time.Second, func() bool { return !strings.Contains(a.links(), orphan) })
	intact("after the first instance restarted")

	// A third petreld with its own data directory but the first's run
	// directory refuses to start, and touches nothing.
	c := newEnv(t)
	c.netns = a.netns
	cfg, err := os.ReadFile(c.config)
	if err != nil {
		t.Fatal(err)
	}
	shared := strings.Replace(string(cfg), fmt.Sprintf("run_dir = %q", c.runDir), fmt.Sprintf("run_dir = %q", a.runDir), 1)
	if err := os.WriteFile(c.config, []byte(shared), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, running := range []bool{true, false} {
		if !running {
			a.kill9() // the VM runs on; its run directory is still the first instance's
		}
		out, err := exec.Command("ip", "netns", "exec", a.netns, filepath.Join(binDir, "petreld"), "--config", c.config).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "run directory") || !strings.Contains(string(out), "--run-dir") {
			t.Fatalf("petreld on another instance's run directory (its petreld running: %v): %v\n%s", running, err, out)
		}
	}
	a.start()
	intact("after a third petreld tried the first's run directory")
	a.mustPetrel("destroy", "web")
	if onBridge(tapA) {
		t.Fatalf("tap %s outlived its VM", tapA)
	}
}
