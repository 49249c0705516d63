package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/var/lib/petrel" || cfg.RunDir != "/run/petrel" || cfg.DefaultBackend != "hvt" {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
	if len(cfg.Backends) != 3 || cfg.Backends[0].Name != "hvt" || cfg.Backends[1].Name != "qemu" || cfg.Backends[2].Name != "spt" {
		t.Fatalf("backends: %+v", cfg.Backends)
	}
	if cfg.Durations().StopTimeout != 5*time.Second {
		t.Fatalf("stop_timeout %v", cfg.Durations().StopTimeout)
	}
	if m, _ := cfg.SocketPerm(); m != 0o600 {
		t.Fatalf("socket mode %o", m)
	}
}

func TestOverlay(t *testing.T) {
	p := filepath.Join(t.TempDir(), "petreld.hcl")
	src := `
data_dir = "/srv/petrel"
backend "hvt" {
  settings = { tender = "/opt/solo5/bin/solo5-hvt" }
}
backend "spt" {
  enabled = false
}
`
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/srv/petrel" || cfg.RunDir != "/run/petrel" {
		t.Fatalf("dirs: %s %s", cfg.DataDir, cfg.RunDir)
	}
	hvt, spt := cfg.Backends[0], cfg.Backends[2]
	if hvt.Settings["tender"] != "/opt/solo5/bin/solo5-hvt" || hvt.Settings["engine"] != "auto" {
		t.Fatalf("hvt settings not merged: %v", hvt.Settings)
	}
	if spt.IsEnabled() || !hvt.IsEnabled() {
		t.Fatal("enabled flags wrong")
	}
}

func TestBadConfigs(t *testing.T) {
	cases := map[string]string{
		`data_dir = `:                                        "defaults",
		`stop_timeout = "soon"`:                              "stop_timeout",
		`socket_mode = "rw"`:                                 "socket_mode",
		`default_backend = "bhyve"`:                          "default_backend",
		`console_lines = 0`:                                  "console_lines",
		`unknown_thing = 1`:                                  "Unsupported argument",
		"backend \"x\" {}\nbackend \"x\" {}":                 "twice",
		`allowed_registries = ["registry.example.org/team"]`: "allowed_registries",
		`allowed_registries = ["docker"]`:                    "allowed_registries",
		`allowed_registries = ["localhost:http"]`:            "allowed_registries",
	}
	for src, want := range cases {
		p := filepath.Join(t.TempDir(), "c.hcl")
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p)
		if err == nil {
			t.Errorf("%q: accepted", src)
			continue
		}
		if want != "defaults" && !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %q does not mention %q", src, err, want)
		}
	}
	if _, err := Load("/nonexistent/petreld.hcl"); err == nil {
		t.Error("missing file accepted")
	}
}
