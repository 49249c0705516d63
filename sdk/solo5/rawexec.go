package solo5

import (
	"debug/elf"
	"encoding/binary"
)

// RawSegment is one PT_LOAD segment of an executable built by
// RawExecutable.
type RawSegment struct {
	// VAddr and PAddr are the segment's virtual and physical load
	// addresses; a zero PAddr means the same as VAddr.
	VAddr, PAddr uint64
	// MemSize is the segment's size in memory; the bytes beyond Data are
	// zero-filled (bss).
	MemSize uint64
	// Data is the segment's content in the file.
	Data []byte
	// Flags are the segment's permissions.
	Flags elf.ProgFlag
}

// RawExecutable builds a static x86-64 ELF executable with the given entry
// point and PT_LOAD segments, each at a page-aligned file offset, and
// nothing else: no Solo5 note, no sections. Loader tests use it to make
// exactly the (often malformed) executables they need, which Build's
// well-formed guests cannot express.
func RawExecutable(entry uint64, segs []RawSegment) []byte {
	le := binary.LittleEndian
	hdr := make([]byte, ehdrSize+len(segs)*phdrSize)
	copy(hdr, elf.ELFMAG)
	hdr[4], hdr[5], hdr[6] = 2, 1, 1
	le.PutUint16(hdr[16:], elfTypeExec)
	le.PutUint16(hdr[18:], elfMachineX86)
	le.PutUint32(hdr[20:], 1)
	le.PutUint64(hdr[24:], entry)
	le.PutUint64(hdr[32:], ehdrSize)
	le.PutUint16(hdr[52:], ehdrSize)
	le.PutUint16(hdr[54:], phdrSize)
	le.PutUint16(hdr[56:], uint16(len(segs)))
	out := hdr
	for i, s := range segs {
		off := (len(out) + 0xfff) &^ 0xfff
		out = append(out, make([]byte, off-len(out))...)
		out = append(out, s.Data...)
		ph := hdr[ehdrSize+i*phdrSize:]
		paddr := s.PAddr
		if paddr == 0 {
			paddr = s.VAddr
		}
		le.PutUint32(ph[0:], ptLoad)
		le.PutUint32(ph[4:], uint32(s.Flags))
		le.PutUint64(ph[8:], uint64(off))
		le.PutUint64(ph[16:], s.VAddr)
		le.PutUint64(ph[24:], paddr)
		le.PutUint64(ph[32:], uint64(len(s.Data)))
		le.PutUint64(ph[40:], s.MemSize)
		le.PutUint64(ph[48:], 0x1000)
	}
	copy(out, hdr)
	return out
}
