//go:build linux && amd64

package tender

import (
	"encoding/binary"
	"fmt"
	"runtime"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// childParams is everything spawnGuest needs, prepared by Go code before
// the fork: the child reads it from its copy of the heap and runs no Go
// code. spawn_linux_amd64.s addresses the fields through go_asm.h, so the
// layout is the compiler's, not a copy of it.
type childParams struct {
	fullMask  uint64 // every signal, blocked around the fork
	emptyMask uint64 // no signal, the guest's mask
	oldMask   uint64 // the forking thread's mask, saved and restored by the parent half
	ppid      uint64 // the tender's pid, which the child checks its parent is
	errFD     uint64 // the pipe's write end for setup failures
	ranges    *fdRange
	nranges   uint64
	closeMax  uint64 // the last descriptor the close() fallback closes
	prog      *sockFprog
	entry     uint64    // guest entry point
	stack     uint64    // guest RSP
	bootInfo  uint64    // guest RDI
	dfl       [4]uint64 // the kernel's struct sigaction (handler, flags, restorer, mask): zero is SIG_DFL
	report    [2]uint64 // failed step and errno, written to errFD
}

// sockFprog is struct sock_fprog, the argument of
// seccomp(SECCOMP_SET_MODE_FILTER).
type sockFprog struct {
	len    uint16
	_      [6]byte
	filter *bpf.RawInstruction
}

// The steps of the child's setup that report their failure through the
// pipe, as numbered in spawn_linux_amd64.s.
var childSteps = map[uint64]string{
	1: "prctl(PR_SET_PDEATHSIG)",
	2: "close_range",
	3: "rt_sigprocmask",
	4: "prctl(PR_SET_NO_NEW_PRIVS)",
}

// spawnGuest forks the guest process and returns its pid, or the errno of
// the failed rt_sigprocmask or clone. It is implemented in assembly.
//
// On the calling thread it blocks every signal, forks with clone(SIGCHLD)
// and, in the parent, restores the signal mask and returns. The child,
// which runs no Go code, resets every signal handler to SIG_DFL, asks for
// SIGKILL when the forking thread dies (and exits if the tender is already
// gone), closes every descriptor in p.ranges, unblocks every signal, sets
// PR_SET_NO_NEW_PRIVS, closes p.errFD, installs the seccomp filter p.prog
// and jumps to p.entry with RSP = p.stack and RDI = p.bootInfo. A failure
// before the pipe is closed is reported on it as two uint64 (the step of
// childSteps and the errno) before the child exits with status 1.
//
// The caller must run on a locked OS thread that lives as long as the
// guest, since the death signal is tied to that thread.
func spawnGuest(p *childParams) (pid, errno uintptr)

// spawn prepares the parameters for spawnGuest and calls it. keep are the
// descriptors the guest keeps, filter its seccomp program and errFD the
// report pipe's write end.
func spawn(entry, stack, bootInfo uint64, keep []int, filter []bpf.RawInstruction, errFD int) (int, error) {
	if len(filter) == 0 || len(filter) > maxFilterLen {
		return 0, fmt.Errorf("seccomp filter of %d instructions", len(filter))
	}
	all := append([]int{errFD}, keep...)
	ranges := closeRanges(all)
	closeMax, err := highestOpenFD()
	if err != nil {
		return 0, err
	}
	prog := &sockFprog{len: uint16(len(filter)), filter: &filter[0]}
	p := &childParams{
		fullMask:  ^uint64(0),
		emptyMask: 0,
		// oldMask and report are filled in by the assembly, and dfl is
		// SIG_DFL: all start out zero.
		oldMask:  0,
		dfl:      [4]uint64{},
		report:   [2]uint64{},
		ppid:     uint64(unix.Getpid()),
		errFD:    uint64(errFD),
		ranges:   &ranges[0],
		nranges:  uint64(len(ranges)),
		closeMax: uint64(closeMax),
		prog:     prog,
		entry:    entry,
		stack:    stack,
		bootInfo: bootInfo,
	}
	pid, errno := spawnGuest(p)
	runtime.KeepAlive(p)
	runtime.KeepAlive(ranges)
	runtime.KeepAlive(filter)
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
