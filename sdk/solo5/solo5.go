// Package solo5 understands the on-disk and command-line interfaces of Solo5
// unikernels, so that Petrel can check an image before handing it to a tender
// instead of letting the tender fail at boot with a terse message.
//
// It provides three things:
//
//   - Read and ReadFile, which extract the ABI note (target and ABI version)
//     and the application manifest (declared block and network devices) from
//     a unikernel's ELF notes, rejecting hostile or malformed files with a
//     one-line error that wraps a sentinel (ErrNotELF, ErrNotSolo5,
//     ErrUnsupported or ErrMalformed);
//   - Build, which produces a minimal but valid Solo5-style ELF image, so that
//     tests and tools do not need a cross toolchain;
//   - TenderArgs with ParseTenderArgs and Argv, the command line accepted by
//     the upstream solo5-hvt and solo5-spt tenders, plus ValidateDevices,
//     which checks that a configuration attaches exactly the devices an image
//     declares.
package solo5

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error returned by Read that is not an I/O failure of
// the underlying reader wraps exactly one of them, so callers can decide with
// errors.Is whether to blame the file format, the architecture or the bytes.
var (
	// ErrNotELF reports that the input does not start with the ELF magic.
	ErrNotELF = errors.New("not an ELF file")
	// ErrNotSolo5 reports a well-formed ELF file that carries no Solo5 ABI
	// note, e.g. an ordinary Linux program given by mistake.
	ErrNotSolo5 = errors.New("not a Solo5 unikernel")
	// ErrUnsupported reports an ELF file of a class, byte order or machine
	// that Solo5 tenders on Petrel hosts cannot run (only ELF64
	// little-endian x86-64 and aarch64 are accepted).
	ErrUnsupported = errors.New("unsupported ELF image")
	// ErrMalformed reports a truncated or internally inconsistent file,
	// including notes whose sizes point outside their segment and manifests
	// that violate the Solo5 manifest ABI.
	ErrMalformed = errors.New("malformed Solo5 image")
)

// Target is the Solo5 ABI target recorded in an image's ABI note. An image
// can only be run by a tender implementing the same target, so Petrel uses it
// to choose (or refuse) a tender.
type Target uint32

// The Solo5 ABI targets, numbered as in Solo5's elf_abi.h.
const (
	TargetHVT    Target = 1 // hardware virtualized tender (KVM, bhyve, vmm)
	TargetSPT    Target = 2 // sandboxed process tender (seccomp)
	TargetVirtio Target = 3 // virtio-based virtual hardware
	TargetMuen   Target = 4 // Muen separation kernel
	TargetGenode Target = 5 // Genode OS framework
	TargetXen    Target = 6 // Xen PVH
)

var targetNames = map[Target]string{
	TargetHVT:    "hvt",
	TargetSPT:    "spt",
	TargetVirtio: "virtio",
	TargetMuen:   "muen",
	TargetGenode: "genode",
	TargetXen:    "xen",
}

// String returns the target's conventional lower-case name ("hvt", "spt",
// ...), the same spelling used in tender names and configuration files.
func (t Target) String() string {
	if s, ok := targetNames[t]; ok {
		return s
	}
	return fmt.Sprintf("Target(%d)", uint32(t))
}

// Known reports whether t is one of the targets defined by Solo5.
func (t Target) Known() bool {
	_, ok := targetNames[t]
	return ok
}

// ParseTarget converts a target name as written by String back into a
// Target, so configuration can name targets the way Solo5 does.
func ParseTarget(s string) (Target, error) {
	for t, name := range targetNames {
		if s == name {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown Solo5 target %q (want one of hvt, spt, virtio, muen, genode, xen)", s)
}

// DeviceType is the type of a manifest entry, as in Solo5's mft_abi.h.
type DeviceType uint32

// The manifest entry types. DeviceReservedFirst only ever appears as entry 0
// of a manifest; Read validates and then hides it.
const (
	DeviceBlock         DeviceType = 1
	DeviceNet           DeviceType = 2
	DeviceReservedFirst DeviceType = 1 << 30
)

// String returns "block", "net" or "reserved", the words used in tender
// options (--block:, --net:) and in error messages.
func (d DeviceType) String() string {
	switch d {
	case DeviceBlock:
		return "block"
	case DeviceNet:
		return "net"
	case DeviceReservedFirst:
		return "reserved"
	}
	return fmt.Sprintf("DeviceType(%d)", uint32(d))
}

// Device is one device declared in an image's manifest. The name is what the
// tender command line refers to (--net:NAME=..., --block:NAME=...).
type Device struct {
	Name string
	Type DeviceType
}

// MaxManifestEntries is Solo5's MFT_MAX_ENTRIES: the largest number of
// manifest entries, including the reserved entry 0, that a tender accepts.
// An image can therefore declare at most MaxManifestEntries-1 devices.
const MaxManifestEntries = 64

// MaxDeviceNameLen is Solo5's MFT_NAME_MAX, the longest device name in
// characters (the on-disk field also holds the terminating NUL).
const MaxDeviceNameLen = 67

// ValidDeviceName reports whether name is acceptable as a Solo5 device name:
// 1 to 67 characters of [A-Za-z0-9_]. Solo5 device names are used as C
// identifiers and as tender option keys, so anything else is rejected both in
// manifests and on command lines.
func ValidDeviceName(name string) bool {
	if len(name) == 0 || len(name) > MaxDeviceNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		default:
			return false
		}
	}
	return true
}

// deviceNameError explains why name is not a valid device name.
func deviceNameError(name string) error {
	if len(name) == 0 {
		return errors.New("device name is empty")
	}
	if len(name) > MaxDeviceNameLen {
		return fmt.Errorf("device name %q is %d characters, longer than %d", name, len(name), MaxDeviceNameLen)
	}
	return fmt.Errorf("device name %q contains characters other than [A-Za-z0-9_]", name)
}

// joinMessages renders several problems as one line.
func joinMessages(msgs []string) string {
	return strings.Join(msgs, "; ")
}
