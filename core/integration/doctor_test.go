package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestDoctorAsksDaemon: petrel doctor checks the petreld that runs, not
// the defaults: its configuration file and directories, its plugins with
// the versions their Info reports, and each backend as the backend sees
// the host (here hvt and spt with the installation's tenders).
func TestDoctorAsksDaemon(t *testing.T) {
	e := newEnv(t)
	e.start()
	r := e.petrel("doctor", "--json")
	var rs []struct {
		Status, Check, Message string
	}
	if err := json.Unmarshal([]byte(r.out), &rs); err != nil {
		t.Fatalf("doctor --json: exit %d, %v:\n%s%s", r.code, err, r.out, r.err)
	}
	has := func(status, check, substr string) bool {
		for _, c := range rs {
			if c.Status == status && c.Check == check && strings.Contains(c.Message, substr) {
				return true
			}
		}
		return false
	}
	for _, w := range []struct{ status, check, substr string }{
		{"OK", "daemon", "at " + e.socket},
		{"OK", "config", e.config + ": data_dir " + e.dataDir + ", run_dir " + e.runDir + ", plugin_dir " + binDir},
		{"OK", "backend", "hvt runs Solo5 hvt unikernels with " + e.dir},
		{"OK", "backend", "spt runs Solo5 spt unikernels with " + e.dir},
		{"OK", "backends", "petreld runs hvt"},
		{"OK", "data-dir", e.dataDir},
		{"OK", "socket", e.socket},
	} {
		if !has(w.status, w.check, w.substr) {
			t.Errorf("no %s %s line with %q:\n%s", w.status, w.check, w.substr, r.out)
		}
	}
	for _, c := range rs {
		switch {
		case c.Check == "tender" || c.Check == "qemu":
			t.Errorf("doctor looked on PATH though petreld answered: %+v", c)
		case c.Check == "plugin" && strings.Contains(c.Message, "version unknown") && !strings.Contains(c.Message, "jsonl"):
			t.Errorf("a plugin of Petrel's without its version: %+v", c)
		case strings.Contains(c.Message, "/var/lib/petrel"):
			t.Errorf("doctor checked the default data directory: %+v", c)
		}
	}
	if !has("OK", "backend", "qemu runs") && !has("WARN", "backend", "qemu cannot run VMs") {
		t.Errorf("no line on the qemu backend:\n%s", r.out)
	}
}
