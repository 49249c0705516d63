package solo5

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
)

// ErrBadExecutable is wrapped by every error ParseExecutable and
// Executable.Load return, so a tender can tell an image it refuses to load
// from a failure of its own.
var ErrBadExecutable = errors.New("invalid ELF image")

// Limits on the executables ParseExecutable accepts.
const (
	// maxPhdrs bounds the program header table, so a hostile header count
	// cannot make parsing slow.
	maxPhdrs = 64
	// pageSize is the page size PT_LOAD segments are aligned to on x86-64;
	// Executable.End rounds the image's end up to it.
	pageSize = 0x1000
)

// Segment is one loadable (PT_LOAD) segment of a unikernel executable: the
// FileSize bytes at Offset in the file, followed by MemSize-FileSize zero
// bytes, placed at Addr.
type Segment struct {
	Offset, FileSize uint64
	Addr, MemSize    uint64
	// Flags are the segment's permissions (elf.PF_R, PF_W, PF_X), which a
	// tender that maps guest memory page by page applies to it.
	Flags elf.ProgFlag
}

// End is the first address after the segment in memory.
func (s Segment) End() uint64 { return s.Addr + s.MemSize }

// Executable is the loadable part of a unikernel: its entry point and its
// non-empty PT_LOAD segments, sorted by address and not overlapping.
type Executable struct {
	Entry    uint64
	Segments []Segment
}

// End is where the loaded image ends, rounded up to a whole page: the
// guest's free memory starts there (the kernel_end of the boot info).
func (x *Executable) End() uint64 {
	var end uint64
	for _, s := range x.Segments {
		end = max(end, s.End())
	}
	return (end + pageSize - 1) &^ (pageSize - 1)
}

// LoadLimits says where a tender can place an executable's segments.
type LoadLimits struct {
	// MinAddr is the lowest address a segment may occupy (0x100000 for hvt
	// and spt: the tender's own structures live below it).
	MinAddr uint64
	// MaxAddr is the end of the largest guest memory the tender can give; a
	// segment reaching beyond it can never be loaded, whatever --mem says.
	MaxAddr uint64
	// Physical places segments at their physical addresses (p_paddr), as
	// the hvt tender loads guest-physical memory; otherwise segments go to
	// their virtual addresses (p_vaddr), as spt maps them in its own
	// address space.
	Physical bool
}

// badExec builds an ErrBadExecutable error.
func badExec(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadExecutable, fmt.Sprintf(format, args...))
}

// ELF header and program header fields used by ParseExecutable.
const (
	elfTypeExec    = 2
	elfMachineX86  = 62
	elfFlagExecute = 1
)

// ParseExecutable validates the ELF header and program headers of the
// static x86-64 executable img and returns its entry point and PT_LOAD
// segments.
//
// It refuses anything a tender could not load exactly: a truncated header
// or segment, a file size larger than the memory size, a segment below
// lim.MinAddr or reaching beyond lim.MaxAddr, overlapping segments and an
// entry point outside every executable segment. Every offset and size is
// checked for overflow before use, so hostile input yields an error, never
// a panic. Segments with no memory size are skipped.
func ParseExecutable(img []byte, lim LoadLimits) (*Executable, error) {
	if len(img) < ehdrSize {
		return nil, badExec("file is %d bytes, shorter than an ELF64 header", len(img))
	}
	if string(img[:4]) != elf.ELFMAG {
		return nil, badExec("not an ELF file")
	}
	if elf.Class(img[elf.EI_CLASS]) != elf.ELFCLASS64 || elf.Data(img[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return nil, badExec("not a little-endian ELF64 file")
	}
	le := binary.LittleEndian
	if t := le.Uint16(img[16:]); t != elfTypeExec {
		return nil, badExec("ELF type %d, want a static executable (ET_EXEC)", t)
	}
	if m := le.Uint16(img[18:]); m != elfMachineX86 {
		return nil, badExec("ELF machine %d, want x86-64 (%d)", m, elfMachineX86)
	}
	entry := le.Uint64(img[24:])
	phoff := le.Uint64(img[32:])
	phentsize := uint64(le.Uint16(img[54:]))
	phnum := uint64(le.Uint16(img[56:]))
	if phentsize != phdrSize {
		return nil, badExec("program header size %d, want %d", phentsize, phdrSize)
	}
	if phnum == 0 || phnum > maxPhdrs {
		return nil, badExec("%d program headers (want 1 to %d)", phnum, maxPhdrs)
	}
	size := uint64(len(img))
	if phoff > size || size-phoff < phnum*phdrSize {
		return nil, badExec("program headers at offset %d extend past the end of the file (%d bytes)", phoff, size)
	}
	addrField := 16 // p_vaddr
	if lim.Physical {
		addrField = 24 // p_paddr
	}
	var segs []Segment
	for i := uint64(0); i < phnum; i++ {
		ph := img[phoff+i*phdrSize:]
		if le.Uint32(ph[0:]) != ptLoad {
			continue
		}
		s := Segment{
			Flags:    elf.ProgFlag(le.Uint32(ph[4:])),
			Offset:   le.Uint64(ph[8:]),
			Addr:     le.Uint64(ph[addrField:]),
			FileSize: le.Uint64(ph[32:]),
			MemSize:  le.Uint64(ph[40:]),
		}
		if s.MemSize == 0 {
			continue
		}
		if s.FileSize > s.MemSize {
			return nil, badExec("segment %d: file size %d exceeds memory size %d", i, s.FileSize, s.MemSize)
		}
		if s.Offset > size || size-s.Offset < s.FileSize {
			return nil, badExec("segment %d: %d bytes at offset %d extend past the end of the file (%d bytes)", i, s.FileSize, s.Offset, size)
		}
		if s.Addr < lim.MinAddr {
			return nil, badExec("segment %d: address %#x is below the minimum load address %#x", i, s.Addr, lim.MinAddr)
		}
		if s.Addr >= lim.MaxAddr || s.MemSize > lim.MaxAddr-s.Addr {
			return nil, badExec("segment %d: %d bytes at %#x extend beyond the largest guest memory (%d MB)", i, s.MemSize, s.Addr, lim.MaxAddr>>20)
		}
		segs = append(segs, s)
	}
	if len(segs) == 0 {
		return nil, badExec("no loadable segments")
	}
	sort.Slice(segs, func(a, b int) bool { return segs[a].Addr < segs[b].Addr })
	for i := 1; i < len(segs); i++ {
		prev, cur := segs[i-1], segs[i]
		if prev.End() > cur.Addr {
			return nil, badExec("segments at %#x (%d bytes) and %#x overlap", prev.Addr, prev.MemSize, cur.Addr)
		}
	}
	inExec := false
	for _, s := range segs {
		if s.Flags&elfFlagExecute != 0 && entry >= s.Addr && entry < s.End() {
			inExec = true
		}
	}
	if !inExec {
		return nil, badExec("entry point %#x is not inside an executable segment", entry)
	}
	return &Executable{Entry: entry, Segments: segs}, nil
}

// Load copies the segments of x, read from img (the file x was parsed
// from), into mem, the guest memory that starts at address base: each
// segment's file contents, then zeros up to its memory size. It fails,
// wrapping ErrBadExecutable, if a segment does not lie within mem, naming
// the size a larger --mem would need.
func (x *Executable) Load(img, mem []byte, base uint64) error {
	end := base + uint64(len(mem))
	for _, s := range x.Segments {
		if s.Addr < base || s.End() > end {
			return badExec("segment at %#x (%d bytes) extends beyond guest memory (%d bytes); try a larger --mem", s.Addr, s.MemSize, end)
		}
		if s.Offset > uint64(len(img)) || uint64(len(img))-s.Offset < s.FileSize {
			return badExec("segment at %#x: %d bytes at offset %d extend past the end of the file (%d bytes)", s.Addr, s.FileSize, s.Offset, len(img))
		}
	}
	for _, s := range x.Segments {
		dst := mem[s.Addr-base : s.End()-base]
		n := copy(dst, img[s.Offset:s.Offset+s.FileSize])
		clear(dst[n:])
	}
	return nil
}

// ReadImageFile reads a unikernel file for a tender to load, refusing
// what is not a regular file and, before reading it, a file larger than
// limit bytes (no image larger than the guest memory a tender offers can
// load), so a tender never reads a device or a huge file into memory.
func ReadImageFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open unikernel image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes is larger than any unikernel this tender loads (%d bytes)", path, fi.Size(), limit)
	}
	img, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return img, nil
}
