package kvm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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

func TestFix(t *testing.T) {
	dir := t.TempDir()
	old := cpuinfo
	defer func() { cpuinfo = old }()
	missing := fmt.Errorf("open %s: %w", Device, unix.ENOENT)
	for flags, want := range map[string]string{
		"fpu vme vmx sse": "modprobe kvm_intel",
		"fpu svm sse":     "modprobe kvm_amd",
		"fpu sse":         "enable virtualization (VT-x or AMD-V) in the firmware",
	} {
		cpuinfo = filepath.Join(dir, "cpuinfo")
		if err := os.WriteFile(cpuinfo, []byte("processor\t: 0\nflags\t\t: "+flags+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := Fix(missing); !strings.HasPrefix(got, want) {
			t.Errorf("flags %q: Fix = %q, want %q", flags, got, want)
		}
	}
	if got := Fix(fmt.Errorf("open %s: %w", Device, unix.EACCES)); !strings.Contains(got, "DeviceAllow=/dev/kvm rw") {
		t.Errorf("permission denied: Fix = %q", got)
	}
	if got := Fix(nil); got != "" {
		t.Errorf("Fix(nil) = %q", got)
	}
}
