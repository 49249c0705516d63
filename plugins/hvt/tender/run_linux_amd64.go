//go:build linux && amd64

package tender

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/plugins/internal/hostdev"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// maxImageSize bounds the unikernel file read into memory; no image can be
// larger than the largest guest memory anyway.
const maxImageSize = MaxMemMB << 20

// kickInterval is how often a stopping vCPU thread is signalled until it
// notices the stop request, and kickTimeout how long that may take before
// the tender gives up waiting.
const (
	kickInterval = 5 * time.Millisecond
	kickTimeout  = 2 * time.Second
)

// errStopped is returned by the vCPU loop when it was asked to stop.
var errStopped = errors.New("vCPU stopped")

// run boots the unikernel described by ta and runs it to completion. The
// returned error is an exitStatus when the guest halted.
func run(ta solo5.TenderArgs, stdout io.Writer) error {
	// Install the handlers first so that a signal arriving during setup is
	// reported the same way as one arriving while the guest runs.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	memMB := ta.MemMB
	if memMB == 0 {
		memMB = DefaultMemMB
	}
	memSize, err := memSizeFromMB(memMB)
	if err != nil {
		return err
	}
	img, err := solo5.ReadImageFile(ta.Image, maxImageSize)
	if err != nil {
		return err
	}
	info, err := solo5.Read(bytes.NewReader(img))
	if err != nil {
		return fmt.Errorf("%s: %w", ta.Image, err)
	}
	if info.Target != solo5.TargetHVT {
		return fmt.Errorf("%s: image is built for the %s target, not hvt", ta.Image, info.Target)
	}
	if info.ABIVersion != ABIVersion {
		return fmt.Errorf("%s: image uses hvt ABI version %d, this tender implements version %d", ta.Image, info.ABIVersion, ABIVersion)
	}
	if err := solo5.ValidateDevices(info, ta.NetNames(), ta.BlockNames()); err != nil {
		return fmt.Errorf("%s: %w", ta.Image, err)
	}
	cmdline, err := solo5.GuestCmdline(ta.Args)
	if err != nil {
		return err
	}

	hv := &hypercalls{
		console: stdout,
		blocks:  map[uint64]*blockDevice{},
		nets:    map[uint64]*netDevice{},
		now:     time.Now,
	}
	pf := &pollFds{}
	hv.poller = pf
	handles := map[string]uint64{}
	for i, d := range info.Manifest {
		handles[d.Name] = uint64(i + 1)
	}
	att := map[string]solo5.Attachment{}
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for _, b := range ta.Blocks {
		blk, err := hostdev.OpenBlock(b)
		if err != nil {
			return err
		}
		closers = append(closers, func() { blk.File.Close() })
		hv.blocks[handles[b.Name]] = &blockDevice{name: b.Name, io: blk.File, capacity: blk.Capacity, sectorSize: blk.SectorSize}
		att[b.Name] = solo5.Attachment{Type: solo5.DeviceBlock, HostFD: int(blk.File.Fd()), Capacity: blk.Capacity, BlockSize: blk.SectorSize}
	}
	for _, n := range ta.Nets {
		nd, err := hostdev.OpenNet(n)
		if err != nil {
			return err
		}
		closers = append(closers, func() { unix.Close(nd.FD) })
		h := handles[n.Name]
		hv.nets[h] = &netDevice{name: n.Name, io: tapIO{fd: nd.FD}, mac: nd.MAC, mtu: nd.MTU}
		pf.fds = append(pf.fds, unix.PollFd{Fd: int32(nd.FD), Events: unix.POLLIN})
		pf.handles = append(pf.handles, h)
		att[n.Name] = solo5.Attachment{Type: solo5.DeviceNet, HostFD: nd.FD, MAC: nd.MAC, MTU: nd.MTU}
	}
	mft, err := solo5.EncodeManifest(info.Manifest, att)
	if err != nil {
		return err
	}
	if len(mft) > mftMaxSize {
		return fmt.Errorf("manifest of %d bytes does not fit in %d bytes", len(mft), mftMaxSize)
	}

	m, err := newMachine(memSize)
	if err != nil {
		return err
	}
	// The machine is released unless its vCPU thread could not be stopped:
	// unmapping memory that thread may still touch would crash the tender.
	stuck := false
	defer func() {
		if !stuck {
			m.close()
		}
	}()
	hv.mem = m.mem
	entry, kernelEnd, err := loadELF(img, m.mem)
	if err != nil {
		return fmt.Errorf("%s: %w", ta.Image, err)
	}
	setupGDT(m.mem)
	if err := setupPageTables(m.mem); err != nil {
		return err
	}
	copy(m.mem[mftBase:], mft)
	copy(m.mem[cmdlineBase:], cmdline)
	freq, err := m.tscFrequency()
	if err != nil {
		return err
	}
	bootInfo{
		memSize:      memSize,
		kernelEnd:    kernelEnd,
		cpuCycleFreq: freq,
		cmdline:      cmdlineBase,
		mft:          mftBase,
	}.put(m.mem)
	if err := m.initVCPU(entry); err != nil {
		return err
	}

	v := &vcpu{m: m, hv: hv, tid: make(chan int, 1), done: make(chan error, 1)}
	go v.loop()
	tid := <-v.tid
	select {
	case err := <-v.done:
		return err
	case sig := <-sigs:
		stuck = !v.stopAndWait(tid)
		return signalExit{sig}
	}
}

// signalExit is returned by run when SIGINT or SIGTERM ended the guest.
type signalExit struct{ sig os.Signal }

// Error implements error; the text is solo5-hvt's message.
func (s signalExit) Error() string {
	if n, ok := s.sig.(syscall.Signal); ok {
		return fmt.Sprintf("Exiting on signal %d", int(n))
	}
	return fmt.Sprintf("Exiting on signal %v", s.sig)
}

// vcpu runs the guest on one locked OS thread. The goroutine running loop
// owns the thread; stopAndWait asks it to stop and waits for it.
type vcpu struct {
	m    *machine
	hv   *hypercalls
	stop atomic.Bool
	tid  chan int
	done chan error
}

// loop locks the OS thread (KVM requires a vCPU to be run from one thread,
// and signals to stop it must reach that thread), reports the thread id and
// runs the guest until it halts, fails or is stopped. The thread is not
// unlocked, so it exits with the goroutine.
func (v *vcpu) loop() {
	runtime.LockOSThread()
	v.tid <- unix.Gettid()
	v.done <- v.runGuest()
}

// stopAndWait stops the vCPU thread: it sets the stop flag, asks KVM to
// leave the guest and signals the thread until loop returns, interrupting
// KVM_RUN or a blocking poll. It reports whether the thread stopped in time.
func (v *vcpu) stopAndWait(tid int) bool {
	v.stop.Store(true)
	if v.m.immediateExit {
		v.m.setImmediateExit()
	}
	pid := unix.Getpid()
	deadline := time.After(kickTimeout)
	tick := time.NewTicker(kickInterval)
	defer tick.Stop()
	for {
		_ = unix.Tgkill(pid, tid, unix.SIGURG)
		select {
		case <-v.done:
			return true
		case <-deadline:
			return false
		case <-tick.C:
		}
	}
}

// runGuest is the vCPU exit loop.
func (v *vcpu) runGuest() error {
	m := v.m
	for {
		if v.stop.Load() {
			return errStopped
		}
		if err := m.runOnce(); err != nil {
			switch {
			case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
				continue
			case errors.Is(err, unix.EFAULT):
				return fmt.Errorf("KVM: host/guest translation fault: rip=%#x", m.rip())
			}
			return fmt.Errorf("KVM: ioctl (RUN) failed: %w", err)
		}
		switch reason := m.exitReason(); reason {
		case kvmExitIO:
			out, size, port, value, err := m.ioExit()
			if err != nil {
				return err
			}
			if !out || size != 4 || port < hypercallPIOBase || port >= hypercallPIOBase+hcMax {
				return fmt.Errorf("invalid guest port access: port=%#x rip=%#x", port, m.rip())
			}
			h, err := v.hv.hypercall(int(port-hypercallPIOBase), uint64(value))
			if err != nil {
				return err
			}
			if h != nil {
				return exitStatus(h.status)
			}
		case kvmExitIntr:
			continue
		case kvmExitHLT:
			return fmt.Errorf("guest executed hlt with interrupts disabled: rip=%#x", m.rip())
		case kvmExitShutdown:
			return fmt.Errorf("guest triple fault (KVM_EXIT_SHUTDOWN): rip=%#x", m.rip())
		case kvmExitMMIO:
			return fmt.Errorf("guest accessed unbacked guest-physical address %#x: rip=%#x", le.Uint64(m.run[runUnion:]), m.rip())
		case kvmExitFailEntry:
			return fmt.Errorf("KVM: entry failure: hw_entry_failure_reason=%#x", le.Uint64(m.run[runUnion:]))
		case kvmExitInternalError:
			return fmt.Errorf("KVM: internal error exit: suberror=%#x rip=%#x", le.Uint32(m.run[runUnion:]), m.rip())
		default:
			return fmt.Errorf("KVM: unhandled exit: exit_reason=%#x, rip=%#x", reason, m.rip())
		}
	}
}
