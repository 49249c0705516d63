package tender

import (
	"encoding/binary"
	"fmt"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// Guest-physical memory layout. Everything the tender writes for the guest
// lives below guestMinBase, where no PT_LOAD segment may be placed:
//
//	0x01000 GDT
//	0x02000 PML4
//	0x03000 PDPT
//	0x04000 page directories (up to 4, covering 4 GiB)
//	0x10000 struct hvt_boot_info
//	0x11000 manifest copy (at most 8 + 64*104 bytes)
//	0x13000 command line (8192 bytes)
//	0x100000 lowest address of the unikernel image
const (
	gdtBase      = 0x1000
	pml4Base     = 0x2000
	pdptBase     = 0x3000
	pdBase       = 0x4000
	maxPD        = 4
	bootInfoBase = 0x10000
	bootInfoSize = 40
	mftBase      = 0x11000
	mftMaxSize   = 0x2000
	cmdlineBase  = 0x13000

	// cmdlineSize is HVT_CMDLINE_SIZE, the largest guest command line
	// including its terminating NUL.
	cmdlineSize = solo5.MaxCmdline

	// guestMinBase is HVT_GUEST_MIN_BASE: the lowest address a PT_LOAD
	// segment may occupy.
	guestMinBase = 0x100000

	// pageSize2M is the page size of the identity map; guest memory is a
	// whole number of these pages.
	pageSize2M = 0x200000
)

// Guest memory sizes accepted by --mem, in MB. DefaultMemMB is solo5-hvt's
// default; MaxMemMB keeps every guest-physical address representable in the
// 32-bit pointer a hypercall passes.
const (
	DefaultMemMB = 512
	MaxMemMB     = 4096
)

// Control register values for 64-bit long mode with paging, and the
// x86 page table entry bits used by the identity map.
const (
	cr0PE      = 1 << 0
	cr0NE      = 1 << 5
	cr0PG      = 1 << 31
	cr0Init    = cr0PE | cr0NE | cr0PG
	cr4PAE     = 1 << 5
	cr4OSFXSR  = 1 << 9
	cr4OSXMM   = 1 << 10
	cr4Init    = cr4PAE | cr4OSFXSR | cr4OSXMM
	eferLME    = 1 << 8
	eferLMA    = 1 << 10
	eferInit   = eferLME | eferLMA
	rflagsInit = 0x2

	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	ptePageSize = 1 << 7

	gdtEntries = 3 // null, code, data
	gdtLimit   = gdtEntries*8 - 1
	selCode    = 1 * 8
	selData    = 2 * 8
)

// segmentDesc describes a segment both as a GDT descriptor and as the
// hidden part of a segment register, so the two always agree.
type segmentDesc struct {
	selector                       uint16
	limit                          uint32 // bytes
	typ                            uint8
	present, s, l, db, g, unusable bool
}

// The segments the vCPU starts with: flat 64-bit code and data, a null
// task register and no LDT, as Solo5 sets them up.
var (
	codeSegment     = segmentDesc{selector: selCode, limit: 0xffffffff, typ: 9, present: true, s: true, l: true, g: true}
	dataSegment     = segmentDesc{selector: selData, limit: 0xffffffff, typ: 3, present: true, s: true, db: true, g: true}
	taskSegment     = segmentDesc{typ: 11, present: true}
	unusableSegment = segmentDesc{unusable: true}
)

// descriptor encodes s as an 8-byte GDT entry (base 0, 4 KiB granular limit).
func (s segmentDesc) descriptor() uint64 {
	bit := func(v bool, n uint) uint64 {
		if v {
			return 1 << n
		}
		return 0
	}
	limit := uint64(s.limit)
	if s.g {
		limit >>= 12
	}
	d := limit & 0xffff
	d |= (limit >> 16 & 0xf) << 48
	d |= uint64(s.typ&0xf) << 40
	d |= bit(s.s, 44) | bit(s.present, 47)
	d |= bit(s.l, 53) | bit(s.db, 54) | bit(s.g, 55)
	return d
}

// memSizeFromMB converts a --mem value into a guest memory size: the value
// in bytes rounded down to a whole 2 MiB page. It refuses sizes that leave no
// room for a guest or exceed MaxMemMB.
func memSizeFromMB(mb int) (uint64, error) {
	if mb <= 0 || mb > MaxMemMB {
		return 0, fmt.Errorf("guest memory of %d MB is out of range (1 to %d)", mb, MaxMemMB)
	}
	size := uint64(mb) << 20
	size -= size % pageSize2M
	if size < pageSize2M {
		return 0, fmt.Errorf("guest memory of %d MB is less than one 2 MiB page", mb)
	}
	return size, nil
}

// setupGDT writes the null, code and data descriptors at gdtBase.
func setupGDT(mem []byte) {
	le := binary.LittleEndian
	le.PutUint64(mem[gdtBase:], 0)
	le.PutUint64(mem[gdtBase+selCode:], codeSegment.descriptor())
	le.PutUint64(mem[gdtBase+selData:], dataSegment.descriptor())
}

// pageTablesEnd is the end of the area holding the PML4, the PDPT and the
// page directories.
const pageTablesEnd = pdBase + maxPD*0x1000

// setupPageTables identity-maps all of mem with 2 MiB pages; see
// writePageTables.
func setupPageTables(mem []byte) error {
	if len(mem) < pageTablesEnd {
		return fmt.Errorf("guest memory of %d bytes cannot hold the page tables", len(mem))
	}
	return writePageTables(mem[:pageTablesEnd], uint64(len(mem)))
}

// writePageTables writes, into low (guest memory from address 0 up to
// pageTablesEnd), page tables identity-mapping memSize bytes with 2 MiB
// pages: one PML4 entry, one PDPT entry per GiB and one PD entry per 2 MiB
// page, all present and writable. Addresses at or above memSize stay
// unmapped, so a guest touching them faults.
func writePageTables(low []byte, memSize uint64) error {
	if memSize%pageSize2M != 0 || memSize == 0 || memSize > maxPD<<30 {
		return fmt.Errorf("cannot map %d bytes of guest memory with 2 MiB pages", memSize)
	}
	if len(low) < pageTablesEnd {
		return fmt.Errorf("page table area of %d bytes is too small", len(low))
	}
	le := binary.LittleEndian
	clear(low[pml4Base:pageTablesEnd])
	le.PutUint64(low[pml4Base:], pdptBase|ptePresent|pteWritable)
	for addr := uint64(0); addr < memSize; addr += pageSize2M {
		gib := addr >> 30
		if addr&(1<<30-1) == 0 {
			le.PutUint64(low[pdptBase+gib*8:], (pdBase+gib*0x1000)|ptePresent|pteWritable)
		}
		le.PutUint64(low[pdBase+addr/pageSize2M*8:], addr|ptePresent|pteWritable|ptePageSize)
	}
	return nil
}

// bootInfo is struct hvt_boot_info, the structure whose guest-physical
// address the guest receives in RDI.
type bootInfo struct {
	memSize      uint64
	kernelEnd    uint64
	cpuCycleFreq uint64
	cmdline      uint64
	mft          uint64
}

// put writes b at bootInfoBase.
func (b bootInfo) put(mem []byte) {
	le := binary.LittleEndian
	p := mem[bootInfoBase : bootInfoBase+bootInfoSize]
	le.PutUint64(p[0:], b.memSize)
	le.PutUint64(p[8:], b.kernelEnd)
	le.PutUint64(p[16:], b.cpuCycleFreq)
	le.PutUint64(p[24:], b.cmdline)
	le.PutUint64(p[32:], b.mft)
}
