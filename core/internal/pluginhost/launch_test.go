package pluginhost

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// newHost returns a Host over a fresh plugin directory, reporting its
// events on the returned channel, with health checks every interval.
func newHost(t *testing.T, interval time.Duration) (*Host, string, <-chan event) {
	t.Helper()
	dir := t.TempDir()
	events := make(chan event, 100)
	h := New(Options{PluginDir: dir, RunDir: filepath.Join(dir, "run"), StateDir: filepath.Join(dir, "state"),
		HealthInterval: interval, CallWait: 5 * time.Second, InstanceID: "inst-1",
		OnEvent: func(typ, name, _ string) { events <- event{typ: typ, at: time.Now()} }})
	t.Cleanup(h.Close)
	return h, dir, events
}

// TestConfigure: a plugin is configured with its settings, its own run
// and state directories, the plugin directory and the instance id.
func TestConfigure(t *testing.T) {
	h, dir, _ := newHost(t, time.Hour)
	writePlugin(t, dir, "fake")
	if err := h.AddHypervisor("fake", map[string]string{"record": "yes", "tender": "solo5-hvt"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "run", "fake", "configure.json"))
	if err != nil {
		t.Fatal(err)
	}
	var req pluginv1.ConfigureRequest
	if err := protojson.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	if req.GetSettings()["tender"] != "solo5-hvt" || req.GetRunDir() != filepath.Join(dir, "run", "fake") ||
		req.GetStateDir() != filepath.Join(dir, "state", "fake") || req.GetPluginDir() != dir || req.GetInstanceId() != "inst-1" {
		t.Fatalf("plugin configured with %v", &req)
	}
	st := h.Status()
	if len(st) != 1 || !st[0].Running || st[0].Info.GetName() != "fake" || st[0].Path != BinaryPath(dir, "fake") || st[0].Kind != pluginv1.Kind_KIND_HYPERVISOR {
		t.Fatalf("status %+v", st)
	}
	if err := h.AddHypervisor("fake", nil); err == nil || !strings.Contains(err.Error(), "added twice") {
		t.Fatalf("a plugin added twice: %v", err)
	}
}

// TestLateBinary: a plugin whose binary is missing is reported down with
// the reason, and launched in the background once the binary appears.
func TestLateBinary(t *testing.T) {
	h, dir, events := newHost(t, time.Hour)
	err := h.AddHypervisor("fake", nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("add without a binary: %v", err)
	}
	st := h.Status()
	if len(st) != 1 || st[0].Running || !strings.Contains(st[0].LastError, "no such file") {
		t.Fatalf("status of a plugin without a binary: %+v", st)
	}
	hv, err := h.Hypervisor("fake")
	if err != nil {
		t.Fatalf("a configured backend whose plugin is down: %v", err)
	}
	writePlugin(t, dir, "fake")
	expect(t, events, "plugin-restarted")
	if st := h.Status(); !st[0].Running || st[0].LastError != "" {
		t.Fatalf("status once the binary is there: %+v", st)
	}
	if _, err := hv.Capabilities(context.Background()); err != nil {
		t.Fatalf("call once the plugin is up: %v", err)
	}
}

// TestWrongKind: a binary that serves another kind of plugin than its
// configuration block says is refused, and its process is not kept.
func TestWrongKind(t *testing.T) {
	h, dir, _ := newHost(t, time.Hour)
	writePlugin(t, dir, "fake")
	err := h.Add(NetworkKind, "fake", nil)
	if err == nil || !strings.Contains(err.Error(), "plugin fake: info: network plugin") {
		t.Fatalf("a hypervisor plugin added as a network plugin: %v", err)
	}
	if st := h.Status(); st[0].Running {
		t.Fatalf("the refused plugin runs: %+v", st[0])
	}
	if _, err := h.Network("fake"); err != nil {
		t.Fatalf("lookup of a configured network plugin that is down: %v", err)
	}
}

// TestHealthCheckRefreshesFingerprint: the health check keeps the
// fingerprint `petrel plugins` shows up to date.
func TestHealthCheckRefreshesFingerprint(t *testing.T) {
	h, dir, _ := newHost(t, 20*time.Millisecond)
	writePlugin(t, dir, "fake")
	if err := h.AddHypervisor("fake", nil); err != nil {
		t.Fatal(err)
	}
	if got := h.Status()[0].Fingerprint.GetHealth(); got != pluginv1.Health_HEALTH_HEALTHY {
		t.Fatalf("health at start %s", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "run", "fake", "degraded"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.Status()[0].Fingerprint.GetHealth() != pluginv1.Health_HEALTH_DEGRADED {
		if time.Now().After(deadline) {
			t.Fatalf("fingerprint not refreshed: %v", h.Status()[0].Fingerprint)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if h.Status()[0].Restarts != 0 {
		t.Fatal("a plugin that answers its health check was restarted")
	}
}
