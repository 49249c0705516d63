package kvm

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestProbeAgreesWithTheDevice checks Probe against the device itself: a
// host whose /dev/kvm cannot be opened must get an error naming the open,
// and a host where it opens must get either nil or an error from a later
// step, never from the open.
func TestProbeAgreesWithTheDevice(t *testing.T) {
	err := Probe()
	f, openErr := os.OpenFile(Device, os.O_RDWR, 0)
	if openErr != nil {
		if err == nil || !strings.HasPrefix(err.Error(), "open /dev/kvm: ") || !errors.Is(err, errors.Unwrap(openErr.(*os.PathError))) {
			t.Fatalf("Probe() = %v; /dev/kvm does not open (%v)", err, openErr)
		}
		return
	}
	f.Close()
	if err != nil && strings.HasPrefix(err.Error(), "open ") {
		t.Fatalf("Probe() = %v although /dev/kvm opens", err)
	}
	t.Logf("Probe() = %v", err)
}
