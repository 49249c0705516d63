// Package config reads petreld's HCL configuration. Embedded defaults come
// first, then the operator's file, then command-line flags, so a daemon
// started with no file at all still has a complete, documented setup.
package config

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/petrel-vmm/petrel/sdk/oci"
)

// Defaults is the embedded default configuration, shown by
// `petreld --print-defaults` as a starting point for a config file.
//
//go:embed defaults.hcl
var Defaults string

// Config is petreld's configuration.
type Config struct {
	DataDir        string `hcl:"data_dir,optional"`
	RunDir         string `hcl:"run_dir,optional"`
	PluginDir      string `hcl:"plugin_dir,optional"`
	DefaultBackend string `hcl:"default_backend,optional"`
	SocketMode     string `hcl:"socket_mode,optional"`
	// RemoteSocketMode and RemoteSocketGroup are the permission bits and
	// group of the socket petrel-endpoint forwards requests to; petreld
	// serves a request there only with a chain it verifies.
	RemoteSocketMode  string `hcl:"remote_socket_mode,optional"`
	RemoteSocketGroup string `hcl:"remote_socket_group,optional"`
	ConsoleLines      int    `hcl:"console_lines,optional"`
	// ImageStoreMB bounds the image store, whoever uploads: it is the
	// root policy's image allowance.
	ImageStoreMB         int    `hcl:"image_store_mb,optional"`
	ConsoleBytes         int    `hcl:"console_bytes,optional"`
	StopTimeout          string `hcl:"stop_timeout,optional"`
	RestartBackoffMin    string `hcl:"restart_backoff_min,optional"`
	RestartBackoffMax    string `hcl:"restart_backoff_max,optional"`
	RestartResetAfter    string `hcl:"restart_reset_after,optional"`
	PluginHealthInterval string `hcl:"plugin_health_interval,optional"`
	StatsInterval        string `hcl:"stats_interval,optional"`
	// CAFile is the root CA certificate that remote callers' chains must
	// lead to; empty refuses every request forwarded by petrel-endpoint.
	CAFile string `hcl:"ca_file,optional"`
	// RevocationFile is the revocation list (`petrel ca revoke`), re-read
	// when it changes; empty means no certificate is revoked.
	RevocationFile string `hcl:"revocation_file,optional"`
	// InsecureRegistries are registry hosts (host or host:port) petreld
	// reaches over plain HTTP although they are not loopback.
	InsecureRegistries []string `hcl:"insecure_registries,optional"`
	// AllowedRegistries are the registry hosts (host or host:port, as
	// references name them) petreld pulls from, so that the host's owner
	// decides where the code it runs comes from whoever asks; empty allows
	// every registry.
	AllowedRegistries []string `hcl:"allowed_registries,optional"`
	// RegistryConfig is the docker configuration file with registry
	// credentials; empty for $DOCKER_CONFIG/config.json or the petreld
	// user's ~/.docker/config.json.
	RegistryConfig string `hcl:"registry_config,optional"`

	// File is the configuration file read over the defaults, empty when
	// there was none; not a setting, but what petreld reports so that an
	// operator knows which file to change.
	File string

	Backends []PluginBlock `hcl:"backend,block"`
	// Networks configures network plugins (petrel-plugin-NAME); VMs get
	// their taps from the first enabled one.
	Networks []PluginBlock `hcl:"network,block"`
	// Metrics configures metrics sinks (petrel-plugin-NAME); each gets
	// every statistics batch.
	Metrics []PluginBlock `hcl:"metrics,block"`
}

// PluginBlock configures one plugin (a hypervisor backend, a network or a
// metrics sink), named by its block label, which is also the plugin
// binary's suffix (petrel-plugin-NAME).
type PluginBlock struct {
	Name     string            `hcl:"name,label"`
	Enabled  *bool             `hcl:"enabled,optional"`
	Settings map[string]string `hcl:"settings,optional"`
}

// IsEnabled reports whether the plugin should be launched.
func (b PluginBlock) IsEnabled() bool { return b.Enabled == nil || *b.Enabled }

// Load returns the defaults overlaid with the file at path (when path is
// not empty). Errors carry the file position.
func Load(path string) (*Config, error) {
	cfg, err := parse([]byte(Defaults), "defaults.hcl", nil)
	if err != nil {
		return nil, fmt.Errorf("embedded defaults: %w", err)
	}
	if path != "" {
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if cfg, err = parse(src, path, cfg); err != nil {
			return nil, err
		}
		cfg.File = path
		if abs, err := filepath.Abs(path); err == nil {
			cfg.File = abs
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// parse decodes src over base: attributes present in src win; backend
// blocks are merged by name, settings key by key.
func parse(src []byte, filename string, base *Config) (*Config, error) {
	f, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, diagError(diags)
	}
	var cfg Config
	if base != nil {
		cfg = *base
		cfg.Backends, cfg.Networks, cfg.Metrics = nil, nil, nil
	}
	if diags := gohcl.DecodeBody(f.Body, nil, &cfg); diags.HasErrors() {
		return nil, diagError(diags)
	}
	if base == nil {
		return &cfg, nil
	}
	var err error
	if cfg.Backends, err = mergeBlocks(filename, "backend", base.Backends, cfg.Backends); err != nil {
		return nil, err
	}
	if cfg.Networks, err = mergeBlocks(filename, "network", base.Networks, cfg.Networks); err != nil {
		return nil, err
	}
	if cfg.Metrics, err = mergeBlocks(filename, "metrics", base.Metrics, cfg.Metrics); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// mergeBlocks overlays labelled plugin blocks by name, settings key by key.
func mergeBlocks(filename, kind string, base, over []PluginBlock) ([]PluginBlock, error) {
	merged := map[string]PluginBlock{}
	for _, b := range base {
		merged[b.Name] = b
	}
	seen := map[string]bool{}
	for _, b := range over {
		if seen[b.Name] {
			return nil, fmt.Errorf("%s: %s %q configured twice", filename, kind, b.Name)
		}
		seen[b.Name] = true
		old, ok := merged[b.Name]
		if !ok {
			merged[b.Name] = b
			continue
		}
		if b.Enabled != nil {
			old.Enabled = b.Enabled
		}
		settings := map[string]string{}
		for k, v := range old.Settings {
			settings[k] = v
		}
		for k, v := range b.Settings {
			settings[k] = v
		}
		old.Settings = settings
		merged[b.Name] = old
	}
	var out []PluginBlock
	for _, b := range merged {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func diagError(diags hcl.Diagnostics) error {
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			if d.Subject != nil {
				return fmt.Errorf("%s: %s: %s", d.Subject, d.Summary, d.Detail)
			}
			return fmt.Errorf("%s: %s", d.Summary, d.Detail)
		}
	}
	return diags
}

// maxImageStoreMB is the largest image_store_mb, policy.MaxImagesMB (the
// largest image allowance a policy can hold).
const maxImageStoreMB = 1 << 40

// Validate checks values that HCL's types cannot.
func (c *Config) Validate() error {
	if c.DataDir == "" || c.RunDir == "" {
		return fmt.Errorf("config: data_dir and run_dir must not be empty")
	}
	if _, err := c.SocketPerm(); err != nil {
		return err
	}
	if _, err := c.RemoteSocketPerm(); err != nil {
		return err
	}
	if _, err := c.parseDurations(); err != nil {
		return err
	}
	if c.ImageStoreMB < 1 || c.ImageStoreMB > maxImageStoreMB {
		return fmt.Errorf("config: image_store_mb must be between 1 and %d, not %d", maxImageStoreMB, c.ImageStoreMB)
	}
	if c.ConsoleLines < 1 || c.ConsoleLines > 1000000 {
		return fmt.Errorf("config: console_lines must be between 1 and 1000000, not %d", c.ConsoleLines)
	}
	if c.ConsoleBytes < 1024 || c.ConsoleBytes > 1<<30 {
		return fmt.Errorf("config: console_bytes must be between 1024 and 1073741824, not %d", c.ConsoleBytes)
	}
	for _, h := range c.AllowedRegistries {
		if strings.Contains(h, "/") {
			return fmt.Errorf("config: allowed_registries: %q is not a registry host (host or host:port, as in registry.example.org or localhost:5000)", h)
		}
		if _, err := oci.ParseReference(h + "/image"); err != nil {
			return fmt.Errorf("config: allowed_registries: %q is not a registry host (host or host:port, as in registry.example.org or localhost:5000)", h)
		}
	}
	found := false
	for _, b := range c.Backends {
		if b.Name == c.DefaultBackend && b.IsEnabled() {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("config: default_backend %q is not an enabled backend", c.DefaultBackend)
	}
	return nil
}

// Network returns the network plugin VMs use, if any is enabled.
func (c *Config) Network() (PluginBlock, bool) {
	for _, n := range c.Networks {
		if n.IsEnabled() {
			return n, true
		}
	}
	return PluginBlock{}, false
}

// SocketPerm parses socket_mode as octal permission bits.
func (c *Config) SocketPerm() (os.FileMode, error) {
	return parsePerm("socket_mode", c.SocketMode)
}

// parsePerm parses the octal permission bits of the setting name.
func parsePerm(name, v string) (os.FileMode, error) {
	m, err := strconv.ParseUint(v, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("config: %s %q is not an octal mode such as \"0600\"", name, v)
	}
	return os.FileMode(m), nil
}

// RemoteSocketPerm parses remote_socket_mode as octal permission bits.
func (c *Config) RemoteSocketPerm() (os.FileMode, error) {
	return parsePerm("remote_socket_mode", c.RemoteSocketMode)
}

// Durations are the duration settings of a configuration, parsed. They
// are fields rather than lookups by HCL name, so that a misspelt setting
// fails to compile instead of reading as zero.
type Durations struct {
	StopTimeout          time.Duration
	RestartBackoffMin    time.Duration
	RestartBackoffMax    time.Duration
	RestartResetAfter    time.Duration
	PluginHealthInterval time.Duration
	StatsInterval        time.Duration
}

// Durations returns the configuration's duration settings. Validate has
// refused a configuration where one does not parse, so here each is a
// positive duration.
func (c *Config) Durations() Durations {
	d, _ := c.parseDurations()
	return d
}

// parseDurations parses every duration setting, naming the first that is
// not a positive duration.
func (c *Config) parseDurations() (Durations, error) {
	var out Durations
	for _, d := range []struct {
		name string
		v    string
		to   *time.Duration
	}{
		{"stop_timeout", c.StopTimeout, &out.StopTimeout},
		{"restart_backoff_min", c.RestartBackoffMin, &out.RestartBackoffMin},
		{"restart_backoff_max", c.RestartBackoffMax, &out.RestartBackoffMax},
		{"restart_reset_after", c.RestartResetAfter, &out.RestartResetAfter},
		{"plugin_health_interval", c.PluginHealthInterval, &out.PluginHealthInterval},
		{"stats_interval", c.StatsInterval, &out.StatsInterval},
	} {
		v, err := parseDuration(d.name, d.v)
		if err != nil {
			return Durations{}, err
		}
		*d.to = v
	}
	return out, nil
}

func parseDuration(name, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("config: %s %q is not a positive duration such as \"5s\"", name, v)
	}
	return d, nil
}
