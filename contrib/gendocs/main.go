// Command gendocs writes Petrel's generated documentation that is kept in
// the repository: the configuration reference, from petreld's
// configuration schema and embedded defaults. A test in core/config fails
// when the committed copy differs from what this writes.
//
//	go run ./contrib/gendocs [FILE]   (default contrib/docs/configuration.md)
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/petrel-vmm/petrel/core/config"
)

func main() {
	out := filepath.Join("contrib", "docs", "configuration.md")
	if len(os.Args) > 2 {
		fmt.Fprintln(os.Stderr, "usage: gendocs [FILE]")
		os.Exit(2)
	}
	if len(os.Args) == 2 {
		out = os.Args[1]
	}
	if err := run(out); err != nil {
		fmt.Fprintf(os.Stderr, "gendocs: %v\n", err)
		os.Exit(1)
	}
}

func run(out string) error {
	ref, err := config.Reference()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(out), err)
	}
	if err := os.WriteFile(out, []byte(ref), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}
