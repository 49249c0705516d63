package sdktest

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/petrel-vmm/petrel/sdk/shim"
)

// EnvRunShim makes MaybeRunShim act as petrel-shim.
const EnvRunShim = "PETREL_SDKTEST_SHIM"

// MaybeRunShim runs the test binary as petrel-shim when EnvRunShim is
// set, and otherwise returns. Call it first thing in TestMain, so that
// backend tests need no prebuilt shim binary.
func MaybeRunShim() {
	if os.Getenv(EnvRunShim) == "" {
		return
	}
	os.Exit(shim.Main(os.Args[1:]))
}

// WriteShimWrapper writes an executable "petrel-shim" script in dir that
// runs the current test binary as the shim, and returns its path.
func WriteShimWrapper(dir string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "petrel-shim")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 exec %q \"$@\"\n", EnvRunShim, exe)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		return "", fmt.Errorf("write shim wrapper: %w", err)
	}
	return p, nil
}
