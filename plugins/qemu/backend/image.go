package backend

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// Guest targets, as reported by Capabilities and Validate.
const (
	// TargetVirtio is a Solo5 unikernel built for the virtio target.
	TargetVirtio = "virtio"
	// TargetLinux is a Linux kernel (or another kernel QEMU boots with
	// -kernel) taking an initrd and a kernel command line.
	TargetLinux = "linux"
)

// guestImage is what inspectImage found in an image file.
type guestImage struct {
	// target is TargetVirtio or TargetLinux.
	target string
	// format describes the file for messages: "Solo5 virtio unikernel",
	// "bzImage", "PVH ELF kernel", "multiboot kernel".
	format string
	// solo5 is the parsed Solo5 image, for TargetVirtio.
	solo5 *solo5.Image
}

// errRefused marks an image the backend cannot run; its message is the
// reason given to the user.
var errRefused = errors.New("image refused")

func refusedf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errRefused, fmt.Sprintf(format, args...))
}

// inspectImage reads the image at path. A Solo5 image must be built for
// the virtio target (an hvt or spt image is refused with the backend that
// runs it); any other file must be a kernel QEMU can boot with -kernel: a
// bzImage, an ELF kernel with a PVH entry note, or a multiboot kernel.
func inspectImage(path string) (guestImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return guestImage{}, refusedf("image: %v", err)
	}
	defer f.Close()
	im, err := solo5.Read(f)
	switch {
	case err == nil:
		if im.Target != solo5.TargetVirtio {
			return guestImage{}, refusedf("image is a Solo5 %s unikernel; the qemu backend runs only Solo5 virtio unikernels and Linux kernels (use the %s backend, or rebuild the unikernel for virtio)", im.Target, im.Target)
		}
		return guestImage{target: TargetVirtio, format: "Solo5 virtio unikernel", solo5: im}, nil
	case errors.Is(err, solo5.ErrMalformed):
		return guestImage{}, refusedf("image %s: %v", path, err)
	case errors.Is(err, solo5.ErrNotELF), errors.Is(err, solo5.ErrNotSolo5), errors.Is(err, solo5.ErrUnsupported):
	default:
		return guestImage{}, refusedf("image %s: %v", path, err)
	}
	format, err := kernelFormat(f)
	if err != nil {
		return guestImage{}, refusedf("image %s: %v", path, err)
	}
	if format == "" {
		return guestImage{}, refusedf("image %s is neither a Solo5 virtio unikernel nor a kernel QEMU can boot (bzImage, PVH ELF or multiboot)", path)
	}
	return guestImage{target: TargetLinux, format: format}, nil
}

// multibootSearch is how far into a file a multiboot header may start.
const multibootSearch = 8192

// kernelFormat tells which kind of kernel r holds, or "" when none.
func kernelFormat(r io.ReaderAt) (string, error) {
	head := make([]byte, multibootSearch)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read: %w", err)
	}
	head = head[:n]
	// Linux x86 boot protocol: "HdrS" at 0x202 and the boot flag 0xAA55
	// at 0x1FE.
	if len(head) >= 0x206 && string(head[0x202:0x206]) == "HdrS" && binary.LittleEndian.Uint16(head[0x1fe:]) == 0xaa55 {
		return "bzImage", nil
	}
	if bytes.HasPrefix(head, []byte(elf.ELFMAG)) && hasPVHNote(r) {
		return "PVH ELF kernel", nil
	}
	for off := 0; off+12 <= len(head); off += 4 {
		magic := binary.LittleEndian.Uint32(head[off:])
		if magic != 0x1BADB002 {
			continue
		}
		flags := binary.LittleEndian.Uint32(head[off+4:])
		sum := binary.LittleEndian.Uint32(head[off+8:])
		if magic+flags+sum == 0 {
			return "multiboot kernel", nil
		}
	}
	return "", nil
}

// Xen's PHYS32_ENTRY note is what QEMU looks for to boot an ELF kernel
// through PVH.
const (
	xenNoteName       = "Xen"
	xenElfnotePhys32  = 18
	maxNotesInspected = 1 << 20
)

// hasPVHNote reports whether the ELF file in r carries a PVH entry point.
func hasPVHNote(r io.ReaderAt) bool {
	f, err := elf.NewFile(r)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > maxNotesInspected {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		if findNote(data, f.ByteOrder, xenNoteName, xenElfnotePhys32) {
			return true
		}
	}
	return false
}

// findNote walks a note area (4-byte aligned entries) for a note of the
// given name and type.
func findNote(data []byte, bo binary.ByteOrder, name string, typ uint32) bool {
	align := func(n uint32) uint64 { return (uint64(n) + 3) &^ 3 }
	for len(data) >= 12 {
		namesz, descsz, t := bo.Uint32(data), bo.Uint32(data[4:]), bo.Uint32(data[8:])
		rest := data[12:]
		if align(namesz)+align(descsz) > uint64(len(rest)) {
			return false
		}
		n := rest[:namesz]
		if t == typ && string(bytes.TrimRight(n, "\x00")) == name {
			return true
		}
		data = rest[align(namesz)+align(descsz):]
	}
	return false
}
