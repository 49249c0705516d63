// Package sdk_test guards the SDK's boundary: plugin authors import sdk/
// and nothing else of Petrel, so nothing under sdk/ may depend on core/,
// and Petrel's own plugins and the example plugins in contrib/ hold
// themselves to the same rule.
package sdk_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/petrel-vmm/petrel/"

func deps(t *testing.T, pattern string) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps=false", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, pattern).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pattern, err, out)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			m[f[0]] = f[1:]
		}
	}
	return m
}

func TestSDKDoesNotImportCore(t *testing.T) {
	for pkg, ds := range deps(t, module+"sdk/...") {
		for _, d := range ds {
			if strings.HasPrefix(d, module+"core/") || strings.HasPrefix(d, module+"plugins/") || strings.HasPrefix(d, module+"cmd/") {
				t.Errorf("%s depends on %s; sdk/ may only depend on sdk/", pkg, d)
			}
		}
	}
}

func TestPluginsImportOnlySDK(t *testing.T) {
	for pkg, ds := range deps(t, module+"plugins/...") {
		for _, d := range ds {
			if strings.HasPrefix(d, module) && !strings.HasPrefix(d, module+"sdk/") && !strings.HasPrefix(d, module+"plugins/") {
				t.Errorf("%s depends on %s; plugins may only depend on sdk/", pkg, d)
			}
		}
	}
}

// TestExamplePluginsImportOnlySDK covers contrib's example plugins
// (contrib/*-plugin-example), which stand for third-party plugins: they
// show what a plugin can be built from, and that is sdk/ alone.
func TestExamplePluginsImportOnlySDK(t *testing.T) {
	n := 0
	for pkg, ds := range deps(t, module+"contrib/...") {
		if !strings.HasSuffix(pkg, "-plugin-example") {
			continue
		}
		n++
		for _, d := range ds {
			if strings.HasPrefix(d, module) && !strings.HasPrefix(d, module+"sdk/") {
				t.Errorf("%s depends on %s; example plugins may only depend on sdk/", pkg, d)
			}
		}
	}
	if n == 0 {
		t.Fatal("no contrib/*-plugin-example package found")
	}
}
