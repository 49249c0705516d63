package catalog

import (
	"fmt"
	"go/build"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListMatchesPluginDirectories: every plugin listed has its main
// package in plugins/NAME, and every main package under plugins/ is
// listed, so that a new plugin the list lacks is neither built nor
// packaged without this test failing.
func TestListMatchesPluginDirectories(t *testing.T) {
	problems, err := listProblems(All())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestListProblemsFound: the check above notices a listed plugin without
// a directory (a fake entry) and a plugin directory the list lacks.
func TestListProblemsFound(t *testing.T) {
	fake := append(All(), Plugin{Name: "nosuchplugin", Kind: Hypervisor, BuildMode: "default"})
	if problems, err := listProblems(fake); err != nil || !mentions(problems, "nosuchplugin is listed") {
		t.Errorf("with a fake entry: %q %v", problems, err)
	}
	var short []Plugin
	for _, p := range All() {
		if p.Name != "qemu" {
			short = append(short, p)
		}
	}
	if problems, err := listProblems(short); err != nil || !mentions(problems, "plugins/qemu is a command but not in") {
		t.Errorf("without qemu: %q %v", problems, err)
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

// listProblems says where list and the main packages under plugins/
// disagree.
func listProblems(list []Plugin) ([]string, error) {
	var problems []string
	listed := map[string]bool{}
	for _, p := range list {
		listed[p.Name] = true
		pkg, err := build.ImportDir(filepath.Join("..", p.Name), 0)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s is listed, but %s holds no Go package: %v", p.Name, p.Package(), err))
		case pkg.Name != "main":
			problems = append(problems, fmt.Sprintf("%s is listed, but %s is package %s, not a command", p.Name, p.Package(), pkg.Name))
		}
	}
	dirs, err := os.ReadDir("..")
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		if !d.IsDir() || listed[d.Name()] {
			continue
		}
		if pkg, err := build.ImportDir(filepath.Join("..", d.Name()), 0); err == nil && pkg.Name == "main" {
			problems = append(problems, fmt.Sprintf("plugins/%s is a command but not in plugins/catalog/plugins.txt: list it, so that it is built, packaged and checked", d.Name()))
		}
	}
	return problems, nil
}

func TestParse(t *testing.T) {
	ps, err := parse("# comment\n\nhvt hypervisor enabled default\n  spt  hypervisor  enabled  pie  \ninflux metrics disabled default\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 || ps[1] != (Plugin{Name: "spt", Kind: Hypervisor, Default: true, BuildMode: "pie"}) || ps[2].Default {
		t.Fatalf("parsed %+v", ps)
	}
	if b, blk, pkg := ps[1].Binary(), ps[2].ConfigBlock(), ps[0].Package(); b != "petrel-plugin-spt" || blk != "metrics" || pkg != "./plugins/hvt" {
		t.Errorf("Binary %q, ConfigBlock %q, Package %q", b, blk, pkg)
	}
	for text, want := range map[string]string{
		"hvt hypervisor enabled":                                "3 fields",
		"Hvt hypervisor enabled default":                        "not lower-case",
		"hvt tender enabled default":                            "kind \"tender\"",
		"hvt hypervisor yes default":                            "default \"yes\"",
		"hvt hypervisor enabled static":                         "buildmode \"static\"",
		"a network enabled default\na metrics disabled default": "listed twice",
		"# nothing\n":                                           "no plugins",
	} {
		if _, err := parse(text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parse(%q) = %v, want an error with %q", text, err, want)
		}
	}
}

// TestList: the embedded list parses (else every binary importing this
// package panics at start) and names what petreld needs by default.
func TestList(t *testing.T) {
	if _, err := parse(listFile); err != nil {
		t.Fatal(err)
	}
	if len(OfKind(Hypervisor)) == 0 || len(OfKind(Network)) == 0 {
		t.Errorf("the list has no hypervisor or no network plugin: %+v", All())
	}
	if p, ok := Lookup("spt"); !ok || p.BuildMode != "pie" {
		t.Errorf("spt: %+v %v; its built-in tender must be position-independent", p, ok)
	}
}
