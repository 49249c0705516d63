package hypervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// idRE is the form of the runtime ids petreld gives VMs: short and safe
// as a file name.
var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// RunDir returns the runtime directory of VM id under a backend's
// runDir. Backends keep everything about a VM there, so that any plugin
// instance can find it by id alone.
func RunDir(runDir, id string) (string, error) {
	if !idRE.MatchString(id) {
		return "", fmt.Errorf("%w: VM id %q is not of the form [a-z0-9-]{1,64}", ErrInvalid, id)
	}
	if runDir == "" {
		return "", fmt.Errorf("%w: backend not configured", ErrUnavailable)
	}
	return filepath.Join(runDir, id), nil
}

// ExistingRunDir is RunDir for a VM that must exist; a missing directory
// is ErrUnknownVM.
func ExistingRunDir(runDir, id string) (string, error) {
	d, err := RunDir(runDir, id)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(d); err != nil {
		return "", fmt.Errorf("%w: %s", ErrUnknownVM, id)
	}
	return d, nil
}

// ValidID reports whether id has the form of a runtime id.
func ValidID(id string) bool { return idRE.MatchString(id) }
