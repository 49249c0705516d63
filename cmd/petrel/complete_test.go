package main

import (
	"path/filepath"
	"strings"
	"testing"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// complete runs the shell's completion request for args and returns the
// completions and the directive line.
func complete(t *testing.T, sock string, args ...string) ([]string, string) {
	t.Helper()
	code, out, errText := runPetrel(append([]string{"--socket", sock, "__complete"}, args...)...)
	if code != exitOK {
		t.Fatalf("__complete %v: exit %d: %s", args, code, errText)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[:len(lines)-1], lines[len(lines)-1]
}

// TestCompletionFromTheDaemon: shells complete VM names, block devices,
// bridges, backends and policy paths from the daemon, and get nothing,
// silently, when no daemon answers.
func TestCompletionFromTheDaemon(t *testing.T) {
	d := &stubDaemon{
		vms:     []*daemonv1.VM{{Name: "web", State: "running"}, {Name: "team:db", State: "exited"}},
		devices: []*daemonv1.BlockInfo{{Name: "disk", SizeMb: 64}, {Name: "team:data", SizeMb: 8, InUseBy: "team:db"}},
		bridges: []*daemonv1.HostBridge{{Name: "br0"}, {Name: "br1"}},
		plugins: []*daemonv1.Plugin{{Name: "hvt", Kind: "hypervisor", Health: "healthy"}, {Name: "spt", Kind: "hypervisor", Health: "healthy"},
			{Name: "influx", Kind: "metrics", Health: "healthy"}},
		policies: []*daemonv1.PolicyEntry{{Path: ":"}, {Path: "team"}},
	}
	sock := startStub(t, d)
	for _, c := range []struct {
		args      []string
		want      string
		directive string
	}{
		{[]string{"destroy", ""}, "team:db\texited,web\trunning", ":4"},
		{[]string{"console", "w"}, "web\trunning", ":4"},
		{[]string{"restart", "web", ""}, "", ":4"},
		{[]string{"info", "team"}, "team:db\texited", ":4"},
		{[]string{"create", "new", ""}, "", ":0"},
		{[]string{"create", ""}, "", ":4"},
		{[]string{"create", "vm", "vm.hvt", "--backend", ""}, "hvt\thealthy,spt\thealthy", ":4"},
		{[]string{"create", "vm", "vm.hvt", "--net", "service0:"}, "service0:br0,service0:br1", ":4"},
		{[]string{"create", "vm", "vm.hvt", "--net", "service0"}, "", ":6"},
		{[]string{"create", "vm", "vm.hvt", "--block", "storage:"}, "storage:disk\t64.0M", ":4"},
		{[]string{"create", "team:db", "db.hvt", "--block", "storage:"}, "storage:data\t8.0M, used by team:db", ":4"},
		{[]string{"block", "upload", ""}, "disk\t64.0M,team:data\t8.0M, used by team:db", ":4"},
		{[]string{"block", "upload", "disk", ""}, "", ":0"},
		{[]string{"block", "destroy", "t"}, "team:data\t8.0M, used by team:db", ":4"},
		{[]string{"policy", "add", "team", "--bridge", "br"}, "br0,br1", ":4"},
		{[]string{"ca", "sign-policy", "x.csr", "--bridge", ""}, "br0,br1", ":4"},
		{[]string{"policy", "remove", ""}, "team", ":4"},
	} {
		got, directive := complete(t, sock, c.args...)
		if strings.Join(got, ",") != c.want || directive != c.directive {
			t.Errorf("complete %q: %q %s, want %q %s", c.args, got, directive, c.want, c.directive)
		}
	}
	// Without a daemon: no completions, no error.
	none := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{{"destroy", ""}, {"create", "vm", "x", "--backend", ""}, {"block", "upload", ""}} {
		if got, directive := complete(t, none, args...); len(got) != 0 || directive != ":4" {
			t.Errorf("complete %q without a daemon: %q %s", args, got, directive)
		}
	}
}
