package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestClaimRunDir: a run directory is one petreld's at a time, and once
// it holds an instance's VMs, that instance's only; an empty one, or one
// from before instance ids, is taken over.
func TestClaimRunDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	release, err := claimRunDir(dir, "aaaa", "/data/a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := claimRunDir(dir, "aaaa", "/data/a"); err == nil || !strings.Contains(err.Error(), "in use by another petreld") {
		t.Fatalf("second claim while held: %v", err)
	}
	release()

	run := filepath.Join(dir, "vms", "hvt", "0123abcd")
	if err := os.MkdirAll(run, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := claimRunDir(dir, "bbbb", "/data/b"); err == nil || !strings.Contains(err.Error(), "instance aaaa") || !strings.Contains(err.Error(), "--run-dir") {
		t.Fatalf("claim of another instance's VMs: %v", err)
	}
	release, err = claimRunDir(dir, "aaaa", "/data/a")
	if err != nil {
		t.Fatalf("the owner's claim: %v", err)
	}
	release()

	// Once its VMs are gone, another instance may have it.
	if err := os.Remove(run); err != nil {
		t.Fatal(err)
	}
	release, err = claimRunDir(dir, "bbbb", "/data/b")
	if err != nil {
		t.Fatalf("claim of an empty run directory: %v", err)
	}
	release()
	if b, _ := os.ReadFile(filepath.Join(dir, runOwnerName)); strings.TrimSpace(string(b)) != "bbbb" {
		t.Fatalf("owner after the take-over: %q", b)
	}

	// A directory from before instance ids, with VMs: the first petreld
	// to start on it is taken to be the one that made them.
	old := filepath.Join(t.TempDir(), "old")
	if err := os.MkdirAll(filepath.Join(old, "vms", "spt", "run1"), 0o700); err != nil {
		t.Fatal(err)
	}
	release, err = claimRunDir(old, "cccc", "/data/c")
	if err != nil {
		t.Fatalf("claim of a run directory from before instance ids: %v", err)
	}
	release()
}
