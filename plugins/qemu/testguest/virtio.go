// Package testguest builds the tiny guests that Petrel's QEMU backend is
// tested and benchmarked with, so that the tests need no cross toolchain
// and no network access: a Solo5 virtio "unikernel" of a few hundred bytes,
// and a Linux initramfs made of the host's static busybox and the virtio
// modules of the host's cloud kernel.
//
// Both guests print a marker on the serial console and take instructions
// from their command line, so one image serves every test: exit with a
// code, run until stopped, crash, or (Linux) configure a network address.
package testguest

import (
	"fmt"
	"os"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// VirtioMarker is the first console line of the virtio guest.
const VirtioMarker = "PETREL-VIRTIO-UP"

// VirtioABIVersion is the Solo5 ABI version written into the virtio
// guest's ABI note.
const VirtioABIVersion = 1

// Arguments understood by the virtio guest. The guest looks at the first
// '=' in its command line and at the character after it: a digit D makes
// it write D to QEMU's isa-debug-exit device at port 0x501 (where Solo5's
// virtio binding writes), so that QEMU's exit status is (D<<1)|1 and the
// backend reports D; 'i' makes it execute int3 without an
// interrupt table, which a TCG guest turns into a triple fault and a
// software KVM that cannot emulate int3 (kvm_pvm) into a KVM internal
// error; anything else makes it halt forever.
const (
	VirtioRunForever = "run=forever"
	VirtioCrash      = "crash=int3"
)

// VirtioExit returns the argument that makes the virtio guest exit with
// code, a digit.
func VirtioExit(code int) string { return fmt.Sprintf("exit=%d", code) }

// virtioCode is the guest: a multiboot header using the a.out kludge (so
// QEMU loads the file as flat bytes at 1 MiB, whatever the ELF class) and
// 32-bit code that prints VirtioMarker and the multiboot command line on
// COM1 and acts on the command line as described above. Assembly:
//
//	hdr:   .long 0x1BADB002, 0x00010000, -(0x1BADB002+0x00010000)
//	       .long 0x100000, 0x100000, 0, 0, 0x100020
//	start: mov $0x90000,%esp; mov %ebx,%edi; mov $msg,%esi; call puts
//	       testl $4,(%edi); jz halt; mov 16(%edi),%esi; push %esi
//	       call puts; mov $10,%al; call putc; pop %esi
//	scan:  lodsb; test %al,%al; jz halt; cmp $'=',%al; jne scan
//	       lodsb; cmp $'i',%al; je crash; sub $'0',%al; cmp $9,%al; ja halt
//	       nop; nop; mov $0x501,%dx; outb %al,%dx
//	halt:  cli; hlt; jmp halt
//	crash: int3; jmp halt
//	puts:  lodsb; test %al,%al; jz 1f; call putc; jmp puts; 1: ret
//	putc:  mov $0x3f8,%dx; outb %al,%dx; ret
//	msg:   .asciz "PETREL-VIRTIO-UP\n"
var virtioCode = []byte{
	0x02, 0xb0, 0xad, 0x1b, 0x00, 0x00, 0x01, 0x00, 0xfe, 0x4f, 0x51, 0xe4,
	0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x10, 0x00, 0xbc, 0x00, 0x00, 0x09,
	0x00, 0x89, 0xdf, 0xbe, 0x7f, 0x00, 0x10, 0x00, 0xe8, 0x3b, 0x00, 0x00,
	0x00, 0xf7, 0x07, 0x04, 0x00, 0x00, 0x00, 0x74, 0x2c, 0x8b, 0x77, 0x10,
	0x56, 0xe8, 0x2a, 0x00, 0x00, 0x00, 0xb0, 0x0a, 0xe8, 0x30, 0x00, 0x00,
	0x00, 0x5e, 0xac, 0x84, 0xc0, 0x74, 0x16, 0x3c, 0x3d, 0x75, 0xf7, 0xac,
	0x3c, 0x69, 0x74, 0x11, 0x2c, 0x30, 0x3c, 0x09, 0x77, 0x07, 0x90, 0x90,
	0x66, 0xba, 0x01, 0x05, 0xee, 0xfa, 0xf4, 0xeb, 0xfc, 0xcc, 0xeb, 0xf9,
	0xac, 0x84, 0xc0, 0x74, 0x07, 0xe8, 0x03, 0x00, 0x00, 0x00, 0xeb, 0xf4,
	0xc3, 0x66, 0xba, 0xf8, 0x03, 0xee, 0xc3, 0x50, 0x45, 0x54, 0x52, 0x45,
	0x4c, 0x2d, 0x56, 0x49, 0x52, 0x54, 0x49, 0x4f, 0x2d, 0x55, 0x50, 0x0a,
	0x00,
}

// VirtioImage returns a Solo5 virtio image (ABI note target virtio,
// declaring devs in its manifest) that runs the guest described above.
func VirtioImage(devs ...solo5.Device) ([]byte, error) {
	b, err := solo5.Build(solo5.BuildSpec{Target: solo5.TargetVirtio, ABIVersion: VirtioABIVersion, Devices: devs, Code: virtioCode})
	if err != nil {
		return nil, fmt.Errorf("build virtio guest: %w", err)
	}
	return b, nil
}

// WriteVirtioImage writes VirtioImage(devs...) to path.
func WriteVirtioImage(path string, devs ...solo5.Device) error {
	b, err := VirtioImage(devs...)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write virtio guest: %w", err)
	}
	return nil
}
