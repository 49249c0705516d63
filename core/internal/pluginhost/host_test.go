package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// envPlugin makes the test binary serve testHV as a plugin.
const envPlugin = "PETREL_PLUGINHOST_TEST_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(envPlugin) == "1" {
		petrelplugin.ServeHypervisor(&testHV{})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testHV is a backend whose Start of a VM named "crash" kills its own
// process the first time it is called for an id (it leaves a marker in
// its run directory), as a plugin crashing mid-start would.
type testHV struct {
	runDir string
	// capsCalls counts the Capabilities calls this process answered.
	capsCalls atomic.Uint32
}

func (h *testHV) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_HYPERVISOR, Name: "fake", ApiVersions: []uint32{1}}, nil
}
func (h *testHV) Configure(_ context.Context, req *pluginv1.ConfigureRequest) error {
	h.runDir = req.GetRunDir()
	if req.GetSettings()["record"] != "" {
		// What the host configured, for the test to read.
		b, err := protojson.Marshal(req)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(h.runDir, "configure.json"), b, 0o600)
	}
	return nil
}

// Fingerprint reports the plugin degraded while a file "degraded" is in
// its run directory.
func (h *testHV) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	if _, err := os.Stat(filepath.Join(h.runDir, "degraded")); err == nil {
		return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_DEGRADED, Description: "degraded on request"}, nil
	}
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY}, nil
}

// Capabilities says which call of this process it answers (in
// MaxMemoryMb) and which process answers (its pid, in MinMemoryMb).
func (h *testHV) Capabilities(context.Context) (*pluginv1.HypervisorCapabilities, error) {
	return &pluginv1.HypervisorCapabilities{Targets: []string{"test"}, MaxMemoryMb: h.capsCalls.Add(1), MinMemoryMb: uint32(os.Getpid())}, nil
}
func (h *testHV) Validate(context.Context, *pluginv1.VMSpec) (*pluginv1.ValidateResponse, error) {
	return &pluginv1.ValidateResponse{Ok: true}, nil
}
func (h *testHV) Start(_ context.Context, spec *pluginv1.VMSpec) (*pluginv1.Handle, error) {
	marker := filepath.Join(h.runDir, spec.GetId())
	if spec.GetName() == "crash" {
		if _, err := os.Stat(marker); err != nil {
			if err := os.WriteFile(marker, []byte("started once\n"), 0o600); err != nil {
				return nil, err
			}
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	return &pluginv1.Handle{Id: spec.GetId(), Pid: int64(os.Getpid())}, nil
}
func (h *testHV) Recover(context.Context, *pluginv1.Handle) (*pluginv1.RecoverResponse, error) {
	return &pluginv1.RecoverResponse{}, nil
}
func (h *testHV) Wait(context.Context, string) (*pluginv1.ExitStatus, error) {
	return nil, hypervisor.ErrUnknownVM
}
func (h *testHV) Stop(context.Context, string, time.Duration) error { return nil }
func (h *testHV) Destroy(context.Context, string) error             { return nil }
func (h *testHV) Stats(context.Context, string) (*pluginv1.VMStats, error) {
	return &pluginv1.VMStats{}, nil
}
func (h *testHV) Console(context.Context, *pluginv1.ConsoleRequest, func(*pluginv1.ConsoleLine) error) error {
	return nil
}

// testHost runs the test binary as plugin "fake" under a Host, and
// returns the host, the plugin directory and the plugin events.
func testHost(t *testing.T, callWait time.Duration) (*Host, string, <-chan event) {
	t.Helper()
	dir := t.TempDir()
	writePlugin(t, dir, "fake")
	events := make(chan event, 100)
	h := New(Options{PluginDir: dir, RunDir: filepath.Join(dir, "run"), StateDir: filepath.Join(dir, "state"), HealthInterval: time.Hour, CallWait: callWait,
		OnEvent: func(typ, name, _ string) { events <- event{typ: typ, at: time.Now()} }})
	t.Cleanup(h.Close)
	if err := h.AddHypervisor("fake", nil); err != nil {
		t.Fatal(err)
	}
	return h, dir, events
}

// writePlugin installs the test binary, serving testHV, as plugin name
// in dir.
func writePlugin(t *testing.T, dir, name string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\n%s=1 exec %q \"$@\"\n", envPlugin, exe)
	tmp := BinaryPath(dir, name) + ".tmp"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, BinaryPath(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func pid(t *testing.T, h *Host) int {
	t.Helper()
	for _, s := range h.Status() {
		if s.Name == "fake" && s.Running {
			return s.Pid
		}
	}
	t.Fatal("plugin fake is not running")
	return 0
}

// event is a plugin event and when it was reported.
type event struct {
	typ string
	at  time.Time
}

func expect(t *testing.T, events <-chan event, want string) time.Time {
	t.Helper()
	select {
	case got := <-events:
		if got.typ != want {
			t.Fatalf("event %s, want %s", got.typ, want)
		}
		return got.at
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s event", want)
	}
	return time.Time{}
}

// TestStateDir: each plugin gets a state directory of its own, private
// to petreld's user, beside its run directory.
func TestStateDir(t *testing.T) {
	_, dir, _ := testHost(t, time.Second)
	fi, err := os.Stat(filepath.Join(dir, "state", "fake"))
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v, %v", fi, err)
	}
}

// TestCrashNoticedWhenItHappens: a plugin killed with SIGKILL is found
// crashed as its process exits, without waiting for a health check, and a
// call made right after the kill waits for the new process and succeeds.
func TestCrashNoticedWhenItHappens(t *testing.T) {
	h, _, events := testHost(t, 10*time.Second)
	hv, err := h.Hypervisor("fake")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		killed := time.Now()
		if err := syscall.Kill(pid(t, h), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, err := hv.Capabilities(context.Background()); err != nil {
			t.Fatalf("call right after the kill: %v", err)
		}
		noticed := expect(t, events, "plugin-crashed").Sub(killed)
		expect(t, events, "plugin-restarted")
		t.Logf("kill %d: crash noticed after %v", i+1, noticed)
		if noticed > 100*time.Millisecond {
			t.Fatalf("crash noticed after %v: not when the process exited", noticed)
		}
	}
	if got := h.Status()[0].Restarts; got != 3 {
		t.Fatalf("restarts = %d, want 3", got)
	}
}

// TestCallRepeatedOnSuccessor: a call whose plugin dies under it is made
// again on the restarted plugin.
func TestCallRepeatedOnSuccessor(t *testing.T) {
	h, _, events := testHost(t, 10*time.Second)
	hv, err := h.Hypervisor("fake")
	if err != nil {
		t.Fatal(err)
	}
	first := pid(t, h)
	hd, err := hv.Start(context.Background(), &pluginv1.VMSpec{Id: "run1", Name: "crash"})
	if err != nil {
		t.Fatalf("Start through a plugin that died under it: %v", err)
	}
	if hd.GetPid() == int64(first) || hd.GetPid() != int64(pid(t, h)) {
		t.Fatalf("Start answered by pid %d; first plugin %d, current %d", hd.GetPid(), first, pid(t, h))
	}
	expect(t, events, "plugin-crashed")
	expect(t, events, "plugin-restarted")
}

// TestCallWaitIsBounded: with the plugin gone for good, a call fails
// after CallWait, as unavailable and unreachable.
func TestCallWaitIsBounded(t *testing.T) {
	h, dir, events := testHost(t, 300*time.Millisecond)
	hv, err := h.Hypervisor("fake")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(BinaryPath(dir, "fake")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid(t, h), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	expect(t, events, "plugin-crashed")
	began := time.Now()
	_, err = hv.Capabilities(context.Background())
	if !errors.Is(err, hypervisor.ErrUnavailable) || !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Fatalf("call without a plugin = %v", err)
	}
	if took := time.Since(began); took < 250*time.Millisecond || took > 5*time.Second {
		t.Fatalf("call without a plugin failed after %v, want about 300ms", took)
	}
}

// TestCapabilitiesAskedOncePerProcess: a plugin process is asked for its
// capabilities once; a restarted plugin is asked again.
func TestCapabilitiesAskedOncePerProcess(t *testing.T) {
	h, _, events := testHost(t, 10*time.Second)
	hv, err := h.Hypervisor("fake")
	if err != nil {
		t.Fatal(err)
	}
	first := pid(t, h)
	for i := range 3 {
		c, err := hv.Capabilities(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if c.GetMaxMemoryMb() != 1 || c.GetMinMemoryMb() != uint32(first) {
			t.Fatalf("call %d: answered as call %d of process %d (plugin %d)", i+1, c.GetMaxMemoryMb(), c.GetMinMemoryMb(), first)
		}
		c.Targets = nil // a caller's copy: changing it changes no later answer
	}
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	expect(t, events, "plugin-crashed")
	expect(t, events, "plugin-restarted")
	c, err := hv.Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if next := pid(t, h); c.GetMinMemoryMb() != uint32(next) || c.GetMaxMemoryMb() != 1 || len(c.GetTargets()) != 1 {
		t.Fatalf("after a restart: %v (new plugin %d)", c, next)
	}
}
