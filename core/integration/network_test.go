package integration

import (
	"encoding/json"
	"fmt"
	"os/exec"
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
	tap := network.TapName("web", "service0")
	mac := network.DeriveMAC("web", "service0")
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
	if !strings.Contains(e.links(), network.TapName("flaky", "service0")) {
		t.Fatal("tap of a restarting VM was removed")
	}
	e.mustPetrel("destroy", "flaky")
	e.mustPetrel("create", "once", img, "--net", "service0:br0", "--arg", "exit=0")
	waitFor(t, "exit", 10*time.Second, func() bool { return e.info("once").State == "exited" })
	waitFor(t, "tap of exited VM removed", 5*time.Second, func() bool {
		return !strings.Contains(e.links(), network.TapName("once", "service0"))
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
	orphan := network.TapName("ghost", "service0")
	e.sh("ip", "-n", e.netns, "tuntap", "add", "dev", orphan, "mode", "tap")
	e.sh("ip", "-n", e.netns, "link", "set", orphan, "alias", mustAlias(t, "ghost", "service0"))
	e.start()
	waitFor(t, "orphan tap removed", 10*time.Second, func() bool { return !strings.Contains(e.links(), orphan) })
	e.mustPetrel("destroy", "web")
	if strings.Contains(e.links(), "master br0") {
		t.Fatalf("taps left:\n%s", e.links())
	}
}

func mustAlias(t *testing.T, vm, netName string) string {
	a, err := network.Tag{VM: vm, Net: netName}.Alias()
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
