// Package docs_test keeps architecture.md true: its pictures name every
// binary and every package of the module, and the import rules it states
// hold for the code as it is.
package docs_test

import (
	"bufio"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/petrel-vmm/petrel/"

// pkg is one package of the module as go list sees it.
type pkg struct {
	dir  string   // relative to the module root, slash-separated
	name string   // package name
	deps []string // every package it depends on, transitively, without tests
}

// modulePackages lists the module's packages.
func modulePackages(t *testing.T) []pkg {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-e", "-f", "{{.Dir}}|{{.Name}}|{{join .Deps \" \"}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.SplitN(line, "|", 3)
		rel, err := filepath.Rel(root, f[0])
		if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, pkg{dir: filepath.ToSlash(rel), name: f[1], deps: strings.Fields(f[2])})
	}
	return pkgs
}

// codeBlocks returns the fenced blocks of architecture.md under the
// heading named title.
func codeBlock(t *testing.T, title string) []string {
	t.Helper()
	f, err := os.Open("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	inSection, inBlock := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "## "):
			inSection = l == "## "+title
		case inSection && strings.HasPrefix(l, "```"):
			if inBlock {
				return lines
			}
			inBlock = true
		case inBlock:
			lines = append(lines, l)
		}
	}
	t.Fatalf("architecture.md has no code block under %q", title)
	return nil
}

// documentedPackages reads the package picture: each line names a
// directory relative to the entry one level less indented above it.
func documentedPackages(t *testing.T) map[string]bool {
	t.Helper()
	paths := map[string]bool{}
	var stack []string // stack[i] is the directory at indentation 2*i
	for _, l := range codeBlock(t, "Packages") {
		trimmed := strings.TrimLeft(l, " ")
		if trimmed == "" {
			continue
		}
		depth := (len(l) - len(trimmed)) / 2
		if depth > len(stack) {
			t.Fatalf("architecture.md: %q is indented deeper than its parent", l)
		}
		name := strings.TrimSuffix(strings.Fields(trimmed)[0], "/")
		stack = append(stack[:depth], name)
		paths[path.Join(stack...)] = true
	}
	return paths
}

func TestPackagePictureNamesEveryPackage(t *testing.T) {
	documented := documentedPackages(t)
	exists := map[string]bool{}
	for _, p := range modulePackages(t) {
		for d := p.dir; d != "."; d = path.Dir(d) {
			exists[d] = true
		}
		if !documented[p.dir] {
			t.Errorf("package %s is missing from the package picture in architecture.md", p.dir)
		}
	}
	for d := range documented {
		if !exists[d] {
			t.Errorf("architecture.md names %s, which holds no package", d)
		}
	}
}

func TestProcessPictureNamesEveryBinary(t *testing.T) {
	picture := strings.Join(codeBlock(t, "Processes"), "\n")
	var missing []string
	for _, p := range modulePackages(t) {
		if p.name != "main" {
			continue
		}
		var binary string
		switch {
		case strings.HasPrefix(p.dir, "cmd/"):
			binary = path.Base(p.dir)
		case strings.HasPrefix(p.dir, "plugins/"):
			binary = "petrel-plugin-" + path.Base(p.dir)
		default:
			continue // examples and build tools, not part of a host
		}
		if !regexp.MustCompile(`(^|[^\w-])` + regexp.QuoteMeta(binary) + `($|[^\w-])`).MatchString(picture) {
			missing = append(missing, binary)
		}
	}
	sort.Strings(missing)
	for _, b := range missing {
		t.Errorf("binary %s is missing from the process picture in architecture.md", b)
	}
}

// allowed says which top-level trees a package under from may depend on.
func allowed(from string) []string {
	switch {
	case strings.HasPrefix(from, "sdk/"):
		return []string{"sdk/"}
	case strings.HasPrefix(from, "plugins/"):
		return []string{"sdk/", "plugins/"}
	case strings.HasPrefix(from, "contrib/") && strings.HasSuffix(strings.SplitN(from, "/", 3)[1], "-plugin-example"):
		return []string{"sdk/"}
	case strings.HasPrefix(from, "core/"):
		return []string{"sdk/", "core/", "plugins/catalog/"}
	case strings.HasPrefix(from, "cmd/"):
		return []string{"sdk/", "core/", "cmd/", "plugins/catalog/"}
	}
	return nil
}

func TestImportRules(t *testing.T) {
	for _, p := range modulePackages(t) {
		ok := allowed(p.dir + "/")
		if ok == nil {
			continue
		}
	deps:
		for _, d := range p.deps {
			rel, inModule := strings.CutPrefix(d, module)
			if !inModule {
				continue
			}
			for _, prefix := range ok {
				if strings.HasPrefix(rel+"/", prefix) {
					continue deps
				}
			}
			t.Errorf("%s depends on %s; it may depend only on %s", p.dir, rel, strings.Join(ok, ", "))
		}
	}
}
