package tenderbackend

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/kvm"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
	"github.com/petrel-vmm/petrel/sdk/sdktest/faketender"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

func TestMain(m *testing.M) {
	faketender.MaybeRun()
	sdktest.MaybeRunShim()
	os.Exit(m.Run())
}

func writeImage(t *testing.T, target solo5.Target, abi uint32, devs ...solo5.Device) string {
	t.Helper()
	b, err := solo5.Build(solo5.BuildSpec{Target: target, ABIVersion: abi, Devices: devs})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// suite runs the SDK's conformance suite against cfg with the fake tender.
func suite(t *testing.T, cfg Config) {
	dir := t.TempDir()
	tender, err := faketender.WriteWrapper(dir, cfg.DefaultTender)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdktest.WriteShimWrapper(dir); err != nil {
		t.Fatal(err)
	}
	wrong := solo5.TargetSPT
	if cfg.Target == solo5.TargetSPT {
		wrong = solo5.TargetHVT
	}
	sdktest.HypervisorSuite{
		New:        func(*testing.T) hypervisor.Hypervisor { return New(cfg) },
		Settings:   map[string]string{SettingTender: tender},
		PluginDir:  dir,
		Image:      func(t *testing.T) string { return writeImage(t, cfg.Target, faketender.ABIVersion) },
		WrongImage: func(t *testing.T) string { return writeImage(t, wrong, faketender.ABIVersion) },
		Marker:     "line 1",
		RunForever: []string{"run=forever"},
		ExitWith:   func(code int) []string { return []string{"exit=" + strconv.Itoa(code)} },
		MemoryMB:   32,
	}.Run(t)
}

func TestConformanceHVT(t *testing.T) {
	if err := kvm.Probe(); err != nil {
		t.Skip("hvt's fingerprint needs a usable KVM:", err)
	}
	suite(t, HVT("test", nil))
}

func TestConformanceSPT(t *testing.T) { suite(t, SPT("test", nil)) }
