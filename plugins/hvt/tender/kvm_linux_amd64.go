//go:build linux && amd64

package tender

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// KVM ioctl request numbers and constants from <linux/kvm.h>. They are
// spelled out here because golang.org/x/sys/unix does not carry the KVM API.
const (
	kvmGetAPIVersion       = 0xae00
	kvmCreateVM            = 0xae01
	kvmCheckExtension      = 0xae03
	kvmGetVCPUMmapSize     = 0xae04
	kvmGetSupportedCPUID   = 0xc008ae05
	kvmCreateVCPU          = 0xae41
	kvmSetUserMemoryRegion = 0x4020ae46
	kvmRun                 = 0xae80
	kvmGetRegs             = 0x8090ae81
	kvmSetRegs             = 0x4090ae82
	kvmGetSregs            = 0x8138ae83
	kvmSetSregs            = 0x4138ae84
	kvmSetCPUID2           = 0x4008ae90
	kvmGetTSCKHz           = 0xaea3

	kvmAPIVersion       = 12
	kvmCapGetTSCKHz     = 61
	kvmCapImmediateExit = 136

	kvmExitIO            = 2
	kvmExitHLT           = 5
	kvmExitMMIO          = 6
	kvmExitShutdown      = 8
	kvmExitFailEntry     = 9
	kvmExitIntr          = 10
	kvmExitInternalError = 17

	kvmExitIOOut = 1

	// Offsets into struct kvm_run.
	runImmediateExit = 1
	runExitReason    = 8
	runUnion         = 32

	cpuidMaxEntries = 100
	cpuidEntrySize  = 40
)

// kvmRegs mirrors struct kvm_regs.
type kvmRegs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// kvmSegment mirrors struct kvm_segment.
type kvmSegment struct {
	Base                           uint64
	Limit                          uint32
	Selector                       uint16
	Type                           uint8
	Present, DPL, DB, S, L, G, AVL uint8
	Unusable                       uint8
	_                              uint8
}

// kvmDtable mirrors struct kvm_dtable.
type kvmDtable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// kvmSregs mirrors struct kvm_sregs.
type kvmSregs struct {
	CS, DS, ES, FS, GS, SS  kvmSegment
	TR, LDT                 kvmSegment
	GDT, IDT                kvmDtable
	CR0, CR2, CR3, CR4, CR8 uint64
	EFER                    uint64
	APICBase                uint64
	InterruptBitmap         [4]uint64
}

// kvmUserspaceMemoryRegion mirrors struct kvm_userspace_memory_region.
type kvmUserspaceMemoryRegion struct {
	Slot, Flags   uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// Compile-time checks that the mirrored structures have the kernel's sizes
// (the sizes are also encoded in the ioctl numbers above).
var (
	_ [144]byte = [unsafe.Sizeof(kvmRegs{})]byte{}
	_ [312]byte = [unsafe.Sizeof(kvmSregs{})]byte{}
	_ [32]byte  = [unsafe.Sizeof(kvmUserspaceMemoryRegion{})]byte{}
)

// machine is one KVM virtual machine with a single vCPU and one flat region
// of guest memory starting at guest-physical address 0.
type machine struct {
	sys                 kvmSys
	kvmFd, vmFd, vcpuFd int
	mem                 []byte
	run                 []byte
	immediateExit       bool
}

// kvmSys is the part of the operating system newMachine and close use.
// The tender always uses hostSys; tests substitute a fake that fails at a
// chosen step, so every error path of newMachine is exercised, including
// the release of what the earlier steps acquired.
type kvmSys struct {
	open   func(path string) (int, error)
	ioctl  func(fd int, req, arg uintptr) (uintptr, error)
	mmap   func(fd int, length int, prot, flags int) ([]byte, error)
	munmap func(b []byte) error
	close  func(fd int) error
}

// hostSys is kvmSys backed by the real system calls.
var hostSys = kvmSys{
	open:   func(path string) (int, error) { return unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0) },
	ioctl:  ioctlRestart,
	mmap:   func(fd, length, prot, flags int) ([]byte, error) { return unix.Mmap(fd, 0, length, prot, flags) },
	munmap: unix.Munmap,
	close:  unix.Close,
}

// ioctlRestart is ioctl, issued again when a signal interrupted it: the
// set-up ioctls (creating a VM can take a while) are not meant to be
// interrupted, unlike KVM_RUN.
func ioctlRestart(fd int, req, arg uintptr) (uintptr, error) {
	for {
		r, err := ioctl(fd, req, arg)
		if !errors.Is(err, unix.EINTR) {
			return r, err
		}
	}
}

// newMachine opens /dev/kvm, creates a VM with memSize bytes of guest
// memory and one vCPU.
func newMachine(memSize uint64) (*machine, error) { return newMachineOn(hostSys, memSize) }

// newMachineOn is newMachine on the given system calls. On error
// everything already opened or mapped is released before it returns, and
// the error names the step that failed.
func newMachineOn(sys kvmSys, memSize uint64) (*machine, error) {
	m := &machine{sys: sys, kvmFd: -1, vmFd: -1, vcpuFd: -1}
	if err := m.setup(memSize); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

// setup performs newMachine's steps on m, recording each resource in m as
// soon as it exists so that close can release it.
func (m *machine) setup(memSize uint64) error {
	sys := m.sys
	fd, err := sys.open("/dev/kvm")
	if err != nil {
		return fmt.Errorf("open /dev/kvm: %w", err)
	}
	m.kvmFd = fd
	v, err := sys.ioctl(m.kvmFd, kvmGetAPIVersion, 0)
	if err != nil {
		return fmt.Errorf("KVM: ioctl (GET_API_VERSION): %w", err)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("KVM: API version is %d, expected %d", v, kvmAPIVersion)
	}
	vm, err := sys.ioctl(m.kvmFd, kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("KVM: ioctl (CREATE_VM): %w", err)
	}
	m.vmFd = int(vm)
	m.mem, err = sys.mmap(-1, int(memSize), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return fmt.Errorf("mmap %d bytes of guest memory: %w", memSize, err)
	}
	region := kvmUserspaceMemoryRegion{
		MemorySize:    memSize,
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(&m.mem[0]))),
	}
	if _, err := sys.ioctl(m.vmFd, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); err != nil {
		return fmt.Errorf("KVM: ioctl (SET_USER_MEMORY_REGION): %w", err)
	}
	vcpu, err := sys.ioctl(m.vmFd, kvmCreateVCPU, 0)
	if err != nil {
		return fmt.Errorf("KVM: ioctl (CREATE_VCPU): %w", err)
	}
	m.vcpuFd = int(vcpu)
	size, err := sys.ioctl(m.kvmFd, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fmt.Errorf("KVM: ioctl (GET_VCPU_MMAP_SIZE): %w", err)
	}
	if size < runUnion+256 {
		return fmt.Errorf("KVM: vCPU mmap size %d is too small", size)
	}
	m.run, err = sys.mmap(m.vcpuFd, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap KVM vCPU state: %w", err)
	}
	if r, err := sys.ioctl(m.kvmFd, kvmCheckExtension, kvmCapImmediateExit); err == nil && r > 0 {
		m.immediateExit = true
	}
	return nil
}

// close releases the vCPU, the VM and guest memory. It is safe to call on
// a partly constructed machine, and more than once.
func (m *machine) close() {
	if m.run != nil {
		_ = m.sys.munmap(m.run)
		m.run = nil
	}
	for _, fd := range []*int{&m.vcpuFd, &m.vmFd, &m.kvmFd} {
		if *fd >= 0 {
			_ = m.sys.close(*fd)
			*fd = -1
		}
	}
	if m.mem != nil {
		_ = m.sys.munmap(m.mem)
		m.mem = nil
	}
}

// setupCPUID passes the host's supported CPUID leaves through to the vCPU,
// as Solo5 does, so the guest sees the features KVM can provide.
func (m *machine) setupCPUID() error {
	buf := make([]byte, 8+cpuidMaxEntries*cpuidEntrySize)
	binary.LittleEndian.PutUint32(buf, cpuidMaxEntries)
	if _, err := ioctl(m.kvmFd, kvmGetSupportedCPUID, uintptr(unsafe.Pointer(&buf[0]))); err != nil {
		return fmt.Errorf("KVM: ioctl (GET_SUPPORTED_CPUID): %w", err)
	}
	if _, err := ioctl(m.vcpuFd, kvmSetCPUID2, uintptr(unsafe.Pointer(&buf[0]))); err != nil {
		return fmt.Errorf("KVM: ioctl (SET_CPUID2): %w", err)
	}
	return nil
}

// tscFrequency returns the vCPU's TSC frequency in Hz, which the guest
// uses to turn cycle counts into time.
func (m *machine) tscFrequency() (uint64, error) {
	if r, err := ioctl(m.kvmFd, kvmCheckExtension, kvmCapGetTSCKHz); err != nil || r == 0 {
		return 0, errors.New("KVM: host does not support KVM_CAP_GET_TSC_KHZ")
	}
	khz, err := ioctl(m.vcpuFd, kvmGetTSCKHz, 0)
	if err != nil {
		if errors.Is(err, unix.EIO) {
			return 0, errors.New("KVM: host TSC is unstable, cannot continue")
		}
		return 0, fmt.Errorf("KVM: ioctl (GET_TSC_KHZ): %w", err)
	}
	return uint64(khz) * 1000, nil
}

// segment converts a descriptor description into KVM's representation.
func segment(s segmentDesc) kvmSegment {
	b := func(v bool) uint8 {
		if v {
			return 1
		}
		return 0
	}
	return kvmSegment{
		Base: 0, Limit: s.limit, Selector: s.selector, Type: s.typ,
		Present: b(s.present), DB: b(s.db), S: b(s.s), L: b(s.l), G: b(s.g),
		Unusable: b(s.unusable),
	}
}

// initVCPU puts the vCPU in 64-bit long mode at entry, with the boot info
// pointer in RDI and the stack at the top of guest memory.
func (m *machine) initVCPU(entry uint64) error {
	if err := m.setupCPUID(); err != nil {
		return err
	}
	sregs := kvmSregs{
		CR0:  cr0Init,
		CR3:  pml4Base,
		CR4:  cr4Init,
		EFER: eferInit,
		CS:   segment(codeSegment),
		SS:   segment(dataSegment),
		DS:   segment(dataSegment),
		ES:   segment(dataSegment),
		FS:   segment(dataSegment),
		GS:   segment(dataSegment),
		GDT:  kvmDtable{Base: gdtBase, Limit: gdtLimit},
		TR:   segment(taskSegment),
		LDT:  segment(unusableSegment),
	}
	if _, err := ioctl(m.vcpuFd, kvmSetSregs, uintptr(unsafe.Pointer(&sregs))); err != nil {
		return fmt.Errorf("KVM: ioctl (SET_SREGS): %w", err)
	}
	regs := kvmRegs{
		RIP:    entry,
		RFLAGS: rflagsInit,
		RSP:    uint64(len(m.mem)) - 8,
		RDI:    bootInfoBase,
	}
	if _, err := ioctl(m.vcpuFd, kvmSetRegs, uintptr(unsafe.Pointer(&regs))); err != nil {
		return fmt.Errorf("KVM: ioctl (SET_REGS): %w", err)
	}
	return nil
}

// rip returns the vCPU's instruction pointer, for error messages.
func (m *machine) rip() uint64 {
	var regs kvmRegs
	if _, err := ioctl(m.vcpuFd, kvmGetRegs, uintptr(unsafe.Pointer(&regs))); err != nil {
		return 0
	}
	return regs.RIP
}

// setImmediateExit asks KVM to return from KVM_RUN at once (or not to
// enter the guest at all). It may be called from any thread.
func (m *machine) setImmediateExit() {
	// The first four bytes of struct kvm_run are request_interrupt_window,
	// immediate_exit and padding; storing them as one aligned word keeps the
	// write atomic with respect to the vCPU thread.
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&m.run[0])), 1<<(8*runImmediateExit))
}

// exitReason returns kvm_run.exit_reason.
func (m *machine) exitReason() uint32 {
	return binary.LittleEndian.Uint32(m.run[runExitReason:])
}

// ioExit decodes kvm_run.io for a KVM_EXIT_IO: direction, access size,
// port and, for a 4-byte OUT, the value written.
func (m *machine) ioExit() (out bool, size uint8, port uint16, value uint32, err error) {
	u := m.run[runUnion:]
	out = u[0] == kvmExitIOOut
	size = u[1]
	port = binary.LittleEndian.Uint16(u[2:])
	count := binary.LittleEndian.Uint32(u[4:])
	off := binary.LittleEndian.Uint64(u[8:])
	if out && size == 4 && count == 1 {
		if off > uint64(len(m.run)) || uint64(len(m.run))-off < 4 {
			return out, size, port, 0, fmt.Errorf("KVM: I/O data offset %d outside the vCPU state", off)
		}
		value = binary.LittleEndian.Uint32(m.run[off:])
	}
	return out, size, port, value, nil
}

// runOnce enters the guest until the next exit. It returns unix.EINTR when
// a signal or an immediate exit request interrupted the run.
func (m *machine) runOnce() error {
	_, err := ioctl(m.vcpuFd, kvmRun, 0)
	return err
}
