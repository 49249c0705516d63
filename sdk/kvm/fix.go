package kvm

import (
	"errors"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// cpuinfo is where Linux lists the CPU's features; a variable so that
// tests can point it at a fixture.
var cpuinfo = "/proc/cpuinfo"

// Fix returns what makes KVM usable after Probe failed with err, in one
// command or setting where there is one, so that a backend's fingerprint
// and petrel doctor give the same advice: load the module of this CPU's
// vendor when the device is missing (or enable virtualization when the
// CPU offers none), give petreld the device when it may not open it. It
// returns "" when it knows no fix (nil err included).
func Fix(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV):
		switch cpuVirtualization() {
		case "vmx":
			return "modprobe kvm_intel"
		case "svm":
			return "modprobe kvm_amd"
		}
		return "enable virtualization (VT-x or AMD-V) in the firmware, or nested virtualization in the hypervisor running this host"
	case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
		return "run petreld as root with /dev/kvm allowed (DeviceAllow=/dev/kvm rw in petreld.service)"
	}
	return ""
}

// cpuVirtualization returns the CPU's hardware virtualization flag, "vmx"
// (Intel) or "svm" (AMD), or "" when it shows neither.
func cpuVirtualization() string {
	data, err := os.ReadFile(cpuinfo)
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(data)) {
		key, flags, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(flags) {
			if f == "vmx" || f == "svm" {
				return f
			}
		}
		return ""
	}
	return ""
}
