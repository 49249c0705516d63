package solo5

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
)

// ELF and Solo5 ABI constants used by the reader and the builder.
const (
	ehdrSize = 64 // sizeof(Elf64_Ehdr)
	phdrSize = 56 // sizeof(Elf64_Phdr)
	shdrSize = 64 // sizeof(Elf64_Shdr)
	nhdrSize = 12 // sizeof(Elf64_Nhdr): namesz, descsz, type are 32-bit

	ptLoad    = 1
	ptNote    = 4
	shtNote   = 7
	shtNobits = 8

	noteName     = "Solo5\x00"
	noteNameSize = 8 // noteName padded to 4 bytes

	abiNoteType = 0x31494241 // "ABI1"
	mftNoteType = 0x3154464d // "MFT1"

	abiSection = ".note.solo5.abi"
	mftSection = ".note.solo5.manifest"

	abiDescSize = 16 // struct abi1_info

	// The manifest descriptor starts right after the 4-byte-aligned name,
	// 20 bytes into the note, but struct mft is 8-byte aligned within the
	// note, so the descriptor opens with 4 bytes of padding.
	mftDescPad    = 4
	mftHeaderSize = 8   // version, entries
	mftEntrySize  = 104 // sizeof(struct mft_entry)
	mftNameSize   = 68
	mftTypeOff    = 68
	mftVersion    = 1
	mftMinDesc    = mftDescPad + mftHeaderSize
	mftMaxDesc    = mftMinDesc + MaxManifestEntries*mftEntrySize

	// maxNotes bounds the number of notes examined in one file, so that a
	// file with many program headers pointing at the same large region
	// cannot make Read do quadratic work.
	maxNotes = 4096
)

// Image is what Petrel needs to know about a Solo5 unikernel before running
// it: which tender can run it and which devices it expects to be attached.
type Image struct {
	// Target is the ABI target from the .note.solo5.abi note.
	Target Target
	// ABIVersion is the target ABI version; a tender refuses images whose
	// version differs from its own.
	ABIVersion uint32
	// Machine is the ELF machine, elf.EM_X86_64 or elf.EM_AARCH64; it must
	// match the host the image runs on.
	Machine elf.Machine
	// Manifest lists the declared devices in manifest order, without the
	// reserved entry 0.
	Manifest []Device
}

// Devices returns the sorted names of the declared devices of type t, in the
// form ValidateDevices and configuration checks want.
func (im *Image) Devices(t DeviceType) []string {
	var names []string
	for _, d := range im.Manifest {
		if d.Type == t {
			names = append(names, d.Name)
		}
	}
	sort.Strings(names)
	return names
}

// ReadFile opens path and reads it as a Solo5 unikernel image; see Read.
func ReadFile(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open unikernel image: %w", err)
	}
	defer f.Close()
	im, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return im, nil
}

// Read parses the Solo5 ABI and manifest notes of the ELF image in r.
//
// Notes are looked up in PT_NOTE program headers, as the Solo5 tenders do,
// and only if none carries them in the sections named .note.solo5.abi and
// .note.solo5.manifest. Within a note area each note's descriptor starts at
// the 4-byte boundary after its name (the layout the Solo5 toolchain emits
// and the tenders read); the next note starts at an 8-byte boundary if the
// area's alignment is 8, otherwise at a 4-byte boundary.
//
// If r has a Size() int64 method (bytes.Reader, io.SectionReader) or is a
// regular *os.File, every offset and length is checked against the file size
// before any read; otherwise truncation is detected when a read comes up
// short. All allocations are bounded by small constants, so hostile input
// cannot make Read allocate much memory, and Read never panics.
func Read(r io.ReaderAt) (*Image, error) {
	rd := &reader{r: r, size: sizeOf(r)}
	eh, err := rd.header()
	if err != nil {
		return nil, err
	}
	notes, err := rd.notesFromSegments(eh)
	if err != nil {
		return nil, err
	}
	if notes.abi == nil || notes.mft == nil {
		if err := rd.notesFromSections(eh, notes); err != nil {
			return nil, err
		}
	}
	if notes.abi == nil {
		return nil, fmt.Errorf("%w: no %s", ErrNotSolo5, abiSection)
	}
	im := &Image{Machine: eh.machine}
	im.Target = Target(binary.LittleEndian.Uint32(notes.abi[0:]))
	im.ABIVersion = binary.LittleEndian.Uint32(notes.abi[4:])
	if !im.Target.Known() {
		return nil, fmt.Errorf("%w: unknown ABI target %d in %s", ErrMalformed, uint32(im.Target), abiSection)
	}
	if notes.mft == nil {
		return nil, fmt.Errorf("%w: no %s", ErrMalformed, mftSection)
	}
	im.Manifest, err = decodeManifest(notes.mft)
	if err != nil {
		return nil, err
	}
	return im, nil
}

// sizeOf returns the size of r when it can be learnt without reading, and
// math.MaxInt64 otherwise.
func sizeOf(r io.ReaderAt) int64 {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		if s := v.Size(); s >= 0 {
			return s
		}
	case *os.File:
		if fi, err := v.Stat(); err == nil && fi.Mode().IsRegular() {
			return fi.Size()
		}
	}
	return math.MaxInt64
}

type reader struct {
	r    io.ReaderAt
	size int64
}

// malformed builds an ErrMalformed error.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// inFile reports whether [off, off+n) lies within the file.
func (rd *reader) inFile(off, n uint64) bool {
	return off <= uint64(rd.size) && n <= uint64(rd.size)-off
}

// read returns n bytes at off; n is always a small constant or a length
// already checked against a constant bound.
func (rd *reader) read(off, n uint64, what string) ([]byte, error) {
	if !rd.inFile(off, n) {
		return nil, malformed("truncated: %s at offset %d (%d bytes) extends past the end of the file (%d bytes)", what, off, n, rd.size)
	}
	buf := make([]byte, n)
	got, err := rd.r.ReadAt(buf, int64(off))
	if uint64(got) == n {
		return buf, nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, malformed("truncated: %s at offset %d (%d bytes) extends past the end of the file", what, off, n)
	}
	return nil, fmt.Errorf("read %s at offset %d: %w", what, off, err)
}

type elfHeader struct {
	machine   elf.Machine
	phoff     uint64
	phnum     uint64
	shoff     uint64
	shnum     uint64
	shstrndx  uint64
	phentsize uint64
	shentsize uint64
}

func (rd *reader) header() (*elfHeader, error) {
	n := min(uint64(ehdrSize), uint64(rd.size))
	buf := make([]byte, ehdrSize)
	got, err := rd.r.ReadAt(buf[:n], 0)
	if got < 4 || !bytes.Equal(buf[:4], []byte(elf.ELFMAG)) {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("read ELF header: %w", err)
		}
		return nil, ErrNotELF
	}
	if got > elf.EI_CLASS && elf.Class(buf[elf.EI_CLASS]) != elf.ELFCLASS64 {
		return nil, fmt.Errorf("%w: ELF class %v, Solo5 images are ELFCLASS64", ErrUnsupported, elf.Class(buf[elf.EI_CLASS]))
	}
	if got > elf.EI_DATA && elf.Data(buf[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return nil, fmt.Errorf("%w: ELF byte order %v, want little-endian (ELFDATA2LSB)", ErrUnsupported, elf.Data(buf[elf.EI_DATA]))
	}
	if got < ehdrSize {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("read ELF header: %w", err)
		}
		return nil, malformed("truncated: file is %d bytes, shorter than an ELF64 header", got)
	}
	le := binary.LittleEndian
	if v := buf[elf.EI_VERSION]; v != byte(elf.EV_CURRENT) {
		return nil, malformed("ELF identification version %d, want 1", v)
	}
	eh := &elfHeader{
		machine:   elf.Machine(le.Uint16(buf[18:])),
		phoff:     le.Uint64(buf[32:]),
		shoff:     le.Uint64(buf[40:]),
		phentsize: uint64(le.Uint16(buf[54:])),
		phnum:     uint64(le.Uint16(buf[56:])),
		shentsize: uint64(le.Uint16(buf[58:])),
		shnum:     uint64(le.Uint16(buf[60:])),
		shstrndx:  uint64(le.Uint16(buf[62:])),
	}
	if eh.machine != elf.EM_X86_64 && eh.machine != elf.EM_AARCH64 {
		return nil, fmt.Errorf("%w: machine %v, want EM_X86_64 or EM_AARCH64", ErrUnsupported, eh.machine)
	}
	if v := le.Uint32(buf[20:]); v != uint32(elf.EV_CURRENT) {
		return nil, malformed("ELF version %d, want 1", v)
	}
	if hs := le.Uint16(buf[52:]); hs != ehdrSize {
		return nil, malformed("ELF header size %d, want %d", hs, ehdrSize)
	}
	if eh.phnum > 0 {
		if eh.phentsize != phdrSize {
			return nil, malformed("program header entry size %d, want %d", eh.phentsize, phdrSize)
		}
		if !rd.inFile(eh.phoff, eh.phnum*phdrSize) {
			return nil, malformed("truncated: %d program headers at offset %d extend past the end of the file (%d bytes)", eh.phnum, eh.phoff, rd.size)
		}
	}
	return eh, nil
}

// notes holds the descriptors of the Solo5 notes found so far, and where
// they were found so that the same note seen twice is not a duplicate.
type notes struct {
	abi, mft     []byte
	abiAt, mftAt uint64
	visited      int
}

// noteArea is a region of the file holding a sequence of notes.
type noteArea struct {
	what  string // for error messages
	off   uint64
	size  uint64
	align uint64
}

func (rd *reader) notesFromSegments(eh *elfHeader) (*notes, error) {
	ns := &notes{}
	if eh.phnum == 0 {
		return ns, nil
	}
	table, err := rd.read(eh.phoff, eh.phnum*phdrSize, "program header table")
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	for i := uint64(0); i < eh.phnum; i++ {
		ph := table[i*phdrSize : (i+1)*phdrSize]
		if le.Uint32(ph[0:]) != ptNote {
			continue
		}
		area := noteArea{
			what:  fmt.Sprintf("program header %d (PT_NOTE)", i),
			off:   le.Uint64(ph[8:]),
			size:  le.Uint64(ph[32:]),
			align: le.Uint64(ph[48:]),
		}
		if err := rd.walkNotes(area, ns); err != nil {
			return nil, err
		}
	}
	return ns, nil
}

// notesFromSections fills in whichever Solo5 notes the program headers did
// not provide from the sections named after them.
func (rd *reader) notesFromSections(eh *elfHeader, ns *notes) error {
	if eh.shoff == 0 || eh.shnum == 0 {
		return nil
	}
	if eh.shentsize != shdrSize {
		return malformed("section header entry size %d, want %d", eh.shentsize, shdrSize)
	}
	if !rd.inFile(eh.shoff, eh.shnum*shdrSize) {
		return malformed("truncated: %d section headers at offset %d extend past the end of the file (%d bytes)", eh.shnum, eh.shoff, rd.size)
	}
	if eh.shstrndx >= eh.shnum {
		return nil
	}
	table, err := rd.read(eh.shoff, eh.shnum*shdrSize, "section header table")
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	strtab := table[eh.shstrndx*shdrSize:]
	strOff, strSize := le.Uint64(strtab[24:]), le.Uint64(strtab[32:])
	if !rd.inFile(strOff, strSize) {
		return malformed("truncated: section name table at offset %d (%d bytes) extends past the end of the file (%d bytes)", strOff, strSize, rd.size)
	}
	wantABI, wantMft := ns.abi == nil, ns.mft == nil
	for i := uint64(0); i < eh.shnum; i++ {
		sh := table[i*shdrSize : (i+1)*shdrSize]
		if le.Uint32(sh[4:]) == shtNobits {
			continue
		}
		name := uint64(le.Uint32(sh[0:]))
		var want bool
		for _, s := range []struct {
			name string
			want bool
		}{{abiSection, wantABI}, {mftSection, wantMft}} {
			if !s.want || name > strSize || strSize-name < uint64(len(s.name))+1 {
				continue
			}
			b, err := rd.read(strOff+name, uint64(len(s.name))+1, "section name")
			if err != nil {
				return err
			}
			if string(b) == s.name+"\x00" {
				want = true
			}
		}
		if !want {
			continue
		}
		area := noteArea{
			what:  fmt.Sprintf("section %d", i),
			off:   le.Uint64(sh[24:]),
			size:  le.Uint64(sh[32:]),
			align: le.Uint64(sh[48:]),
		}
		if err := rd.walkNotes(area, ns); err != nil {
			return err
		}
	}
	return nil
}

// align4 rounds n up to a multiple of 4; n is at most 2^32 so it cannot
// overflow a uint64.
func align4(n uint64) uint64 { return (n + 3) &^ 3 }

// walkNotes visits every note in area, recording Solo5 ABI and manifest
// notes in ns. Every size is checked against the area before it is used.
func (rd *reader) walkNotes(a noteArea, ns *notes) error {
	if !rd.inFile(a.off, a.size) {
		return malformed("truncated: %s at offset %d (%d bytes) extends past the end of the file (%d bytes)", a.what, a.off, a.size, rd.size)
	}
	step := uint64(4)
	if a.align == 8 {
		step = 8
	}
	le := binary.LittleEndian
	pos := uint64(0)
	for pos < a.size {
		if a.size-pos < nhdrSize {
			return malformed("%s: %d bytes at note offset %d are too short for a note header", a.what, a.size-pos, pos)
		}
		ns.visited++
		if ns.visited > maxNotes {
			return malformed("more than %d ELF notes", maxNotes)
		}
		h, err := rd.read(a.off+pos, nhdrSize, "note header")
		if err != nil {
			return err
		}
		namesz, descsz, typ := uint64(le.Uint32(h[0:])), uint64(le.Uint32(h[4:])), le.Uint32(h[8:])
		descOff := pos + nhdrSize + align4(namesz)
		end := descOff + descsz
		if end > a.size {
			return malformed("%s: note at offset %d with namesz %d and descsz %d extends past the end of its %d-byte area", a.what, pos, namesz, descsz, a.size)
		}
		if namesz == uint64(len(noteName)) && (typ == abiNoteType || typ == mftNoteType) {
			name, err := rd.read(a.off+pos+nhdrSize, namesz, "note name")
			if err != nil {
				return err
			}
			if string(name) == noteName {
				if err := rd.takeNote(a, ns, a.off+pos, typ, a.off+descOff, descsz); err != nil {
					return err
				}
			}
		}
		next := (end + step - 1) &^ (step - 1)
		pos = min(next, a.size)
	}
	return nil
}

// takeNote reads and records the descriptor of a Solo5 note at file offset
// at, after checking its size against the ABI's limits.
func (rd *reader) takeNote(a noteArea, ns *notes, at uint64, typ uint32, descAt, descsz uint64) error {
	switch typ {
	case abiNoteType:
		if ns.abi != nil {
			if ns.abiAt == at {
				return nil
			}
			return malformed("%s: more than one %s note", a.what, abiSection)
		}
		if descsz != abiDescSize {
			return malformed("%s: ABI note descriptor is %d bytes, want %d", a.what, descsz, abiDescSize)
		}
		d, err := rd.read(descAt, descsz, "ABI note")
		if err != nil {
			return err
		}
		ns.abi, ns.abiAt = d, at
	case mftNoteType:
		if ns.mft != nil {
			if ns.mftAt == at {
				return nil
			}
			return malformed("%s: more than one %s note", a.what, mftSection)
		}
		if descsz < mftMinDesc {
			return malformed("%s: manifest note descriptor is %d bytes, shorter than the %d-byte minimum", a.what, descsz, mftMinDesc)
		}
		if descsz > mftMaxDesc {
			return malformed("%s: manifest note descriptor is %d bytes, larger than the %d bytes of %d entries", a.what, descsz, mftMaxDesc, MaxManifestEntries)
		}
		d, err := rd.read(descAt, descsz, "manifest note")
		if err != nil {
			return err
		}
		ns.mft, ns.mftAt = d, at
	}
	return nil
}

// decodeManifest validates a manifest descriptor (including its leading
// padding) and returns the declared devices.
func decodeManifest(desc []byte) ([]Device, error) {
	le := binary.LittleEndian
	m := desc[mftDescPad:]
	version, count := le.Uint32(m[0:]), uint64(le.Uint32(m[4:]))
	if version != mftVersion {
		return nil, malformed("unknown manifest version %d, want %d", version, mftVersion)
	}
	if count == 0 {
		return nil, malformed("manifest has no entries, entry 0 must be the reserved entry")
	}
	if count > MaxManifestEntries {
		return nil, malformed("manifest declares %d entries, more than the maximum of %d", count, MaxManifestEntries)
	}
	body := uint64(len(m)) - mftHeaderSize
	if count*mftEntrySize > body {
		return nil, malformed("manifest declares %d entries (%d bytes) but its descriptor holds only %d bytes of entries", count, count*mftEntrySize, body)
	}
	if count*mftEntrySize != body {
		return nil, malformed("manifest descriptor has %d bytes after its %d entries", body-count*mftEntrySize, count)
	}
	devices := make([]Device, 0, count-1)
	seen := make(map[string]bool, count)
	for i := uint64(0); i < count; i++ {
		e := m[mftHeaderSize+i*mftEntrySize : mftHeaderSize+(i+1)*mftEntrySize]
		typ := DeviceType(le.Uint32(e[mftTypeOff:]))
		nul := bytes.IndexByte(e[:mftNameSize], 0)
		if nul < 0 {
			return nil, malformed("manifest entry %d: name is not NUL-terminated", i)
		}
		name := string(e[:nul])
		if i == 0 {
			if typ != DeviceReservedFirst {
				return nil, malformed("manifest entry 0 has type %v, want the reserved entry (%#x)", typ, uint32(DeviceReservedFirst))
			}
			continue
		}
		switch typ {
		case DeviceBlock, DeviceNet:
		case DeviceReservedFirst:
			return nil, malformed("manifest entry %d (%q): the reserved type is only allowed for entry 0", i, name)
		default:
			return nil, malformed("manifest entry %d (%q): unknown device type %d", i, name, uint32(typ))
		}
		if !ValidDeviceName(name) {
			return nil, malformed("manifest entry %d: %v", i, deviceNameError(name))
		}
		if seen[name] {
			return nil, malformed("manifest entry %d: duplicate device name %q", i, name)
		}
		seen[name] = true
		devices = append(devices, Device{Name: name, Type: typ})
	}
	return devices, nil
}
