package policy

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
)

func TestHostPolicy(t *testing.T) {
	hp, err := HostPolicy(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := hp.Validate(); err != nil {
		t.Fatalf("host policy invalid: %v", err)
	}
	if len(hp.CPUs) != runtime.NumCPU() {
		t.Errorf("CPUs = %v, runtime.NumCPU() = %d", hp.CPUs, runtime.NumCPU())
	}
	if hp.MemoryMB < 64 {
		t.Errorf("MemoryMB = %d", hp.MemoryMB)
	}
	if hp.BlockMB == nil || *hp.BlockMB < 0 {
		t.Errorf("BlockMB = %v", hp.BlockMB)
	}
	if hp.VMs != DefaultHostVMs {
		t.Errorf("VMs = %d", hp.VMs)
	}
	t.Logf("host policy: %v", hp)
	if _, err := HostPolicy(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("HostPolicy accepted a missing data directory")
	}
}

func TestHostBridges(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"eth0", "br0/bridge", "virbr1/bridge", "lo", "bad:name/bridge"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "eth0", "bridge"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old := sysClassNet
	sysClassNet = dir
	defer func() { sysClassNet = old }()
	got, err := hostBridges()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"br0", "virbr1"}) {
		t.Errorf("hostBridges() = %q", got)
	}
}
