package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestStateRestoreAfterDataLoss is the disaster drill: a live export of
// a running host, petreld killed and its data directory lost, the export
// imported, and the new petreld finds everything again: the running VM
// reattached (same pid, console history), the exited one, the policy and
// the block device with its content.
func TestStateRestoreAfterDataLoss(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("web.hvt", solo5.TargetHVT, solo5.Device{Name: "storage", Type: solo5.DeviceBlock})
	e.mustPetrel("policy", "add", "team", "--vms", "3", "--mem", "128", "--cpu", "0", "--block", "16")
	e.mustPetrel("block", "create", "team:disk", "4")
	data := filepath.Join(e.dir, "disk.img")
	if err := os.WriteFile(data, []byte(strings.Repeat("petrel!\n", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.mustPetrel("block", "upload", "team:disk", data)
	e.mustPetrel("create", "team:web", img, "--mem", "16", "--block", "storage:disk", "--arg", "lines=3", "--arg", "run=forever")
	e.mustPetrel("create", "once", e.image("once.hvt", solo5.TargetHVT), "--mem", "16", "--arg", "exit=7")
	waitFor(t, "console line 3 and the exit of once", 10*time.Second, func() bool {
		return strings.Contains(e.petrel("console", "team:web").out, "line 3") && e.info("once").State == "exited"
	})
	before := e.info("team:web")

	archive := filepath.Join(e.dir, "backup.tar.gz")
	r := e.petrel("state", "export", "--data-dir", e.dataDir, "-o", archive)
	if r.code == 0 || !strings.Contains(r.err, "--live") {
		t.Fatalf("export while petreld runs without --live: exit %d: %s", r.code, r.err)
	}
	r = e.petrel("state", "export", "--live", "--blocks", "--data-dir", e.dataDir, "-o", archive)
	if r.code != 0 {
		t.Fatalf("live export: exit %d: %s", r.code, r.err)
	}
	inspect := e.mustPetrel("state", "inspect", archive)
	for _, want := range []string{"team:web", "once", "team:disk", "No problems found", "(live)"} {
		if !strings.Contains(inspect, want) {
			t.Fatalf("inspect of the export lacks %q:\n%s", want, inspect)
		}
	}

	e.kill9()
	if err := os.RemoveAll(e.dataDir); err != nil {
		t.Fatal(err)
	}
	out := e.mustPetrel("state", "import", archive, "--data-dir", e.dataDir)
	if !strings.Contains(out, "imported") {
		t.Fatalf("import said %q", out)
	}
	e.start()

	after := e.info("team:web")
	if after.State != "running" || after.Pid != before.Pid || after.ShimPid != before.ShimPid {
		t.Fatalf("team:web after restore: %+v, before %+v", after, before)
	}
	if !strings.Contains(e.petrel("console", "team:web").out, "line 3") {
		t.Fatal("console history lost")
	}
	if once := e.info("once"); once.State != "exited" || once.ExitCode == nil || *once.ExitCode != 7 {
		t.Fatalf("once after restore: %+v", once)
	}
	if pol := e.mustPetrel("policy"); !strings.Contains(pol, "team") {
		t.Fatalf("policies after restore:\n%s", pol)
	}
	e.mustPetrel("destroy", "team:web")
	got := filepath.Join(e.dir, "disk.out")
	e.mustPetrel("block", "download", "team:disk", got)
	b, err := os.ReadFile(got)
	if err != nil || !strings.HasPrefix(string(b), strings.Repeat("petrel!\n", 512)) {
		t.Fatalf("block device content after restore: %d bytes, %v", len(b), err)
	}
	e.mustPetrel("destroy", "once")
}
