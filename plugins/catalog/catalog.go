// Package catalog is the list of Petrel's own plugins, kept in
// plugins.txt beside it: each plugin's name, kind, whether petreld's
// embedded defaults enable it and how it is built. The Makefile reads the
// same file, so the build, the Debian package, petrel doctor and the
// integration tests all follow one list, and a test holds the embedded
// defaults to it: adding a plugin is adding its directory and one line.
package catalog

import (
	_ "embed"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

//go:embed plugins.txt
var listFile string

// Kind is what a plugin does for petreld, named as petreld reports it
// (petrel plugins, the daemon API's Plugin.kind).
type Kind string

// The kinds of plugin petreld runs.
const (
	// Hypervisor plugins run VMs; petreld calls them backends.
	Hypervisor Kind = "hypervisor"
	// Network plugins attach VMs to bridges.
	Network Kind = "network"
	// Metrics plugins are sinks for statistics batches.
	Metrics Kind = "metrics"
)

// configBlocks names, for each kind, the block of petreld's configuration
// that enables and configures a plugin of that kind.
var configBlocks = map[Kind]string{Hypervisor: "backend", Network: "network", Metrics: "metrics"}

// Plugin is one of Petrel's own plugins.
type Plugin struct {
	// Name is the plugin's name: the suffix of its binary, the directory
	// of its main package under plugins/ and the label of its
	// configuration block.
	Name string
	// Kind is what the plugin does.
	Kind Kind
	// Default is whether petreld's embedded defaults enable the plugin.
	Default bool
	// BuildMode is go build's -buildmode for the plugin: "default", or
	// "pie" for one that must be position-independent.
	BuildMode string
}

// Binary is the plugin's executable, which petreld looks for in its
// plugin directory.
func (p Plugin) Binary() string { return "petrel-plugin-" + p.Name }

// Package is the plugin's main package, relative to the repository's root
// (go build's form, with a leading "./").
func (p Plugin) Package() string { return "./plugins/" + p.Name }

// BuildFlags are the go build flags the plugin needs besides the output
// and the package.
func (p Plugin) BuildFlags() []string { return []string{"-buildmode=" + p.BuildMode} }

// ConfigBlock is the type of the configuration block that enables and
// configures the plugin: backend, network or metrics.
func (p Plugin) ConfigBlock() string { return configBlocks[p.Kind] }

// plugins is plugins.txt, read once: a malformed file is a build mistake
// that TestList reports, and no binary built from it may run.
var plugins = mustParse(listFile)

// All returns every plugin, in the list's order.
func All() []Plugin { return slices.Clone(plugins) }

// OfKind returns the plugins of one kind, in the list's order.
func OfKind(k Kind) []Plugin {
	var out []Plugin
	for _, p := range plugins {
		if p.Kind == k {
			out = append(out, p)
		}
	}
	return out
}

// Lookup returns the plugin with this name, and whether it is one of
// Petrel's own.
func Lookup(name string) (Plugin, bool) {
	for _, p := range plugins {
		if p.Name == name {
			return p, true
		}
	}
	return Plugin{}, false
}

func mustParse(text string) []Plugin {
	ps, err := parse(text)
	if err != nil {
		panic(fmt.Sprintf("plugins/catalog/plugins.txt: %v", err))
	}
	return ps
}

// nameRE is what a plugin name may be: a label of a petreld configuration
// block and part of a file name, which the Makefile's reading of the list
// also relies on (its lines start with a lower-case letter or a digit).
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// parse reads the list: one plugin a line, as "name kind default
// buildmode"; blank lines and lines starting with # are skipped.
func parse(text string) ([]Plugin, error) {
	var out []Plugin
	for i, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 4 {
			return nil, fmt.Errorf("line %d: %d fields, want 4 (name kind default buildmode)", i+1, len(f))
		}
		p := Plugin{Name: f[0], Kind: Kind(f[1]), BuildMode: f[3]}
		if !nameRE.MatchString(p.Name) {
			return nil, fmt.Errorf("line %d: plugin name %q is not lower-case letters, digits and dashes", i+1, p.Name)
		}
		if _, ok := configBlocks[p.Kind]; !ok {
			return nil, fmt.Errorf("line %d: %s: kind %q is not hypervisor, network or metrics", i+1, p.Name, p.Kind)
		}
		switch f[2] {
		case "enabled":
			p.Default = true
		case "disabled":
		default:
			return nil, fmt.Errorf("line %d: %s: default %q is not enabled or disabled", i+1, p.Name, f[2])
		}
		if p.BuildMode != "default" && p.BuildMode != "pie" {
			return nil, fmt.Errorf("line %d: %s: buildmode %q is not default or pie", i+1, p.Name, p.BuildMode)
		}
		if slices.ContainsFunc(out, func(q Plugin) bool { return q.Name == p.Name }) {
			return nil, fmt.Errorf("line %d: %s is listed twice", i+1, p.Name)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no plugins listed")
	}
	return out, nil
}
