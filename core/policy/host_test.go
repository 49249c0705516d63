package policy

import (
	"path/filepath"
	"runtime"
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
