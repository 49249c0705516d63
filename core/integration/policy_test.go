package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/plugins/qemu/testguest"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestPoliciesLocal: policies are checked at insertion and at every deploy
// against every ancestor (sibling delegations never exceed their parent),
// survive a restart, and bound block storage.
func TestPoliciesLocal(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("p.hvt", solo5.TargetHVT)

	e.mustPetrel("policy", "add", "a", "--vms", "2", "--mem", "256", "--cpu", "0", "--block", "10")
	e.mustPetrel("policy", "add", "a:x", "--vms", "2", "--mem", "256", "--cpu", "0", "--block", "10")
	e.mustPetrel("policy", "add", "a:y", "--vms", "2", "--mem", "256", "--cpu", "0", "--block", "10")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"policy", "add", "a:z", "--vms", "3", "--mem", "64"}, 10, "vms"},
		{[]string{"policy", "add", "a:z", "--vms", "1", "--mem", "64", "--cpu", "1"}, 10, "cpus"},
		{[]string{"policy", "add", "a", "--vms", "1", "--mem", "256"}, 10, ""},
		{[]string{"policy", "add", ":", "--vms", "1", "--mem", "1"}, 6, "root"},
		{[]string{"policy", "add", "Bad_Label", "--vms", "1", "--mem", "1"}, 6, "label"},
		{[]string{"policy", "remove", "nope"}, 4, ""},
	} {
		if r := e.petrel(c.args...); r.code != c.code || !strings.Contains(r.err, c.want) {
			t.Errorf("petrel %v: exit %d %q, want %d mentioning %q", c.args, r.code, r.err, c.code, c.want)
		}
	}

	e.mustPetrel("create", "a:x:one", img, "--arg", "run=forever", "--mem", "32")
	e.mustPetrel("create", "a:y:two", img, "--arg", "run=forever", "--mem", "32")
	r := e.petrel("create", "a:y:three", img, "--arg", "run=forever", "--mem", "32")
	if r.code != 10 || !strings.Contains(r.err, `policy of "a": 3 VMs would exceed the limit of 2`) {
		t.Fatalf("third VM under a: exit %d %q", r.code, r.err)
	}
	if r := e.petrel("create", "b:vm", img, "--cpu", "1", "--arg", "run=forever"); r.code != 0 {
		t.Fatalf("a VM outside any delegated policy: %d %s", r.code, r.err)
	}
	if r := e.petrel("create", "a:x:pinned", img, "--cpu", "1"); r.code != 10 {
		t.Fatalf("pinned outside the policy's CPUs: exit %d %q", r.code, r.err)
	}
	// An exited VM frees its share.
	e.mustPetrel("destroy", "a:x:one")
	e.mustPetrel("create", "a:y:three", img, "--arg", "run=forever", "--mem", "32")

	// Block quotas.
	e.mustPetrel("block", "create", "a:x:d1", "6")
	if r := e.petrel("block", "create", "a:y:d2", "6"); r.code != 10 || !strings.Contains(r.err, "block") {
		t.Fatalf("block over quota: exit %d %q", r.code, r.err)
	}
	if r := e.petrel("block", "create", "b:d", "1"); r.code != 0 {
		t.Fatalf("block outside delegated policies: %d %s", r.code, r.err)
	}

	// Policies survive petreld restarts.
	e.kill9()
	e.start()
	out := e.mustPetrel("policy", "--json")
	for _, p := range []string{`"a"`, `"a:x"`, `"a:y"`, `":"`} {
		if !strings.Contains(out, `"path": `+p) {
			t.Fatalf("policy %s lost across restart:\n%s", p, out)
		}
	}
	if r := e.petrel("create", "a:x:four", img, "--arg", "run=forever"); r.code != 10 {
		t.Fatalf("limits after restart: exit %d %q", r.code, r.err)
	}
	e.mustPetrel("policy", "remove", "a:y")
	for _, n := range []string{"a:y:two", "a:y:three", "b:vm"} {
		e.mustPetrel("destroy", n)
	}
	e.mustPetrel("block", "destroy", "a:x:d1")
	e.mustPetrel("block", "destroy", "b:d")
}

// cpusAllowed returns the Cpus_allowed_list of a process and of each of
// its threads ("0-1", "0"), keyed by /proc path.
func cpusAllowed(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	read := func(path string) {
		for _, l := range strings.Split(string(readFile(path)), "\n") {
			if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
				out[path] = strings.TrimSpace(v)
			}
		}
	}
	read(fmt.Sprintf("/proc/%d/status", pid))
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, task := range tasks {
		read(task)
	}
	if len(out) == 0 {
		t.Fatalf("no Cpus_allowed_list for pid %d", pid)
	}
	return out
}

func readFile(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// confinedTo fails the test unless pid and every thread of it may run on
// exactly the CPUs want.
func confinedTo(t *testing.T, what string, pid int, want string) {
	t.Helper()
	for path, got := range cpusAllowed(t, pid) {
		if got != want {
			t.Errorf("%s: %s has Cpus_allowed_list %s, want %s", what, path, got, want)
		}
	}
}

// TestPolicyConfinesUnpinnedVMs: a VM created without --cpu under a
// policy with CPUs runs within them, on every backend (hvt, spt, qemu):
// its tender, every thread of it, and the child process the tender
// starts. A VM under no such policy runs on every CPU, and a policy set
// while a VM runs confines it from its next start.
func TestPolicyConfinesUnpinnedVMs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs at least 2 CPUs")
	}
	all := fmt.Sprintf("0-%d", runtime.NumCPU()-1)
	e := newEnv(t)
	e.start()
	hvt := e.image("c.hvt", solo5.TargetHVT)
	spt := e.image("c.spt", solo5.TargetSPT)
	e.mustPetrel("policy", "add", "team", "--vms", "4", "--mem", "256", "--cpu", "0")
	e.mustPetrel("create", "team:hvt", hvt, "--arg", "run=forever", "--arg", "child=1")
	e.mustPetrel("create", "team:spt", spt, "--backend", "spt", "--arg", "run=forever", "--arg", "child=1")
	e.mustPetrel("create", "free", hvt, "--arg", "run=forever")
	for _, n := range []string{"team:hvt", "team:spt"} {
		vm := e.info(n)
		confinedTo(t, n+" tender", vm.Pid, "0")
		var child int
		waitFor(t, n+"'s child", 10*time.Second, func() bool {
			for _, l := range strings.Split(e.petrel("console", n, "--no-timestamps").out, "\n") {
				if _, err := fmt.Sscanf(l, "child %d", &child); err == nil {
					return true
				}
			}
			return false
		})
		confinedTo(t, n+" tender's child", child, "0")
	}
	confinedTo(t, "free", e.info("free").Pid, all)

	// Pinned within the policy: pinned.
	e.mustPetrel("create", "team:pinned", hvt, "--cpu", "0", "--arg", "run=forever")
	confinedTo(t, "team:pinned", e.info("team:pinned").Pid, "0")

	// A policy set while a VM runs applies from its next start.
	e.mustPetrel("create", "late:vm", hvt, "--arg", "run=forever")
	confinedTo(t, "late:vm before its policy", e.info("late:vm").Pid, all)
	e.mustPetrel("policy", "add", "late", "--vms", "1", "--mem", "64", "--cpu", "1")
	e.mustPetrel("restart", "late:vm", "--arg", "run=forever")
	confinedTo(t, "late:vm restarted under its policy", e.info("late:vm").Pid, "1")

	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Log("no qemu-system-x86_64: the qemu backend is not checked")
	} else {
		virtio := filepath.Join(e.dir, "c.virtio")
		if err := testguest.WriteVirtioImage(virtio); err != nil {
			t.Fatal(err)
		}
		e.mustPetrel("create", "team:qemu", virtio, "--backend", "qemu", "--arg", testguest.VirtioRunForever)
		confinedTo(t, "team:qemu", e.info("team:qemu").Pid, "0")
		e.mustPetrel("destroy", "team:qemu")
	}
	for _, n := range []string{"team:hvt", "team:spt", "team:pinned", "free", "late:vm"} {
		e.mustPetrel("destroy", n)
	}
}
