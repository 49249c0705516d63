package integration

import (
	"os"
	"path/filepath"
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

// TestErrorsNameTheUsersFiles: a refused image is named as the user gave
// it, never by its file in petreld's image store, and files that cannot
// be read at all are invalid input (exit 6), named as given.
func TestErrorsNameTheUsersFiles(t *testing.T) {
	e := newEnv(t)
	e.start()
	text := filepath.Join(e.dir, "notes.hvt")
	if err := os.WriteFile(text, []byte("not a unikernel\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"create", "vm", text},
		{"create", "vm", text, "--backend", "spt"},
		{"create", "vm", text, "--backend", "qemu"},
	} {
		r := e.petrel(args...)
		if r.code != 6 || !strings.Contains(r.err, "image notes.hvt") || strings.Contains(r.err, e.dataDir) || strings.Contains(r.err, "sha256") {
			t.Errorf("petrel %v: exit %d %q, want 6 naming notes.hvt and no store path", args, r.code, r.err)
		}
	}
	missing := filepath.Join(e.dir, "missing.img")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "vm", e.dir}, e.dir + " is a directory"},
		{[]string{"block", "create", "disk", "8", "--data", missing}, "--data " + missing + ": no such file"},
	} {
		if r := e.petrel(c.args...); r.code != 6 || !strings.Contains(r.err, c.want) {
			t.Errorf("petrel %v: exit %d %q, want 6 and %q", c.args, r.code, r.err, c.want)
		}
	}
	if r := e.mustPetrel("block", "--json"); strings.Contains(r, "disk") {
		t.Errorf("a block device was created for a missing --data file: %s", r)
	}
}
