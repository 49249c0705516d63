package tender

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/filter.golden")

// sampleDevices is the device set of the golden listing and of most
// semantic tests: one tap and two block devices.
var sampleDevices = filterDevices{
	epollFD: 3,
	timerFD: 4,
	taps:    []int{7},
	blocks: []blockFilter{
		{fd: 5, blockSize: 512, capacity: 1 << 20},
		{fd: 6, blockSize: 4096, capacity: 8 << 30},
	},
}

// listing renders a program one instruction a line, with its raw
// encoding, as testdata/filter.golden holds it.
func listing(t *testing.T, raw []bpf.RawInstruction) string {
	t.Helper()
	insts, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the filter does not disassemble")
	}
	var b strings.Builder
	for i, in := range insts {
		r := raw[i]
		fmt.Fprintf(&b, "%3d  %-28v  code=%#04x jt=%d jf=%d k=%#x\n", i, in, r.Op, r.Jt, r.Jf, r.K)
	}
	return b.String()
}

// TestFilterGolden compares the filter for sampleDevices, instruction by
// instruction, with the reviewed listing in testdata/filter.golden (go test
// -update rewrites it, for review).
func TestFilterGolden(t *testing.T) {
	raw, err := buildFilter(sampleDevices)
	if err != nil {
		t.Fatal(err)
	}
	got := listing(t, raw)
	path := filepath.Join("testdata", "filter.golden")
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("filter differs from %s at line %d:\n got: %s\nwant: %s", path, i+1, g, w)
			}
		}
	}
}

// call is one seccomp_data input.
type call struct {
	nr   uint32
	arch uint32
	args [6]uint64
}

// data encodes c as struct seccomp_data for the bpf package's VM. The
// kernel loads each 32-bit word in native (little-endian) order, the VM in
// network (big-endian) order, so every word is stored big-endian here: the
// program then sees the values the kernel would show it.
func (c call) data() []byte {
	b := make([]byte, 64)
	be := binary.BigEndian
	be.PutUint32(b[0:], c.nr)
	be.PutUint32(b[4:], c.arch)
	be.PutUint32(b[8:], 0x12345678) // instruction pointer, ignored
	for i, a := range c.args {
		be.PutUint32(b[16+8*i:], uint32(a))
		be.PutUint32(b[20+8*i:], uint32(a>>32))
	}
	return b
}

// sys is a native x86-64 call with args.
func sys(nr uint32, args ...uint64) call {
	c := call{nr: nr, arch: auditArchX8664}
	copy(c.args[:], args)
	return c
}

// vmFor runs filters through the bpf package's VM, from their assembled
// form: what is tested is what the kernel would load.
func vmFor(t *testing.T, devs filterDevices) *bpf.VM {
	t.Helper()
	raw, err := buildFilter(devs)
	if err != nil {
		t.Fatal(err)
	}
	insts, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the filter does not disassemble")
	}
	vm, err := bpf.NewVM(insts)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// verdict runs one call.
func verdict(t *testing.T, vm *bpf.VM, c call) uint32 {
	t.Helper()
	r, err := vm.Run(c.data())
	if err != nil {
		t.Fatalf("%+v: %v", c, err)
	}
	return uint32(r)
}

func TestFilterSemantics(t *testing.T) {
	vm := vmFor(t, sampleDevices)
	const hi = 1 << 32
	const kb4, gb8 = 4096, 8 << 30
	allowed := []call{
		sys(sysWrite, 1, 0x200000, 18),
		sys(sysWrite, 7, 0x200000, 1514),
		sys(sysRead, 7, 0x200000, 1514),
		sys(sysExitGroup, 0),
		sys(sysExitGroup, 255),
		sys(sysEpollPwait, 3, 0x200000, 65, ^uint64(0), 0, 0),
		sys(sysTimerfdSettime, 4, 1, 0x200000, 0),
		sys(sysClockGettime, clockMonotonic, 0x200000),
		sys(sysClockGettime, clockRealtime, 0x200000),
		sys(sysArchPrctl, archSetFS, 0x300000),
		sys(sysPread64, 5, 0x200000, 512, 0),
		sys(sysPwrite64, 5, 0x200000, 512, 0),
		sys(sysPread64, 5, 0x200000, 512, 1<<20-512),
		sys(sysPwrite64, 5, 0x200000, 512, 1<<20-512),
		sys(sysPread64, 5, 0x200000, 512, 1000), // alignment is the guest's business
		sys(sysPread64, 6, 0x200000, kb4, gb8-kb4),
		sys(sysPwrite64, 6, 0x200000, kb4, gb8-kb4),
		sys(sysPwrite64, 6, 0x200000, kb4, hi),        // high half below the limit's
		sys(sysPwrite64, 6, 0x200000, kb4, hi+0x1000), // high halves equal, low half below
	}
	for _, c := range allowed {
		if v := verdict(t, vm, c); v != seccompRetAllow {
			t.Errorf("%+v: verdict %#x, want allow", c, v)
		}
	}
	killed := []call{
		// Calls outside the policy.
		sys(39),                     // getpid
		sys(257, 0, 0x200000, 0),    // openat
		sys(59),                     // execve
		sys(56),                     // clone
		sys(57),                     // fork
		sys(9, 0, 4096, 7, 0x22),    // mmap
		sys(10, 0x100000, 4096, 7),  // mprotect
		sys(62, 1, 9),               // kill
		sys(3, 1),                   // close
		sys(157, 38, 0),             // prctl
		sys(317, 1, 0, 0),           // seccomp
		sys(60, 0),                  // exit: only exit_group
		sys(7, 0x200000, 1, 0),      // poll
		sys(271, 0x200000, 1, 0, 0), // ppoll
		sys(232, 3, 0x200000, 1, 0), // epoll_wait
		sys(441, 3, 0x200000, 1, 0), // epoll_pwait2
		sys(0xffffffff),             // no such call
		sys(sysArchPrctl+1000, 1),   // past every number
		// Allowed calls with the wrong arguments.
		sys(sysWrite, 2, 0x200000, 1),
		sys(sysWrite, 0, 0x200000, 1),
		sys(sysWrite, 3, 0x200000, 1),
		sys(sysWrite, 5, 0x200000, 512),
		sys(sysWrite, 1|hi, 0x200000, 1), // high half of the descriptor
		sys(sysWrite, 7|hi, 0x200000, 1),
		sys(sysRead, 0, 0x200000, 1),
		sys(sysRead, 1, 0x200000, 1),
		sys(sysRead, 5, 0x200000, 1),
		sys(sysRead, 8, 0x200000, 1),
		sys(sysRead, 7|hi<<31, 0x200000, 1),
		sys(sysEpollPwait, 4, 0x200000, 1, 0),
		sys(sysEpollPwait, 3|hi, 0x200000, 1, 0),
		sys(sysTimerfdSettime, 3, 1, 0x200000, 0),
		sys(sysTimerfdSettime, 4|hi, 1, 0x200000, 0),
		sys(sysClockGettime, 2, 0x200000), // CLOCK_PROCESS_CPUTIME_ID
		sys(sysClockGettime, 3, 0x200000),
		sys(sysClockGettime, 7, 0x200000), // CLOCK_BOOTTIME
		sys(sysClockGettime, clockMonotonic|hi, 0x200000),
		sys(sysArchPrctl, 0x1001, 0x300000), // ARCH_SET_GS
		sys(sysArchPrctl, 0x1003, 0x300000), // ARCH_GET_FS
		sys(sysArchPrctl, archSetFS|hi, 0x300000),
		sys(sysPread64, 5, 0x200000, 512, 1<<20-512+1),
		sys(sysPwrite64, 5, 0x200000, 512, 1<<20-512+1),
		sys(sysPwrite64, 5, 0x200000, 512, 1<<20),
		sys(sysPwrite64, 5, 0x200000, 512, hi), // high half set, low half small
		sys(sysPwrite64, 5, 0x200000, 512, ^uint64(0)),
		sys(sysPread64, 5, 0x200000, 511, 0),
		sys(sysPread64, 5, 0x200000, 1024, 0),
		sys(sysPread64, 5, 0x200000, 512|hi, 0),
		sys(sysPread64, 5|hi, 0x200000, 512, 0),
		sys(sysPread64, 6, 0x200000, 512, 0), // the other device's block size
		sys(sysPread64, 6, 0x200000, kb4, gb8-kb4+1),
		sys(sysPwrite64, 6, 0x200000, kb4, gb8),
		sys(sysPwrite64, 6, 0x200000, kb4, 2*hi), // high half above the limit's
		sys(sysPread64, 7, 0x200000, 512, 0),     // the tap
		sys(sysPread64, 1, 0x200000, 512, 0),
		sys(sysPwrite64, 4, 0x200000, 512, 0),
	}
	for _, c := range killed {
		if v := verdict(t, vm, c); v != seccompRetKillProcess {
			t.Errorf("%+v: verdict %#x, want kill", c, v)
		}
	}
	// The same allowed calls through another ABI, or from another
	// architecture, are killed: x32 numbers carry bit 30, and the i386
	// numbers differ (4 is write there) but are caught by the
	// architecture check first.
	for _, c := range allowed {
		x32 := c
		x32.nr |= x32SyscallBit
		if v := verdict(t, vm, x32); v != seccompRetKillProcess {
			t.Errorf("x32 %+v: verdict %#x, want kill", x32, v)
		}
		for _, arch := range []uint32{0x40000003 /* i386 */, 0xc00000b7 /* aarch64 */, 0, 0x4000003e /* x86-64 without 64-bit flag */} {
			other := c
			other.arch = arch
			if v := verdict(t, vm, other); v != seccompRetKillProcess {
				t.Errorf("arch %#x %+v: verdict %#x, want kill", arch, other, v)
			}
		}
	}
	i386Write := call{nr: 4, arch: 0x40000003, args: [6]uint64{1, 0x200000, 1}}
	if v := verdict(t, vm, i386Write); v != seccompRetKillProcess {
		t.Errorf("i386 write(1): verdict %#x, want kill", v)
	}
}

func TestFilterDeviceSets(t *testing.T) {
	// Without devices, only the core calls pass: read and the block calls
	// have no rule at all.
	vm := vmFor(t, filterDevices{epollFD: 3, timerFD: 4})
	for _, c := range []call{sys(sysRead, 0), sys(sysRead, 3), sys(sysPread64, 3, 0, 512, 0), sys(sysWrite, 3)} {
		if v := verdict(t, vm, c); v != seccompRetKillProcess {
			t.Errorf("no devices, %+v: verdict %#x, want kill", c, v)
		}
	}
	if v := verdict(t, vm, sys(sysWrite, 1)); v != seccompRetAllow {
		t.Errorf("no devices, console write: verdict %#x", v)
	}
	// A block device smaller than one block allows nothing, rather than
	// every offset below a wrapped-around limit.
	vm = vmFor(t, filterDevices{epollFD: 3, timerFD: 4, blocks: []blockFilter{{fd: 5, blockSize: 512, capacity: 0}}})
	for _, off := range []uint64{0, 512, ^uint64(0) - 511} {
		if v := verdict(t, vm, sys(sysPread64, 5, 0, 512, off)); v != seccompRetKillProcess {
			t.Errorf("empty block device, offset %#x: verdict %#x, want kill", off, v)
		}
	}
	// A limit (4 GiB - 512) whose low half is all that is set, and a
	// descriptor above 255.
	big := filterDevices{epollFD: 3, timerFD: 4, blocks: []blockFilter{{fd: 900, blockSize: 512, capacity: 0x100000000}}}
	vm = vmFor(t, big)
	for off, want := range map[uint64]uint32{
		0:                   seccompRetAllow,
		0xfffffe00:          seccompRetAllow,
		0xfffffe01:          seccompRetKillProcess,
		0xffffff00:          seccompRetKillProcess,
		0x100000000:         seccompRetKillProcess,
		0x1fffffe00:         seccompRetKillProcess,
		0xffffffff_fffffe00: seccompRetKillProcess,
	} {
		if v := verdict(t, vm, sys(sysPwrite64, 900, 0, 512, off)); v != want {
			t.Errorf("capacity 4 GiB, offset %#x: verdict %#x, want %#x", off, v, want)
		}
	}
	// Many devices: the longest device list a manifest can hold still
	// assembles (long rule skips use unconditional jumps) and every device
	// is reachable.
	var many filterDevices
	many.epollFD, many.timerFD = 3, 4
	for i := range 31 {
		many.taps = append(many.taps, 100+i)
		many.blocks = append(many.blocks, blockFilter{fd: 200 + i, blockSize: 512, capacity: 1 << 20})
	}
	many.blocks = append(many.blocks, blockFilter{fd: 300, blockSize: 512, capacity: 1 << 20})
	vm = vmFor(t, many)
	for i := range 31 {
		for _, c := range []call{sys(sysRead, uint64(100+i)), sys(sysWrite, uint64(100+i)), sys(sysPread64, uint64(200+i), 0, 512, 0)} {
			if v := verdict(t, vm, c); v != seccompRetAllow {
				t.Errorf("63 devices, %+v: verdict %#x, want allow", c, v)
			}
		}
	}
	for _, c := range []call{sys(sysPwrite64, 300, 0, 512, 1<<20-512), sys(sysExitGroup, 0), sys(sysArchPrctl, archSetFS)} {
		if v := verdict(t, vm, c); v != seccompRetAllow {
			t.Errorf("63 devices, %+v: verdict %#x, want allow", c, v)
		}
	}
	if v := verdict(t, vm, sys(sysRead, 99)); v != seccompRetKillProcess {
		t.Errorf("63 devices, read(99): verdict %#x, want kill", v)
	}
}
