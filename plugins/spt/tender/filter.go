package tender

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// Linux x86-64 system call numbers the guest may use.
const (
	sysRead           = 0
	sysWrite          = 1
	sysPread64        = 17
	sysPwrite64       = 18
	sysArchPrctl      = 158
	sysClockGettime   = 228
	sysExitGroup      = 231
	sysEpollPwait     = 281
	sysTimerfdSettime = 286
)

// Values the filter compares with or returns (linux/audit.h,
// linux/seccomp.h, asm/prctl.h, linux/time.h).
const (
	auditArchX8664        = 0xc000003e
	x32SyscallBit         = 0x40000000
	seccompRetAllow       = 0x7fff0000
	seccompRetKillProcess = 0x80000000
	archSetFS             = 0x1002
	clockRealtime         = 0
	clockMonotonic        = 1

	// maxFilterLen is BPF_MAXINSNS, the longest program the kernel loads.
	maxFilterLen = 4096
)

// Offsets in struct seccomp_data: the system call number, the audit
// architecture, and the six 64-bit arguments, each as two 32-bit words
// (little-endian: the low word first).
const (
	dataNr   = 0
	dataArch = 4
	dataArgs = 16
)

// filterDevices is what the guest's seccomp filter is written for: the
// descriptors the tender hands the guest.
type filterDevices struct {
	epollFD, timerFD int
	taps             []int
	blocks           []blockFilter
}

// blockFilter is one block device as the filter sees it.
type blockFilter struct {
	fd                  int
	blockSize, capacity uint64
}

// argCheck is a condition on one argument of a system call: equal to val,
// or (le) at most val, compared as unsigned 64-bit numbers.
type argCheck struct {
	arg int
	le  bool
	val uint64
}

// syscallRule allows system call nr when every check of any one of alts
// holds; an empty alternative allows the call whatever its arguments.
type syscallRule struct {
	nr   uint32
	alts [][]argCheck
}

// rules is the policy of the spt ABI for devs, the calls the Solo5 spt
// bindings make: write to the console, exit_group, epoll_pwait on the epoll
// set, timerfd_settime on the internal timer, clock_gettime of the
// monotonic and realtime clocks, arch_prctl(ARCH_SET_FS), read and write on
// each tap, and pread64 and pwrite64 of exactly one block within each block
// device. A block device smaller than one block gets no rule, rather than
// one whose last offset would wrap around.
func rules(devs filterDevices) []syscallRule {
	eq := func(arg int, v uint64) argCheck { return argCheck{arg: arg, val: v} }
	fd := func(v int) uint64 { return uint64(int64(v)) }
	write := syscallRule{nr: sysWrite, alts: [][]argCheck{{eq(0, 1)}}}
	read := syscallRule{nr: sysRead}
	for _, t := range devs.taps {
		write.alts = append(write.alts, []argCheck{eq(0, fd(t))})
		read.alts = append(read.alts, []argCheck{eq(0, fd(t))})
	}
	pread := syscallRule{nr: sysPread64}
	pwrite := syscallRule{nr: sysPwrite64}
	for _, b := range devs.blocks {
		if b.blockSize == 0 || b.capacity < b.blockSize {
			continue
		}
		alt := []argCheck{eq(0, fd(b.fd)), eq(2, b.blockSize), {arg: 3, le: true, val: b.capacity - b.blockSize}}
		pread.alts = append(pread.alts, alt)
		pwrite.alts = append(pwrite.alts, alt)
	}
	return []syscallRule{
		write,
		{nr: sysEpollPwait, alts: [][]argCheck{{eq(0, fd(devs.epollFD))}}},
		{nr: sysTimerfdSettime, alts: [][]argCheck{{eq(0, fd(devs.timerFD))}}},
		{nr: sysClockGettime, alts: [][]argCheck{{eq(0, clockMonotonic)}, {eq(0, clockRealtime)}}},
		read,
		pread,
		pwrite,
		{nr: sysExitGroup, alts: [][]argCheck{nil}},
		{nr: sysArchPrctl, alts: [][]argCheck{{eq(0, archSetFS)}}},
	}
}

// asmItem is one line of the filter before jumps are resolved: a plain
// instruction, a label, or a jump to labels ("" is the next instruction).
type asmItem struct {
	ins       bpf.Instruction
	label     string
	cond      bpf.JumpTest
	val       uint32
	jt, jf    string
	ja        string
	condJump  bool
	isLabel   bool
	alwaysJmp bool
}

// assembler collects asmItems and resolves their labels.
type assembler struct {
	items  []asmItem
	labels int
}

func (a *assembler) op(ins bpf.Instruction) { a.items = append(a.items, asmItem{ins: ins}) }

func (a *assembler) jump(cond bpf.JumpTest, val uint32, jt, jf string) {
	a.items = append(a.items, asmItem{condJump: true, cond: cond, val: val, jt: jt, jf: jf})
}

func (a *assembler) always(to string) { a.items = append(a.items, asmItem{alwaysJmp: true, ja: to}) }

func (a *assembler) mark(label string) {
	a.items = append(a.items, asmItem{isLabel: true, label: label})
}

func (a *assembler) newLabel() string {
	a.labels++
	return fmt.Sprintf("L%d", a.labels)
}

func (a *assembler) load(off uint32) { a.op(bpf.LoadAbsolute{Off: off, Size: 4}) }

func (a *assembler) ret(v uint32) { a.op(bpf.RetConstant{Val: v}) }

// resolve turns the items into instructions, replacing labels by skips.
func (a *assembler) resolve() ([]bpf.Instruction, error) {
	pos := map[string]int{}
	n := 0
	for _, it := range a.items {
		if it.isLabel {
			pos[it.label] = n
			continue
		}
		n++
	}
	var out []bpf.Instruction
	skip := func(label string) (int, error) {
		if label == "" {
			return 0, nil
		}
		to, ok := pos[label]
		if !ok {
			return 0, fmt.Errorf("seccomp filter: undefined label %s", label)
		}
		d := to - len(out) - 1
		if d < 0 {
			return 0, fmt.Errorf("seccomp filter: backward jump to %s", label)
		}
		return d, nil
	}
	for _, it := range a.items {
		switch {
		case it.isLabel:
		case it.alwaysJmp:
			d, err := skip(it.ja)
			if err != nil {
				return nil, err
			}
			out = append(out, bpf.Jump{Skip: uint32(d)})
		case it.condJump:
			t, err := skip(it.jt)
			if err != nil {
				return nil, err
			}
			f, err := skip(it.jf)
			if err != nil {
				return nil, err
			}
			if t > 255 || f > 255 {
				return nil, fmt.Errorf("seccomp filter: conditional jump of more than 255 instructions")
			}
			out = append(out, bpf.JumpIf{Cond: it.cond, Val: it.val, SkipTrue: uint8(t), SkipFalse: uint8(f)})
		default:
			out = append(out, it.ins)
		}
	}
	return out, nil
}

// buildFilter assembles the guest's seccomp filter for devs.
//
// The program first kills the process for any architecture but x86-64 and
// for any system call number with the x32 bit (or higher) set, so the x32
// and i386 system call tables can never match a rule. Then, for each rule,
// it reloads the number, skips the rule (with an unconditional jump, which
// has no length limit) unless it matches, and tries each alternative in
// turn: an argument compared for equality checks both 32-bit halves, one
// compared with le checks the high half first and the low half only when
// the high halves are equal. The first alternative that holds returns
// SECCOMP_RET_ALLOW; a matched call none of whose alternatives holds, and
// any call without a rule, returns SECCOMP_RET_KILL_PROCESS.
func buildFilter(devs filterDevices) ([]bpf.RawInstruction, error) {
	a := &assembler{}
	a.load(dataArch)
	a.jump(bpf.JumpEqual, auditArchX8664, "ok_arch", "")
	a.ret(seccompRetKillProcess)
	a.mark("ok_arch")
	a.load(dataNr)
	a.jump(bpf.JumpGreaterOrEqual, x32SyscallBit, "", "ok_nr")
	a.ret(seccompRetKillProcess)
	a.mark("ok_nr")
	for _, r := range rules(devs) {
		if len(r.alts) == 0 {
			continue
		}
		next := a.newLabel()
		a.load(dataNr)
		a.jump(bpf.JumpEqual, r.nr, "in_"+next, "")
		a.always(next)
		a.mark("in_" + next)
		for _, alt := range r.alts {
			fail := a.newLabel()
			for _, c := range alt {
				lo, hi := uint32(c.val), uint32(c.val>>32)
				off := uint32(dataArgs + 8*c.arg)
				if c.le {
					ok := a.newLabel()
					a.load(off + 4)
					a.jump(bpf.JumpGreaterThan, hi, fail, "")
					a.jump(bpf.JumpEqual, hi, "", ok)
					a.load(off)
					a.jump(bpf.JumpGreaterThan, lo, fail, "")
					a.mark(ok)
					continue
				}
				a.load(off)
				a.jump(bpf.JumpEqual, lo, "", fail)
				a.load(off + 4)
				a.jump(bpf.JumpEqual, hi, "", fail)
			}
			a.ret(seccompRetAllow)
			a.mark(fail)
		}
		a.ret(seccompRetKillProcess)
		a.mark(next)
	}
	a.ret(seccompRetKillProcess)
	insts, err := a.resolve()
	if err != nil {
		return nil, err
	}
	if len(insts) > maxFilterLen {
		return nil, fmt.Errorf("seccomp filter of %d instructions is longer than the kernel's limit of %d", len(insts), maxFilterLen)
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, fmt.Errorf("assemble the seccomp filter: %w", err)
	}
	return raw, nil
}
