package solo5

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// LoadAddress is where Build places its code segment and entry point: the
// lowest guest address the hvt and spt tenders accept for PT_LOAD segments.
const LoadAddress = 0x100000

// BuildSpec describes the image Build produces.
type BuildSpec struct {
	// Target and ABIVersion go into the ABI note.
	Target     Target
	ABIVersion uint32
	// Devices are declared in the manifest in this order, after the
	// reserved entry 0.
	Devices []Device
	// Code is placed at the entry point. If empty, an endless halt loop for
	// Machine is used.
	Code []byte
	// Machine is elf.EM_X86_64 (the default when zero) or elf.EM_AARCH64.
	Machine elf.Machine
	// NoABINote and NoManifest leave out the respective note, to produce
	// images that Read must reject.
	NoABINote, NoManifest bool
}

// Build returns a minimal static ELF64 executable carrying the Solo5 notes
// described by spec, so tests and tools can produce unikernel images without
// a Solo5 toolchain. Each note sits in its own PT_NOTE segment and in a
// section named .note.solo5.abi or .note.solo5.manifest, as in images linked
// by the Solo5 toolchain; the code sits in one PT_LOAD segment at
// LoadAddress, which is also the entry point. Build rejects specs that Read
// would reject, so its output always reads back to the same Image.
func Build(spec BuildSpec) ([]byte, error) {
	machine := spec.Machine
	if machine == 0 {
		machine = elf.EM_X86_64
	}
	code := spec.Code
	switch machine {
	case elf.EM_X86_64:
		if len(code) == 0 {
			code = []byte{0xf4, 0xeb, 0xfd} // 1: hlt; jmp 1b
		}
	case elf.EM_AARCH64:
		if len(code) == 0 {
			code = []byte{0x7f, 0x20, 0x03, 0xd5, 0xff, 0xff, 0xff, 0x17} // 1: wfi; b 1b
		}
	default:
		return nil, fmt.Errorf("build image: unsupported machine %v", machine)
	}
	var areas []noteSegment
	if !spec.NoABINote {
		if !spec.Target.Known() {
			return nil, fmt.Errorf("build image: unknown target %v", spec.Target)
		}
		areas = append(areas, noteSegment{name: abiSection, align: 4, data: abiNote(spec.Target, spec.ABIVersion)})
	}
	if !spec.NoManifest {
		desc, err := manifestDesc(spec.Devices)
		if err != nil {
			return nil, fmt.Errorf("build image: %w", err)
		}
		areas = append(areas, noteSegment{name: mftSection, align: 4, data: encodeNote(noteName, mftNoteType, desc, 4)})
	}
	return layoutELF(machine, areas, code), nil
}

// abiNote encodes a complete ABI1 note.
func abiNote(t Target, version uint32) []byte {
	desc := make([]byte, abiDescSize)
	binary.LittleEndian.PutUint32(desc[0:], uint32(t))
	binary.LittleEndian.PutUint32(desc[4:], version)
	return encodeNote(noteName, abiNoteType, desc, 4)
}

// manifestDesc encodes the descriptor of a MFT1 note declaring devices,
// including the leading padding and the reserved entry 0.
func manifestDesc(devices []Device) ([]byte, error) {
	if len(devices) > MaxManifestEntries-1 {
		return nil, fmt.Errorf("%d devices, at most %d fit in a manifest", len(devices), MaxManifestEntries-1)
	}
	seen := make(map[string]bool, len(devices))
	for _, d := range devices {
		if !ValidDeviceName(d.Name) {
			return nil, deviceNameError(d.Name)
		}
		if d.Type != DeviceBlock && d.Type != DeviceNet {
			return nil, fmt.Errorf("device %q: type %v is not block or net", d.Name, d.Type)
		}
		if seen[d.Name] {
			return nil, fmt.Errorf("duplicate device name %q", d.Name)
		}
		seen[d.Name] = true
	}
	count := len(devices) + 1
	desc := make([]byte, mftMinDesc+count*mftEntrySize)
	le := binary.LittleEndian
	m := desc[mftDescPad:]
	le.PutUint32(m[0:], mftVersion)
	le.PutUint32(m[4:], uint32(count))
	le.PutUint32(m[mftHeaderSize+mftTypeOff:], uint32(DeviceReservedFirst))
	for i, d := range devices {
		e := m[mftHeaderSize+(i+1)*mftEntrySize:]
		copy(e, d.Name)
		le.PutUint32(e[mftTypeOff:], uint32(d.Type))
	}
	return desc, nil
}

// encodeNote encodes one ELF note: header, name padded to 4 bytes, and
// descriptor padded to align bytes.
func encodeNote(name string, typ uint32, desc []byte, align int) []byte {
	nameLen := (len(name) + 3) &^ 3
	total := nhdrSize + nameLen + len(desc)
	total = (total + align - 1) &^ (align - 1)
	b := make([]byte, total)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(len(name)))
	le.PutUint32(b[4:], uint32(len(desc)))
	le.PutUint32(b[8:], typ)
	copy(b[nhdrSize:], name)
	copy(b[nhdrSize+nameLen:], desc)
	return b
}

// noteSegment is one PT_NOTE segment, also described by a SHT_NOTE section.
type noteSegment struct {
	name  string
	align uint64
	data  []byte
}

// layoutELF lays out an ELF64 little-endian executable: the ELF header, the
// program headers (PT_LOAD for code, then one PT_NOTE per note segment), the
// note segments, the section name table, the code at a page boundary and
// finally the section headers.
func layoutELF(machine elf.Machine, areas []noteSegment, code []byte) []byte {
	const page = 0x1000
	alignUp := func(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }
	le := binary.LittleEndian

	phnum := uint64(1 + len(areas))
	off := uint64(ehdrSize) + phnum*phdrSize
	areaOff := make([]uint64, len(areas))
	for i, a := range areas {
		off = alignUp(off, 8)
		areaOff[i] = off
		off += uint64(len(a.data))
	}

	shstrtab := []byte{0}
	nameOff := func(s string) uint32 {
		o := uint32(len(shstrtab))
		shstrtab = append(shstrtab, s...)
		shstrtab = append(shstrtab, 0)
		return o
	}
	areaName := make([]uint32, len(areas))
	for i, a := range areas {
		areaName[i] = nameOff(a.name)
	}
	textName := nameOff(".text")
	strName := nameOff(".shstrtab")
	strOff := off
	off += uint64(len(shstrtab))

	codeOff := alignUp(off, page)
	off = codeOff + uint64(len(code))
	shoff := alignUp(off, 8)
	shnum := uint64(len(areas) + 3) // null, notes..., .text, .shstrtab
	out := make([]byte, shoff+shnum*shdrSize)

	// ELF header.
	copy(out, elf.ELFMAG)
	out[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	out[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	out[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	le.PutUint16(out[16:], uint16(elf.ET_EXEC))
	le.PutUint16(out[18:], uint16(machine))
	le.PutUint32(out[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(out[24:], LoadAddress)
	le.PutUint64(out[32:], ehdrSize)
	le.PutUint64(out[40:], shoff)
	le.PutUint16(out[52:], ehdrSize)
	le.PutUint16(out[54:], phdrSize)
	le.PutUint16(out[56:], uint16(phnum))
	le.PutUint16(out[58:], shdrSize)
	le.PutUint16(out[60:], uint16(shnum))
	le.PutUint16(out[62:], uint16(shnum-1))

	// Program headers.
	phdr := func(i int, typ, flags uint32, offset, vaddr, size, align uint64) {
		p := out[ehdrSize+i*phdrSize:]
		le.PutUint32(p[0:], typ)
		le.PutUint32(p[4:], flags)
		le.PutUint64(p[8:], offset)
		le.PutUint64(p[16:], vaddr)
		le.PutUint64(p[24:], vaddr)
		le.PutUint64(p[32:], size)
		le.PutUint64(p[40:], size)
		le.PutUint64(p[48:], align)
	}
	phdr(0, ptLoad, uint32(elf.PF_R|elf.PF_X), codeOff, LoadAddress, uint64(len(code)), page)
	for i, a := range areas {
		phdr(i+1, ptNote, uint32(elf.PF_R), areaOff[i], 0, uint64(len(a.data)), a.align)
		copy(out[areaOff[i]:], a.data)
	}
	copy(out[strOff:], shstrtab)
	copy(out[codeOff:], code)

	// Section headers; entry 0 stays all zero.
	shdr := func(i int, name, typ uint32, flags, addr, offset, size, align uint64) {
		s := out[shoff+uint64(i)*shdrSize:]
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], typ)
		le.PutUint64(s[8:], flags)
		le.PutUint64(s[16:], addr)
		le.PutUint64(s[24:], offset)
		le.PutUint64(s[32:], size)
		le.PutUint64(s[48:], align)
	}
	for i, a := range areas {
		shdr(i+1, areaName[i], shtNote, uint64(elf.SHF_ALLOC), 0, areaOff[i], uint64(len(a.data)), a.align)
	}
	shdr(len(areas)+1, textName, uint32(elf.SHT_PROGBITS), uint64(elf.SHF_ALLOC|elf.SHF_EXECINSTR), LoadAddress, codeOff, uint64(len(code)), 16)
	shdr(len(areas)+2, strName, uint32(elf.SHT_STRTAB), 0, 0, strOff, uint64(len(shstrtab)), 1)
	return out
}
