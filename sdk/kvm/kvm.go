// Package kvm tells whether this host's KVM can run virtual machines.
//
// The presence of a kvm module, or even of the /dev/kvm node, says little:
// the node may be missing while the module is loaded (a VM without nested
// virtualization), closed to the caller, or served by a KVM that refuses to
// create VMs. Probe therefore does what a tender does first: it opens the
// device, checks the API version and creates (and releases) a VM. Backends,
// petrel doctor and tests all decide with it, so they agree.
package kvm

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Device is the KVM device node.
const Device = "/dev/kvm"

// APIVersion is the only stable KVM API version (KVM_GET_API_VERSION).
const APIVersion = 12

// ioctl request numbers from <linux/kvm.h>.
const (
	getAPIVersion = 0xae00
	createVM      = 0xae01
)

// Probe reports nil when KVM can create a virtual machine for this
// process, and otherwise an error that says which step failed and why,
// e.g. "open /dev/kvm: no such file or directory".
func Probe() error {
	fd, err := unix.Open(Device, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", Device, err)
	}
	defer unix.Close(fd)
	v, errno := ioctl(fd, getAPIVersion)
	if errno != 0 {
		return fmt.Errorf("%s: KVM_GET_API_VERSION: %w", Device, errno)
	}
	if v != APIVersion {
		return fmt.Errorf("%s: KVM API version %d, want %d", Device, v, APIVersion)
	}
	vm, errno := ioctl(fd, createVM)
	if errno != 0 {
		return fmt.Errorf("%s: KVM_CREATE_VM: %w", Device, errno)
	}
	unix.Close(int(vm))
	return nil
}

// ioctl issues a KVM ioctl without argument, again when a signal
// interrupted it (creating a VM can take long enough for the Go runtime's
// preemption signal to arrive).
func ioctl(fd int, req uintptr) (uintptr, unix.Errno) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, 0)
		if errno != unix.EINTR {
			return r, errno
		}
	}
}
