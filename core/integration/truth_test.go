package integration

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/name"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestQuickExitTimesOrdered: Petrel's hello unikernel on spt exits within
// microseconds of its start, often before petreld hears that it started;
// every run's start is still before its exit.
func TestQuickExitTimesOrdered(t *testing.T) {
	hello := guestFor(t, "hello", "spt")
	e := newBuiltinEnv(t)
	e.start()
	api := e.client().c.API
	ctx := context.Background()
	for i := range 10 {
		e.mustPetrel("create", "hello", hello, "--force")
		var vm *daemonv1.VM
		waitFor(t, "hello to exit", 30*time.Second, func() bool {
			res, err := api.Info(ctx, &daemonv1.InfoRequest{Name: "hello"})
			if err != nil || len(res.GetVms()) != 1 {
				return false
			}
			vm = res.GetVms()[0]
			return vm.GetState() == "exited"
		})
		started, exited := vm.GetStartedAtNs(), vm.GetExitedAtNs()
		if started == 0 || exited == 0 || started > exited || vm.GetCreatedAtNs() > started {
			t.Fatalf("run %d: created %d, started %d, exited %d: out of order", i, vm.GetCreatedAtNs(), started, exited)
		}
	}
}

// TestBackendDisabled: petreld restarted with a backend disabled keeps
// the VMs that exited on it as they were; a running one is unsupervised,
// still runs, is killed by destroy, and one left so is followed again
// once the backend is back.
func TestBackendDisabled(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("d.spt", solo5.TargetSPT)
	e.mustPetrel("create", "done", img, "--arg", "exit=5")
	waitFor(t, "done to exit", 10*time.Second, func() bool { return e.info("done").State == "exited" })
	e.mustPetrel("create", "up", img, "--arg", "run=forever")
	e.mustPetrel("create", "kept", img, "--arg", "run=forever")
	up, kept := e.info("up"), e.info("kept")
	e.stop()

	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	enabled := string(cfg)
	disabled := strings.Replace(enabled, `backend "spt" {`, "backend \"spt\" {\n  enabled = false", 1)
	if err := os.WriteFile(e.config, []byte(disabled), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	if vm := e.info("done"); vm.State != "exited" || vm.ExitCode == nil || *vm.ExitCode != 5 {
		t.Fatalf("an exited VM of a disabled backend: %+v", vm)
	}
	for _, n := range []string{"up", "kept"} {
		if vm := e.info(n); vm.State != "unsupervised" || !strings.Contains(vm.Message, "backend spt is not enabled") {
			t.Fatalf("%s, running when its backend was disabled: %+v", n, vm)
		}
	}
	if !alive(up.Pid) {
		t.Fatalf("the tender of up (%d) stopped with its backend disabled", up.Pid)
	}
	e.mustPetrel("destroy", "up")
	waitFor(t, "the unsupervised VM's tender to be killed", 10*time.Second, func() bool { return !alive(up.Pid) })

	if err := os.WriteFile(e.config, []byte(enabled), 0o600); err != nil {
		t.Fatal(err)
	}
	e.stop()
	e.start()
	if vm := e.info("kept"); vm.State != "running" || vm.Pid != kept.Pid || vm.Message != "" {
		t.Fatalf("an unsupervised VM whose backend is back: %+v (was %+v)", vm, kept)
	}
	if vm := e.info("done"); vm.State != "exited" || vm.ExitCode == nil || *vm.ExitCode != 5 {
		t.Fatalf("an exited VM after its backend came back: %+v", vm)
	}
}

// TestStatsTruth: statistics of a name no VM has are not found (exit 4),
// as info's are, and a destroyed VM is gone from them at once.
func TestStatsTruth(t *testing.T) {
	e := newEnv(t)
	e.start()
	if r := e.petrel("stats", "nosuch"); r.code != 4 || !strings.Contains(r.err, "no such VM") {
		t.Fatalf("stats of an unknown VM: exit %d, %q", r.code, r.err)
	}
	img := e.image("s.hvt", solo5.TargetHVT)
	e.mustPetrel("create", "web", img, "--arg", "run=forever")
	if r := e.petrel("stats", "web"); r.code != 0 || !strings.Contains(r.out, "web") {
		t.Fatalf("stats of web: exit %d:\n%s%s", r.code, r.out, r.err)
	}
	e.mustPetrel("destroy", "web")
	if out := e.mustPetrel("stats"); strings.Contains(out, "web") {
		t.Fatalf("a destroyed VM is still in the statistics:\n%s", out)
	}
	if r := e.petrel("stats", "web"); r.code != 4 {
		t.Fatalf("stats of a destroyed VM: exit %d, %q", r.code, r.err)
	}
}

// TestPolicyFollowsNewBridge: a bridge created in petreld's network
// namespace can be named by a policy at once, and appears in the root
// policy without a re-reading of the host (petreld follows netlink).
func TestPolicyFollowsNewBridge(t *testing.T) {
	e := newEnv(t)
	e.inNetns()
	e.start()
	e.sh("ip", "-n", e.netns, "link", "add", "newbr", "type", "bridge")
	if r := e.petrel("policy", "add", "team", "--vms", "1", "--mem", "64", "--bridge", "newbr"); r.code != 0 {
		t.Fatalf("policy add right after the bridge was made: exit %d: %s%s", r.code, r.out, r.err)
	}
	// The policy add re-read the host a moment ago, so the root policy
	// is not read again for a second: only the netlink watch can tell
	// it about this one sooner.
	added := time.Now()
	e.sh("ip", "-n", e.netns, "link", "add", "otherbr", "type", "bridge")
	api := e.client().c.API
	rootBridges := func() []string {
		t.Helper()
		res, err := api.PolicyList(context.Background(), &daemonv1.PolicyListRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range res.GetPolicies() {
			if p.GetPath() == name.Root.String() {
				return p.GetPolicy().GetBridges()
			}
		}
		t.Fatalf("no root policy in %v", res.GetPolicies())
		return nil
	}
	var root []string
	for time.Since(added) < 700*time.Millisecond {
		if root = rootBridges(); slices.Contains(root, "otherbr") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Contains(root, "otherbr") {
		t.Fatalf("the root policy's bridges %v lack otherbr %v after it was made", root, time.Since(added))
	}
	e.sh("ip", "-n", e.netns, "link", "del", "otherbr")
	waitFor(t, "otherbr to leave the root policy", 5*time.Second, func() bool { return !slices.Contains(rootBridges(), "otherbr") })
}
