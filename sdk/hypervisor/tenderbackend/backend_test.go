package tenderbackend

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/kvm"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
	"github.com/petrel-vmm/petrel/sdk/sdktest/faketender"
	"github.com/petrel-vmm/petrel/sdk/shim"
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

// sparedBackend returns an spt backend configured with the fake tender
// and settings, closed at the end of the test, and an image it runs.
func sparedBackend(t *testing.T, settings map[string]string) (*Backend, string) {
	t.Helper()
	dir := t.TempDir()
	tender, err := faketender.WriteWrapper(dir, "solo5-spt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdktest.WriteShimWrapper(dir); err != nil {
		t.Fatal(err)
	}
	settings[SettingTender] = tender
	b := New(SPT("test", nil))
	t.Cleanup(func() { b.Close() })
	if err := b.Configure(context.Background(), &pluginv1.ConfigureRequest{RunDir: t.TempDir(), PluginDir: dir, Settings: settings}); err != nil {
		t.Fatal(err)
	}
	return b, writeImage(t, solo5.TargetSPT, faketender.ABIVersion)
}

// startVM starts image on b as run id, destroyed at the end of the test.
func startVM(t *testing.T, b *Backend, id, image string) *pluginv1.Handle {
	t.Helper()
	h, err := b.Start(context.Background(), &pluginv1.VMSpec{Id: id, Name: id, ImagePath: image, MemoryMb: 32, Args: []string{"run=forever"}})
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	t.Cleanup(func() { b.Destroy(context.Background(), id) })
	return h
}

// TestSpareShim: after its first create, a backend keeps a spare shim,
// which runs the next VM; it is no VM itself (no run directory), and the
// spare_shim setting turns it off.
func TestSpareShim(t *testing.T) {
	for v, ok := range map[string]bool{"true": true, "false": true, "yes": false} {
		err := New(SPT("test", nil)).Configure(context.Background(), &pluginv1.ConfigureRequest{RunDir: t.TempDir(), Settings: map[string]string{SettingSpareShim: v}})
		if (err == nil) != ok {
			t.Errorf("spare_shim = %q: %v", v, err)
		}
	}

	b, image := sparedBackend(t, map[string]string{})
	first := startVM(t, b, "vm-1", image)
	var spare int
	for deadline := time.Now().Add(15 * time.Second); spare == 0; spare = b.launcher.SparePID() {
		if time.Now().After(deadline) {
			t.Fatal("no spare shim after the first create")
		}
		time.Sleep(time.Millisecond)
	}
	if int64(spare) == first.GetShimPid() {
		t.Fatal("the spare is the first VM's shim")
	}
	runs, err := os.ReadDir(b.RunDir())
	if err != nil || len(runs) != 1 || runs[0].Name() != "vm-1" {
		t.Fatalf("run directory with a spare waiting: %v, %v", runs, err)
	}
	second := startVM(t, b, "vm-2", image)
	if second.GetShimPid() != int64(spare) {
		t.Fatalf("second VM's shim is %d, not the spare %d", second.GetShimPid(), spare)
	}
	if rec, err := b.Recover(context.Background(), second); err != nil || !rec.GetRunning() {
		t.Fatalf("VM run by the spare: %v, %v", rec, err)
	}

	off, image := sparedBackend(t, map[string]string{SettingSpareShim: "false"})
	startVM(t, off, "vm-3", image)
	time.Sleep(5 * shim.DefaultRefillDelay)
	if pid := off.launcher.SparePID(); pid != 0 {
		t.Fatalf("spare shim %d with spare_shim = false", pid)
	}
}
