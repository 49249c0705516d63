package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// committedReference is the reference kept in the repository.
var committedReference = filepath.Join("..", "..", "contrib", "docs", "configuration.md")

func TestReferenceCurrent(t *testing.T) {
	want, err := Reference()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(committedReference)
	if err != nil {
		t.Fatalf("%v (run go run ./contrib/gendocs)", err)
	}
	if string(got) != want {
		t.Fatalf("contrib/docs/configuration.md is stale: run go run ./contrib/gendocs")
	}
}

func TestReferenceCoversSchema(t *testing.T) {
	ref, err := Reference()
	if err != nil {
		t.Fatal(err)
	}
	attrs, blocks := schema(reflectConfig())
	if len(attrs) < 10 || len(blocks) != 3 {
		t.Fatalf("schema has %d attributes and %d blocks", len(attrs), len(blocks))
	}
	for _, a := range attrs {
		if !strings.Contains(ref, "### `"+a.name+"`\n") {
			t.Errorf("no section for %s", a.name)
		}
	}
	for _, b := range blocks {
		if !strings.Contains(ref, "### `"+b.name+" \"NAME\" { … }`") {
			t.Errorf("no section for block %s", b.name)
		}
	}
	for _, want := range []string{
		"| [`stop_timeout`](#stop_timeout) | duration (string such as \"5s\") | `\"5s\"` |",
		"| [`console_lines`](#console_lines) | number | `1000` |",
		"| `settings` | map of strings |",
		"```hcl\nbackend \"hvt\" {\n  enabled = true\n",
		"```hcl\nmetrics \"influx\" {\n",
		"Console ring per VM, kept by its shim and by petreld.",
	} {
		if !strings.Contains(ref, want) {
			t.Errorf("reference lacks %q", want)
		}
	}
}

func TestReferenceRefusesUndocumented(t *testing.T) {
	src := strings.Replace(Defaults, "# Backend used when `petrel create` names none.\n", "", 1)
	if src == Defaults {
		t.Fatal("defaults.hcl changed: update this test's comment to remove")
	}
	if _, err := reference(src); err == nil || !strings.Contains(err.Error(), "default_backend") {
		t.Fatalf("an undocumented setting gave %v", err)
	}
	src = strings.Replace(Defaults, `stats_interval = "10s"`, "", 1)
	if _, err := reference(src); err == nil || !strings.Contains(err.Error(), "stats_interval") {
		t.Fatalf("a setting missing from the defaults gave %v", err)
	}
	if _, err := reference("a = "); err == nil {
		t.Fatal("bad HCL was accepted")
	}
}

func TestRenderComment(t *testing.T) {
	in := "# First line\n# continues.\n#\n# Example:\n#   a = 1\n#\n#   b {\n#     c = 2\n#   }\n# After."
	want := "First line continues.\n\nExample:\n\n```hcl\na = 1\n\nb {\n  c = 2\n}\n```\n\nAfter.\n\n"
	if got := renderComment(in); got != want {
		t.Errorf("renderComment:\n%q\nwant\n%q", got, want)
	}
	if got := renderComment("# text\n#   code"); got != "text\n\n```hcl\ncode\n```\n\n" {
		t.Errorf("trailing code: %q", got)
	}
	if got := exampleType("# e.g.\n#   metrics \"x\" {\n#   }"); got != "metrics" {
		t.Errorf("exampleType = %q", got)
	}
}

func reflectConfig() reflect.Type { return reflect.TypeOf(Config{}) }
