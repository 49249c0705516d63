//go:build linux && amd64

package tender

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// childParams is everything spawnGuest needs, prepared by Go code before
// the fork at the start of the child page. The child runs no Go code and
// keeps nothing of the tender's memory but that page, guest memory and
// spawnGuest's own code, so every address here points into the child page.
// spawn_linux_amd64.s addresses the fields through go_asm.h, so the layout
// is the compiler's, not a copy of it.
type childParams struct {
	fullMask  uint64 // every signal, blocked around the fork
	emptyMask uint64 // no signal, the guest's mask
	oldMask   uint64 // the forking thread's mask, saved and restored by the parent half
	forked    uint64 // the guest's pid or the clone's -errno, written by the helper
	ppid      uint64 // the tender's pid, which the child checks its parent is
	errFD     uint64 // the pipe's write end for setup failures
	ranges    uint64 // the descriptor ranges to close, []fdRange
	nranges   uint64
	closeMax  uint64 // the last descriptor the close() fallback closes
	unmap     uint64 // the address ranges to unmap, []addrRange
	nunmap    uint64
	system    uint64 // the kernel's own mappings, unmapped where it allows, []addrRange
	nsystem   uint64
	childSP   uint64    // the child's stack pointer, at the end of the child page
	prog      uint64    // the seccomp program, *sockFprog
	entry     uint64    // guest entry point
	stack     uint64    // guest RSP
	bootInfo  uint64    // guest RDI
	dfl       [4]uint64 // the kernel's struct sigaction (handler, flags, restorer, mask): zero is SIG_DFL
	report    [2]uint64 // failed step and errno, written to errFD
}

// sockFprog is struct sock_fprog, the argument of
// seccomp(SECCOMP_SET_MODE_FILTER); filter is the address of the first
// instruction.
type sockFprog struct {
	len    uint16
	_      [6]byte
	filter uint64
}

// childStackSize is the room for the child's stack at the end of the child
// page. The child's code makes no calls and, with every signal handler
// SIG_DFL, no signal frame is ever pushed, so it is a margin.
const childStackSize = 512

// The steps of the child's setup that report their failure through the
// pipe, as numbered in spawn_linux_amd64.s.
var childSteps = map[uint64]string{
	1: "prctl(PR_SET_PDEATHSIG)",
	2: "close_range",
	3: "rt_sigprocmask",
	4: "prctl(PR_SET_NO_NEW_PRIVS)",
	5: "munmap",
}

// spawnGuest forks the guest process and returns its pid, or the errno of
// the failed rt_sigprocmask or clone. It is implemented in assembly.
//
// On the calling thread it blocks every signal, creates a helper with
// clone(CLONE_VM|CLONE_VFORK) on the child page's stack, which forks the
// guest process with clone(CLONE_PARENT) and exits, reaps the helper and
// restores the signal mask. The helper is there because a child that
// shares its parent's memory starts without the restartable-sequences
// registration the C library may have made for the calling thread, and so
// does a process it forks, while one forked straight from this thread
// would be killed by the kernel as soon as it unmapped that thread's TLS.
//
// The child, which runs no Go code, resets every signal handler to
// SIG_DFL, asks for SIGKILL when the forking thread dies (and exits if the
// tender is already gone), closes every descriptor in p.ranges, moves its
// stack pointer to p.childSP, unmaps every range in p.unmap (everything
// but guest memory, the child page and spawnGuest's code) and then,
// ignoring failures, each of p.system, unblocks every signal, sets
// PR_SET_NO_NEW_PRIVS, closes p.errFD, installs the seccomp filter p.prog
// and jumps to p.entry with RSP = p.stack and RDI = p.bootInfo. A failure
// before the pipe is closed is reported on it as two uint64 (the step of
// childSteps and the errno) before the child exits with status 1.
//
// p must point into the child page, and the caller must run on a locked OS
// thread that lives as long as the guest, since the death signal is tied
// to that thread.
func spawnGuest(p *childParams) (pid, errno uintptr)

// trampolineText returns where spawnGuest's code starts and ends: the
// addresses of spawnGuest and of spawnGuestEnd, an assembly symbol that
// follows it. The guest process keeps that code mapped, since it runs it
// while it unmaps the rest. It is implemented in assembly, because the
// address of an assembly function taken in Go is that of a wrapper.
func trampolineText() (start, end uintptr)

// trampolinePages returns the pages holding spawnGuest's code, checking
// that the linker placed spawnGuestEnd right after it.
func trampolinePages() (addrRange, error) {
	start, end := trampolineText()
	if end <= start || end-start > 2*pageSize {
		return addrRange{}, fmt.Errorf("the guest trampoline's code [%#x, %#x) is not where the tender expects it", start, end)
	}
	return addrRange{uint64(start) &^ (pageSize - 1), (uint64(end) + pageSize - 1) &^ (pageSize - 1)}, nil
}

// childPage is the memory prepared for the guest process before the fork,
// outside the Go heap: the guest process keeps it when it unmaps the rest
// of the tender's memory, so it holds all the child reads from there on
// (the parameters, the seccomp program, the descriptor and address ranges)
// and the child's stack. It holds nothing secret: the guest can read it.
type childPage struct {
	mem    []byte
	params *childParams
}

// newChildPage maps and fills the child page for a guest whose memory
// ends at memSize. params is copied into it; its address fields are filled
// in here.
func newChildPage(params childParams, memSize uint64, filter []bpf.RawInstruction, ranges []fdRange, system []addrRange) (*childPage, error) {
	code, err := trampolinePages()
	if err != nil {
		return nil, err
	}
	// Guest memory, the trampoline's pages and the child page itself are
	// kept, and the kernel's own mappings are unmapped apart: at most one
	// gap more than that lies around them.
	maxUnmap := 3 + len(system) + 1
	size := 0
	place := func(n uintptr) int {
		at := size
		size = (size + int(n) + 15) &^ 15
		return at
	}
	atParams := place(unsafe.Sizeof(childParams{}))
	atProg := place(unsafe.Sizeof(sockFprog{}))
	atFilter := place(uintptr(len(filter)) * unsafe.Sizeof(bpf.RawInstruction{}))
	atRanges := place(uintptr(len(ranges)) * unsafe.Sizeof(fdRange{}))
	atUnmap := place(uintptr(maxUnmap) * unsafe.Sizeof(addrRange{}))
	atSystem := place(uintptr(len(system)) * unsafe.Sizeof(addrRange{}))
	place(childStackSize)
	size = (size + pageSize - 1) &^ (pageSize - 1)

	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("map the guest process's child page: %w", err)
	}
	base := uint64(uintptr(unsafe.Pointer(&mem[0])))
	page := addrRange{base, base + uint64(size)}
	unmap := unmapRanges(append([]addrRange{{hostMemBase, memSize}, code, page}, system...), userTop)
	if len(unmap) > maxUnmap {
		unix.Munmap(mem)
		return nil, fmt.Errorf("%d address ranges to unmap in the guest process, room for %d", len(unmap), maxUnmap)
	}

	copy(unsafe.Slice((*bpf.RawInstruction)(unsafe.Pointer(&mem[atFilter])), len(filter)), filter)
	copy(unsafe.Slice((*fdRange)(unsafe.Pointer(&mem[atRanges])), len(ranges)), ranges)
	copy(unsafe.Slice((*addrRange)(unsafe.Pointer(&mem[atUnmap])), len(unmap)), unmap)
	copy(unsafe.Slice((*addrRange)(unsafe.Pointer(&mem[atSystem])), len(system)), system)
	prog := (*sockFprog)(unsafe.Pointer(&mem[atProg]))
	prog.len = uint16(len(filter))
	prog.filter = base + uint64(atFilter)

	p := (*childParams)(unsafe.Pointer(&mem[atParams]))
	*p = params
	p.ranges, p.nranges = base+uint64(atRanges), uint64(len(ranges))
	p.unmap, p.nunmap = base+uint64(atUnmap), uint64(len(unmap))
	p.system, p.nsystem = base+uint64(atSystem), uint64(len(system))
	p.prog = base + uint64(atProg)
	p.childSP = page.end
	return &childPage{mem: mem, params: p}, nil
}

// unmap unmaps the tender's copy of the child page.
func (c *childPage) unmap() {
	if c.mem != nil {
		unix.Munmap(c.mem)
		c.mem, c.params = nil, nil
	}
}

// spawn prepares the child page for spawnGuest and calls it. memSize is
// where guest memory ends, keep are the descriptors the guest keeps,
// filter its seccomp program, errFD the report pipe's write end and system
// the kernel's own mappings (see systemMappings).
func spawn(entry, stack, bootInfo, memSize uint64, keep []int, filter []bpf.RawInstruction, errFD int, system []addrRange) (int, error) {
	if len(filter) == 0 || len(filter) > maxFilterLen {
		return 0, fmt.Errorf("seccomp filter of %d instructions", len(filter))
	}
	closeMax, err := highestOpenFD()
	if err != nil {
		return 0, err
	}
	params := childParams{
		fullMask:  ^uint64(0),
		emptyMask: 0,
		// oldMask, forked and report are filled in by the assembly, and dfl is
		// SIG_DFL: all start out zero.
		oldMask:  0,
		dfl:      [4]uint64{},
		report:   [2]uint64{},
		ppid:     uint64(unix.Getpid()),
		errFD:    uint64(errFD),
		closeMax: uint64(closeMax),
		entry:    entry,
		stack:    stack,
		bootInfo: bootInfo,
	}
	page, err := newChildPage(params, memSize, filter, closeRanges(append([]int{errFD}, keep...)), system)
	if err != nil {
		return 0, err
	}
	// The child has its own copy once forked.
	defer page.unmap()
	pid, errno := spawnGuest(page.params)
	if errno != 0 {
		return 0, fmt.Errorf("fork the guest process: %w", unix.Errno(errno))
	}
	return int(pid), nil
}

// readReport reads the child's setup report from the pipe's read end: nil
// when the child closed the pipe without writing, having reached the
// seccomp filter, or the failure it reported.
func readReport(fd int) error {
	var report [16]byte
	n := 0
	for n < len(report) {
		m, err := unix.Read(fd, report[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read the guest process's setup report: %w", err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	switch n {
	case 0:
		return nil
	case len(report):
		step := binary.LittleEndian.Uint64(report[0:])
		errno := binary.LittleEndian.Uint64(report[8:])
		what, ok := childSteps[step]
		if !ok {
			what = fmt.Sprintf("step %d", step)
		}
		return fmt.Errorf("setting up the guest process: %s: %w", what, unix.Errno(errno))
	}
	return fmt.Errorf("setting up the guest process: truncated report of %d bytes", n)
}

// highestOpenFD is the highest descriptor open in the tender, which bounds
// the close() fallback's last, open-ended range: descriptors are allocated
// lowest first, so none above it exists when the guest is forked.
func highestOpenFD() (int, error) {
	f, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("list open descriptors: %w", err)
	}
	defer unix.Close(f)
	highest := f
	buf := make([]byte, 4096)
	for {
		n, err := unix.ReadDirent(f, buf)
		if err != nil {
			return 0, fmt.Errorf("list open descriptors: %w", err)
		}
		if n == 0 {
			return highest, nil
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		for _, name := range names {
			fd := 0
			for _, c := range []byte(name) {
				fd = fd*10 + int(c-'0')
			}
			highest = max(highest, fd)
		}
	}
}
