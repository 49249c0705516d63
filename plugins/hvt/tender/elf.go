package tender

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// errBadELF is wrapped by every error loadELF returns for an image it
// refuses, so callers can tell a bad unikernel from a tender failure.
var errBadELF = errors.New("invalid ELF image")

const (
	elfHeaderSize  = 64
	elfPhdrSize    = 56
	elfMaxPhdrs    = 64
	elfTypeExec    = 2
	elfMachineX86  = 62
	elfPTLoad      = 1
	elfFlagExecute = 1
	loadAlign      = 0x1000
)

// loadSegment is one PT_LOAD program header.
type loadSegment struct {
	offset, paddr, filesz, memsz uint64
	exec                         bool
}

// badELF builds an errBadELF error.
func badELF(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadELF, fmt.Sprintf(format, args...))
}

// loadELF copies the PT_LOAD segments of the static ELF64 x86-64 executable
// img into guest memory mem at their physical addresses and returns the entry
// point and the end of the loaded image (rounded up to 4 KiB), which the
// guest uses as the start of its heap.
//
// It refuses anything it cannot load exactly: a truncated header or segment,
// a segment below guestMinBase or extending beyond guest memory, overlapping
// segments, a file size larger than the memory size and an entry point
// outside every executable segment. Every offset and size is checked for
// overflow before use, so hostile input yields an error, never a panic.
func loadELF(img, mem []byte) (entry, kernelEnd uint64, err error) {
	segs, entry, err := parseELF(img)
	if err != nil {
		return 0, 0, err
	}
	memSize := uint64(len(mem))
	for _, s := range segs {
		if s.paddr+s.memsz > memSize {
			return 0, 0, badELF("segment at %#x (%d bytes) extends beyond guest memory (%d bytes); try a larger --mem", s.paddr, s.memsz, memSize)
		}
	}
	for _, s := range segs {
		dst := mem[s.paddr : s.paddr+s.memsz]
		n := copy(dst, img[s.offset:s.offset+s.filesz])
		clear(dst[n:])
		kernelEnd = max(kernelEnd, s.paddr+s.memsz)
	}
	kernelEnd = (kernelEnd + loadAlign - 1) &^ (loadAlign - 1)
	if kernelEnd >= memSize {
		return 0, 0, badELF("image ends at %#x, leaving no guest memory for the stack (%d bytes); try a larger --mem", kernelEnd, memSize)
	}
	return entry, kernelEnd, nil
}

// parseELF validates the ELF header and program headers of img and returns
// its PT_LOAD segments sorted by address, and its entry point. It does not
// depend on guest memory size.
func parseELF(img []byte) ([]loadSegment, uint64, error) {
	if len(img) < elfHeaderSize {
		return nil, 0, badELF("file is %d bytes, shorter than an ELF64 header", len(img))
	}
	if string(img[:4]) != "\x7fELF" {
		return nil, 0, badELF("not an ELF file")
	}
	if img[4] != 2 || img[5] != 1 {
		return nil, 0, badELF("not a little-endian ELF64 file")
	}
	le := binary.LittleEndian
	if t := le.Uint16(img[16:]); t != elfTypeExec {
		return nil, 0, badELF("ELF type %d, want a static executable (ET_EXEC)", t)
	}
	if m := le.Uint16(img[18:]); m != elfMachineX86 {
		return nil, 0, badELF("ELF machine %d, want x86-64 (%d)", m, elfMachineX86)
	}
	entry := le.Uint64(img[24:])
	phoff := le.Uint64(img[32:])
	phentsize := uint64(le.Uint16(img[54:]))
	phnum := uint64(le.Uint16(img[56:]))
	if phentsize != elfPhdrSize {
		return nil, 0, badELF("program header size %d, want %d", phentsize, elfPhdrSize)
	}
	if phnum == 0 || phnum > elfMaxPhdrs {
		return nil, 0, badELF("%d program headers (want 1 to %d)", phnum, elfMaxPhdrs)
	}
	size := uint64(len(img))
	if phoff > size || size-phoff < phnum*elfPhdrSize {
		return nil, 0, badELF("program headers at offset %d extend past the end of the file (%d bytes)", phoff, size)
	}
	var segs []loadSegment
	for i := uint64(0); i < phnum; i++ {
		ph := img[phoff+i*elfPhdrSize:]
		if le.Uint32(ph[0:]) != elfPTLoad {
			continue
		}
		s := loadSegment{
			exec:   le.Uint32(ph[4:])&elfFlagExecute != 0,
			offset: le.Uint64(ph[8:]),
			paddr:  le.Uint64(ph[24:]),
			filesz: le.Uint64(ph[32:]),
			memsz:  le.Uint64(ph[40:]),
		}
		if s.memsz == 0 {
			continue
		}
		if s.filesz > s.memsz {
			return nil, 0, badELF("segment %d: file size %d exceeds memory size %d", i, s.filesz, s.memsz)
		}
		if s.offset > size || size-s.offset < s.filesz {
			return nil, 0, badELF("segment %d: %d bytes at offset %d extend past the end of the file (%d bytes)", i, s.filesz, s.offset, size)
		}
		if s.paddr < guestMinBase {
			return nil, 0, badELF("segment %d: address %#x is below the minimum load address %#x", i, s.paddr, guestMinBase)
		}
		if s.paddr >= MaxMemMB<<20 || s.memsz > MaxMemMB<<20-s.paddr {
			return nil, 0, badELF("segment %d: %d bytes at %#x extend beyond the largest guest memory (%d MB)", i, s.memsz, s.paddr, MaxMemMB)
		}
		segs = append(segs, s)
	}
	if len(segs) == 0 {
		return nil, 0, badELF("no loadable segments")
	}
	sort.Slice(segs, func(a, b int) bool { return segs[a].paddr < segs[b].paddr })
	for i := 1; i < len(segs); i++ {
		prev, cur := segs[i-1], segs[i]
		if prev.paddr+prev.memsz > cur.paddr {
			return nil, 0, badELF("segments at %#x (%d bytes) and %#x overlap", prev.paddr, prev.memsz, cur.paddr)
		}
	}
	inExec := false
	for _, s := range segs {
		if s.exec && entry >= s.paddr && entry < s.paddr+s.memsz {
			inExec = true
		}
	}
	if !inExec {
		return nil, 0, badELF("entry point %#x is not inside an executable segment", entry)
	}
	return segs, entry, nil
}
