package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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

// TestConsoleAsDockerUsersTypeIt: console takes --tail (and -n) for
// --count, --since as a duration back from now, and prints timestamps
// unless told not to.
func TestConsoleAsDockerUsersTypeIt(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("ok.hvt", solo5.TargetHVT)
	e.mustPetrel("create", "vm", img, "--arg", "lines=5", "--arg", "run=forever")
	waitFor(t, "five console lines", 10*time.Second, func() bool {
		return strings.Contains(e.petrel("console", "vm").out, "line 5")
	})
	for _, args := range [][]string{{"--tail", "2"}, {"-n", "2"}, {"--count", "2"}} {
		out := e.mustPetrel(append([]string{"console", "vm", "--no-timestamps"}, args...)...)
		if out != "line 4\nline 5\n" {
			t.Errorf("console %v: %q, want the last two lines", args, out)
		}
	}
	if out := e.mustPetrel("console", "vm", "--since", "10m", "--timestamps=false"); !strings.Contains(out, "line 1\n") || strings.Contains(out, "Z line") {
		t.Errorf("console --since 10m --timestamps=false: %q", out)
	}
	if out := e.mustPetrel("console", "vm", "--tail", "1"); !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z line 5\n$`).MatchString(out) {
		t.Errorf("console --tail 1: %q, want the line with its timestamp", out)
	}
	time.Sleep(1100 * time.Millisecond)
	if out := e.mustPetrel("console", "vm", "--since", "1s"); strings.Contains(out, "line") {
		t.Errorf("console --since 1s shows lines older than a second: %q", out)
	}
}

// TestStateInspectFollowsTheDaemon: petrel state inspect, without
// --data-dir, reads the data directory of the petreld it talks to, not
// the default one.
func TestStateInspectFollowsTheDaemon(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.mustPetrel("create", "vm", e.image("ok.hvt", solo5.TargetHVT), "--arg", "run=forever")
	r := e.petrel("state", "inspect", "--json")
	var rep struct {
		Source string `json:"source"`
		VMs    []struct {
			Name string `json:"name"`
		} `json:"vms"`
	}
	if err := json.Unmarshal([]byte(r.out), &rep); err != nil {
		t.Fatalf("state inspect --json: exit %d: %v\n%s%s", r.code, err, r.out, r.err)
	}
	if rep.Source != e.dataDir || len(rep.VMs) != 1 || rep.VMs[0].Name != "vm" {
		t.Fatalf("state inspect read %s (%d VMs), want petreld's %s with vm", rep.Source, len(rep.VMs), e.dataDir)
	}
	if !strings.Contains(r.err, e.dataDir) {
		t.Errorf("state inspect does not say it reads petreld's directory: %q", r.err)
	}
}
