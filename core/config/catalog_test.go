package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/plugins/catalog"
)

// TestDefaultsFollowCatalog: the embedded defaults (defaults.hcl, which
// is written by hand for its comments) enable exactly the plugins the
// catalog (plugins/catalog/plugins.txt) says they enable, each in a block
// of its kind, name no plugin the catalog lacks, and default to a backend
// they enable.
func TestDefaultsFollowCatalog(t *testing.T) {
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range defaultsProblems(cfg, catalog.All()) {
		t.Error(p)
	}
}

// TestDefaultsProblemsFound: the check above fails for a plugin added to
// the catalog as enabled by default but missing from defaults.hcl, and
// for one the defaults enable although the catalog says they do not.
func TestDefaultsProblemsFound(t *testing.T) {
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	fake := append(catalog.All(), catalog.Plugin{Name: "fake", Kind: catalog.Hypervisor, Default: true, BuildMode: "default"})
	if ps := defaultsProblems(cfg, fake); !mentions(ps, `fake is enabled by default in the catalog, but defaults.hcl has no enabled backend "fake" block`) {
		t.Errorf("with a fake default plugin: %q", ps)
	}
	var off []catalog.Plugin
	for _, p := range catalog.All() {
		if p.Name == "bridge" {
			p.Default = false
		}
		off = append(off, p)
	}
	if ps := defaultsProblems(cfg, off); !mentions(ps, `defaults.hcl enables network "bridge", which the catalog says is disabled by default`) {
		t.Errorf("with bridge disabled in the catalog: %q", ps)
	}
}

// mentions reports whether one of the problems says want.
func mentions(problems []string, want string) bool {
	for _, p := range problems {
		if strings.Contains(p, want) {
			return true
		}
	}
	return false
}

// defaultsProblems says where the defaults cfg and the catalog list
// disagree.
func defaultsProblems(cfg *Config, list []catalog.Plugin) []string {
	var problems []string
	enabled := map[string]string{} // "block/name" -> "" for every block, "on" when enabled
	for _, set := range []struct {
		block  string
		blocks []PluginBlock
	}{{"backend", cfg.Backends}, {"network", cfg.Networks}, {"metrics", cfg.Metrics}} {
		for _, b := range set.blocks {
			key := set.block + "/" + b.Name
			enabled[key] = ""
			if b.IsEnabled() {
				enabled[key] = "on"
			}
			p, ok := catalog.Plugin{}, false
			for _, q := range list {
				if q.Name == b.Name {
					p, ok = q, true
				}
			}
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("defaults.hcl has a %s %q block, but the catalog lists no plugin %s", set.block, b.Name, b.Name))
			case p.ConfigBlock() != set.block:
				problems = append(problems, fmt.Sprintf("defaults.hcl configures %s in a %s block, but it is a %s plugin (a %s block)", b.Name, set.block, p.Kind, p.ConfigBlock()))
			case b.IsEnabled() && !p.Default:
				problems = append(problems, fmt.Sprintf("defaults.hcl enables %s %q, which the catalog says is disabled by default", set.block, b.Name))
			}
		}
	}
	for _, p := range list {
		if p.Default && enabled[p.ConfigBlock()+"/"+p.Name] != "on" {
			problems = append(problems, fmt.Sprintf("%s is enabled by default in the catalog, but defaults.hcl has no enabled %s %q block", p.Name, p.ConfigBlock(), p.Name))
		}
	}
	def, ok := catalog.Plugin{}, false
	for _, p := range list {
		if p.Name == cfg.DefaultBackend {
			def, ok = p, true
		}
	}
	if !ok || def.Kind != catalog.Hypervisor || !def.Default {
		problems = append(problems, fmt.Sprintf("default_backend %q is not a hypervisor plugin the catalog enables by default", cfg.DefaultBackend))
	}
	return problems
}
