package integration

import (
	"strings"
	"testing"

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
