package tender

import (
	"debug/elf"
	"encoding/binary"
	"fmt"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// Guest memory layout (spt_abi.h). Guest addresses are addresses in the
// guest process: memory is mapped at its own address, from hostMemBase up
// to the guest memory size.
//
//	0x10000  SPT_HOST_MEM_BASE: the first mapped byte (Linux refuses
//	         mappings below vm.mmap_min_addr, 64 KiB by default)
//	0x11000  struct spt_boot_info (40 bytes)
//	0x11028  the manifest copy, right after it (at most 8 + 64*104 bytes)
//	...      the command line, right after the manifest (8192 bytes)
//	0x100000 lowest address of the unikernel image
//	mem-8    the initial stack pointer
const (
	hostMemBase  = 0x10000
	bootInfoBase = hostMemBase + 0x1000
	bootInfoSize = 40
	mftBase      = bootInfoBase + bootInfoSize
	guestMinBase = 0x100000

	// internalTimerfd is SPT_INTERNAL_TIMERFD, the epoll data of the
	// tender's timerfd: the guest skips it when it builds the ready set.
	internalTimerfd = 0xfffffffe

	// pageSize is the granularity of memory protection.
	pageSize = 0x1000
)

// DefaultMemMB is solo5-spt's default guest memory. Guest memory is
// reserved without backing (MAP_NORESERVE), so pages the guest never
// touches cost nothing.
const DefaultMemMB = 512

// lowMemory returns what the tender writes at bootInfoBase before the
// guest starts: struct spt_boot_info, the manifest copy mft right after it,
// and the command line cmdline (NUL-terminated, at most solo5.MaxCmdline
// bytes) right after the manifest, in an area of solo5.MaxCmdline bytes.
func lowMemory(memSize, kernelEnd uint64, mft, cmdline []byte, epollFD, timerFD int) ([]byte, error) {
	if len(mft) > solo5.MaxManifestSize {
		return nil, fmt.Errorf("manifest of %d bytes is larger than %d", len(mft), solo5.MaxManifestSize)
	}
	if len(cmdline) > solo5.MaxCmdline {
		return nil, fmt.Errorf("command line of %d bytes is larger than %d", len(cmdline), solo5.MaxCmdline)
	}
	cmdlineAddr := uint64(mftBase + len(mft))
	b := make([]byte, bootInfoSize+len(mft)+solo5.MaxCmdline)
	le := binary.LittleEndian
	le.PutUint64(b[0:], memSize)
	le.PutUint64(b[8:], kernelEnd)
	le.PutUint64(b[16:], cmdlineAddr)
	le.PutUint64(b[24:], mftBase)
	le.PutUint32(b[32:], uint32(int32(epollFD)))
	le.PutUint32(b[36:], uint32(int32(timerFD)))
	copy(b[bootInfoSize:], mft)
	copy(b[bootInfoSize+len(mft):], cmdline)
	return b, nil
}

// Memory protections, as mmap and mprotect take them.
const (
	protRead  = 0x1
	protWrite = 0x2
	protExec  = 0x4
)

// protRange is a page-aligned range of guest memory and the protection a
// loaded segment asks for it.
type protRange struct {
	start, end uint64
	prot       int
}

// planImage parses the spt unikernel img for a guest memory of memSize
// bytes and returns its segments and the protection of the pages each
// covers. Besides what solo5.ParseExecutable refuses, it refuses, wrapping
// solo5.ErrBadExecutable: a segment both writable and executable (the
// guest would be handed memory it can write code into), segments sharing a
// page (they could not each have their own protection), a segment beyond
// guest memory, and an image leaving no memory for the stack.
func planImage(img []byte, memSize uint64) (*solo5.Executable, []protRange, error) {
	x, err := solo5.ParseExecutable(img, solo5.LoadLimits{MinAddr: guestMinBase, MaxAddr: 1 << 47})
	if err != nil {
		return nil, nil, err
	}
	var prots []protRange
	for i, s := range x.Segments {
		if s.Flags&elf.PF_W != 0 && s.Flags&elf.PF_X != 0 {
			return nil, nil, fmt.Errorf("%w: segment at %#x is both writable and executable", solo5.ErrBadExecutable, s.Addr)
		}
		if s.End() > memSize {
			return nil, nil, fmt.Errorf("%w: segment at %#x (%d bytes) extends beyond guest memory (%d bytes); try a larger --mem", solo5.ErrBadExecutable, s.Addr, s.MemSize, memSize)
		}
		r := protRange{start: s.Addr &^ (pageSize - 1), end: (s.End() + pageSize - 1) &^ (pageSize - 1)}
		if s.Flags&elf.PF_R != 0 {
			r.prot |= protRead
		}
		if s.Flags&elf.PF_W != 0 {
			r.prot |= protWrite
		}
		if s.Flags&elf.PF_X != 0 {
			r.prot |= protExec
		}
		if i > 0 && prots[i-1].end > r.start {
			return nil, nil, fmt.Errorf("%w: segments at %#x and %#x share a page, so they cannot each have their own protection", solo5.ErrBadExecutable, x.Segments[i-1].Addr, s.Addr)
		}
		prots = append(prots, r)
	}
	if end := x.End(); end >= memSize {
		return nil, nil, fmt.Errorf("%w: image ends at %#x, leaving no guest memory for the stack (%d bytes); try a larger --mem", solo5.ErrBadExecutable, end, memSize)
	}
	return x, prots, nil
}

// fdRange is an inclusive range of descriptors for close_range; its layout
// (two uint32) is what spawn_linux_amd64.s reads.
type fdRange struct{ first, last uint32 }

// closeRanges returns the ranges of descriptors to close so that only keep
// (non-negative, in any order, duplicates allowed) stay open: the gaps
// below, between and above them, the last one open-ended.
func closeRanges(keep []int) []fdRange {
	sorted := append([]int(nil), keep...)
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && sorted[j] < sorted[j-1]; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	var out []fdRange
	next := 0
	for _, k := range sorted {
		if k > next {
			out = append(out, fdRange{uint32(next), uint32(k - 1)})
		}
		next = max(next, k+1)
	}
	return append(out, fdRange{uint32(next), ^uint32(0)})
}

// addrRange is a range of addresses [start, end); its layout (two uint64)
// is what spawn_linux_amd64.s reads.
type addrRange struct{ start, end uint64 }

// userTop is the end of the user address space that munmap accepts on
// x86-64 with 4-level page tables (TASK_SIZE, one page below 2^47). With
// 5-level page tables the kernel maps nothing above it unless a process
// asks for such an address, which neither the Go runtime nor the tender
// does.
const userTop = 1<<47 - pageSize

// unmapRanges returns the ranges to unmap so that only keep (in any order,
// possibly overlapping or adjacent, each within [0, top)) stays mapped:
// the gaps below, between and above them, in [0, top). Unmapping a range
// holding no mapping succeeds, so the gaps need not be known to be mapped.
func unmapRanges(keep []addrRange, top uint64) []addrRange {
	sorted := append([]addrRange(nil), keep...)
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && sorted[j].start < sorted[j-1].start; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	var out []addrRange
	next := uint64(0)
	for _, k := range sorted {
		if k.start > next {
			out = append(out, addrRange{next, k.start})
		}
		next = max(next, k.end)
	}
	if next < top {
		out = append(out, addrRange{next, top})
	}
	return out
}
