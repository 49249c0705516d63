package integration

import (
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestNamesKeepTheirCase: a name with upper case is refused with the
// rule and the name to write instead, never lower-cased into another
// (possibly existing) VM's name.
func TestNamesKeepTheirCase(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("ok.hvt", solo5.TargetHVT)
	e.mustPetrel("create", "hello", img, "--arg", "run=forever")
	for _, args := range [][]string{
		{"create", "Hello", img},
		{"create", "team:Web", img},
		{"block", "create", "Disk", "8"},
		{"policy", "add", "Team", "--vms", "1", "--mem", "64"},
	} {
		r := e.petrel(args...)
		if r.code != 6 || !strings.Contains(r.err, "upper-case") || !strings.Contains(r.err, "write ") {
			t.Errorf("petrel %v: exit %d %q, want 6 and the rule", args, r.code, r.err)
		}
		if strings.Contains(r.err, "already exists") {
			t.Errorf("petrel %v: %q: the name was lower-cased", args, r.err)
		}
	}
	if vms := e.infoAll(); len(vms) != 1 || vms[0].Name != "hello" {
		t.Fatalf("VMs after refused creates: %+v", vms)
	}
}
