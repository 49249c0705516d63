package tenderbackend

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/kvm"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
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
func suite(t *testing.T, cfg Config, settings map[string]string) {
	dir := t.TempDir()
	tender, err := faketender.WriteWrapper(dir, cfg.DefaultTender)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdktest.WriteShimWrapper(dir); err != nil {
		t.Fatal(err)
	}
	settings[SettingTender] = tender
	wrong := solo5.TargetSPT
	if cfg.Target == solo5.TargetSPT {
		wrong = solo5.TargetHVT
	}
	sdktest.HypervisorSuite{
		New:        func(*testing.T) hypervisor.Hypervisor { return New(cfg) },
		Settings:   settings,
		PluginDir:  dir,
		Image:      func(t *testing.T) string { return writeImage(t, cfg.Target, faketender.ABIVersion) },
		WrongImage: func(t *testing.T) string { return writeImage(t, wrong, faketender.ABIVersion) },
		Marker:     "line 1",
		RunForever: []string{"run=forever"},
		ExitWith:   func(code int) []string { return []string{"exit=" + strconv.Itoa(code)} },
		MemoryMB:   32,
	}.Run(t)
}

// TestConformanceHVT runs the suite on hvt with the fake tender, which
// needs no KVM (needs_kvm = false), so it runs on every host.
func TestConformanceHVT(t *testing.T) {
	suite(t, HVT("test", nil), map[string]string{SettingNeedsKVM: "false"})
}

// TestConformanceHVTWithKVM runs the suite on hvt as configured by
// default, which checks KVM.
func TestConformanceHVTWithKVM(t *testing.T) {
	if err := kvm.Probe(); err != nil {
		t.Skip("hvt's default configuration needs a usable KVM:", err)
	}
	suite(t, HVT("test", nil), map[string]string{})
}

func TestConformanceSPT(t *testing.T) { suite(t, SPT("test", nil), map[string]string{}) }

// TestNeedsKVMSetting checks that needs_kvm takes only true or false.
func TestNeedsKVMSetting(t *testing.T) {
	for v, ok := range map[string]bool{"true": true, "false": true, "no": false, "": false} {
		err := New(HVT("test", nil)).Configure(context.Background(), &pluginv1.ConfigureRequest{RunDir: t.TempDir(), Settings: map[string]string{SettingNeedsKVM: v}})
		if (err == nil) != ok {
			t.Errorf("needs_kvm = %q: %v", v, err)
		}
	}
}

// TestFingerprintProblems: what a backend misses is reported one problem
// at a time, each with the setting or command that provides it.
func TestFingerprintProblems(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("PATH", empty)
	builtin := func() ([]string, error) { return nil, nil }
	for _, c := range []struct {
		cfg  Config
		want []string
	}{
		{SPT("test", builtin), []string{`set settings = { engine = "builtin" } in petreld's "spt" backend block`, "install petrel-shim in " + empty}},
		{SPT("test", nil), []string{`install Solo5's solo5-spt`, "install petrel-shim in " + empty}},
	} {
		b := New(c.cfg)
		req := &pluginv1.ConfigureRequest{RunDir: t.TempDir(), PluginDir: empty, Settings: map[string]string{SettingEngine: "external"}}
		if err := b.Configure(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		fp, err := b.Fingerprint(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if fp.GetHealth() != pluginv1.Health_HEALTH_UNHEALTHY || len(fp.GetProblems()) != len(c.want) {
			t.Fatalf("%s: %v", c.cfg.Name, fp)
		}
		for i, w := range c.want {
			if p := fp.GetProblems()[i]; p.GetDescription() == "" || !strings.HasPrefix(p.GetFix(), w) {
				t.Errorf("%s: problem %d is %v, want a fix starting %q", c.cfg.Name, i, p, w)
			}
		}
	}
}
