package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/core/config"
)

func TestRun(t *testing.T) {
	out := filepath.Join(t.TempDir(), "docs", "configuration.md")
	if err := run(out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := config.Reference()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatal("written reference differs from config.Reference")
	}
	if err := run(filepath.Join(out, "below-a-file")); err == nil {
		t.Fatal("writing below a file succeeded")
	}
}
