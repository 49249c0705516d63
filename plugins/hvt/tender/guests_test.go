package tender

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/kvm"
)

// Guests are built once, on first use, into a temporary directory.
var guests struct {
	once sync.Once
	dir  string
	skip string
	err  string
}

// guestsSource is contrib/guests relative to this package.
const guestsSource = "../../../contrib/guests"

// guest returns the path of the built guest name, skipping the test (with
// the reason) when the host lacks /dev/kvm, make or gcc.
func guest(t testing.TB, name string) string {
	t.Helper()
	guests.once.Do(buildGuests)
	if guests.err != "" {
		t.Fatal(guests.err)
	}
	if guests.skip != "" {
		t.Skip(guests.skip)
	}
	return filepath.Join(guests.dir, name+".hvt")
}

// buildGuests runs make in contrib/guests with OUT set to a temporary
// directory, or records why end-to-end tests must be skipped.
func buildGuests() {
	if err := kvm.Probe(); err != nil {
		guests.skip = fmt.Sprintf("end-to-end tests of the hvt tender need a usable KVM: %v", err)
		return
	}
	for _, tool := range []string{"make", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			guests.skip = fmt.Sprintf("end-to-end tests need %s to build the test guests: %v", tool, err)
			return
		}
	}
	dir, err := os.MkdirTemp("", "petrel-guests-")
	if err != nil {
		guests.skip = fmt.Sprintf("temporary directory for guests: %v", err)
		return
	}
	guests.dir = dir
	out, err := exec.Command("make", "-s", "-C", guestsSource, "OUT="+dir, "CC=gcc").CombinedOutput()
	if err != nil {
		// A build failure is a real failure, not a missing tool: the tests
		// fail with it instead of skipping.
		guests.err = fmt.Sprintf("make -C %s failed: %v\n%s", guestsSource, err, out)
	}
}

// cleanupGuests removes the built guests, if any.
func cleanupGuests() {
	if guests.dir != "" {
		os.RemoveAll(guests.dir)
	}
}
