//go:build linux && amd64

package tender

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/plugins/internal/hostdev"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// maxImageSize bounds the unikernel file read into memory.
const maxImageSize = 1 << 30

// maxMemMB bounds --mem before it is compared with the address space, so
// the size in bytes cannot overflow.
const maxMemMB = 1 << 27

// devices holds the host descriptors attached to the guest, for the
// filter, and closes the tender's copies.
type devices struct {
	files   []*os.File
	fds     []int
	filter  filterDevices
	keep    []int
	handles map[string]int
}

// close closes every descriptor the tender opened for the guest.
func (d *devices) close() {
	for _, f := range d.files {
		f.Close()
	}
	for _, fd := range d.fds {
		unix.Close(fd)
	}
	d.files, d.fds = nil, nil
}

// run boots the unikernel described by ta in a sandboxed child process and
// waits for it to end. Once the guest runs, the waiter does the waiting in
// the tender's place (see becomeWaiter), and run returns only if it could
// not be exec'd.
func run(ta solo5.TenderArgs) (guestEnd, error) {
	// Ask for the signals to forward before anything else: one arriving
	// during setup is forwarded to the guest once it runs.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)

	memMB := ta.MemMB
	if memMB == 0 {
		memMB = DefaultMemMB
	}
	if memMB > maxMemMB {
		return guestEnd{}, fmt.Errorf("guest memory of %d MB is out of range", memMB)
	}
	memSize := uint64(memMB) << 20
	if memSize <= guestMinBase {
		return guestEnd{}, fmt.Errorf("guest memory of %d MB leaves no room for a unikernel above %#x", memMB, guestMinBase)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return guestEnd{}, fmt.Errorf("read the tender's memory map: %w", err)
	}
	mappings, err := parseMaps(maps)
	if err != nil {
		return guestEnd{}, fmt.Errorf("read the tender's memory map: %w", err)
	}
	if err := checkAddressSpace(mappings, memSize); err != nil {
		return guestEnd{}, err
	}

	img, err := solo5.ReadImageFile(ta.Image, maxImageSize)
	if err != nil {
		return guestEnd{}, err
	}
	info, err := solo5.Read(bytes.NewReader(img))
	if err != nil {
		return guestEnd{}, fmt.Errorf("%s: %w", ta.Image, err)
	}
	if info.Target != solo5.TargetSPT {
		return guestEnd{}, fmt.Errorf("%s: image is built for the %s target, not spt", ta.Image, info.Target)
	}
	if info.ABIVersion != ABIVersion {
		return guestEnd{}, fmt.Errorf("%s: image uses spt ABI version %d, this tender implements version %d", ta.Image, info.ABIVersion, ABIVersion)
	}
	if err := solo5.ValidateDevices(info, ta.NetNames(), ta.BlockNames()); err != nil {
		return guestEnd{}, fmt.Errorf("%s: %w", ta.Image, err)
	}
	exe, prots, err := planImage(img, memSize)
	if err != nil {
		return guestEnd{}, fmt.Errorf("%s: %w", ta.Image, err)
	}
	cmdline, err := solo5.GuestCmdline(ta.Args)
	if err != nil {
		return guestEnd{}, err
	}

	devs, mft, err := attach(ta, info)
	if err != nil {
		return guestEnd{}, err
	}
	defer devs.close()
	low, err := lowMemory(memSize, exe.End(), mft, cmdline, devs.filter.epollFD, devs.filter.timerFD)
	if err != nil {
		return guestEnd{}, err
	}
	filter, err := buildFilter(devs.filter)
	if err != nil {
		return guestEnd{}, err
	}
	if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil {
		return guestEnd{}, fmt.Errorf("the kernel cannot confine the guest with a seccomp filter: %w", err)
	}

	guest, err := mapGuest(memSize)
	if err != nil {
		return guestEnd{}, err
	}
	unmapped := false
	unmap := func() {
		if !unmapped {
			unix.MunmapPtr(unsafe.Pointer(&guest[0]), uintptr(len(guest)))
			unmapped = true
		}
	}
	defer unmap()
	if err := exe.Load(img, guest, hostMemBase); err != nil {
		return guestEnd{}, fmt.Errorf("%s: %w", ta.Image, err)
	}
	copy(guest[bootInfoBase-hostMemBase:], low)
	for _, p := range prots {
		if err := unix.Mprotect(guest[p.start-hostMemBase:p.end-hostMemBase], p.prot); err != nil {
			return guestEnd{}, fmt.Errorf("protect guest memory [%#x, %#x): %w", p.start, p.end, err)
		}
	}
	img = nil

	var report [2]int
	if err := unix.Pipe2(report[:], unix.O_CLOEXEC); err != nil {
		return guestEnd{}, fmt.Errorf("create the setup report pipe: %w", err)
	}
	pid, err := spawn(exe.Entry, memSize-8, bootInfoBase, memSize, devs.keep, filter, report[1], systemMappings(mappings))
	unix.Close(report[1])
	// The guest has its own copies now: guest memory and device
	// descriptors are the child's alone.
	unmap()
	devs.close()
	if err != nil {
		unix.Close(report[0])
		return guestEnd{}, err
	}
	setupErr := readReport(report[0])
	unix.Close(report[0])
	if setupErr != nil {
		waitGuest(pid)
		signal.Stop(sigs)
		return guestEnd{}, setupErr
	}
	// The guest runs: from here on the tender only waits, which the
	// waiter does in a few pages instead of a Go process. becomeWaiter
	// returns only when it could not exec the waiter; the tender then
	// waits itself.
	becomeWaiter(pid, sigs)
	go forwardSignals(pid, sigs)
	end, err := waitGuest(pid)
	signal.Stop(sigs)
	return end, err
}

// attach opens the devices of ta, the epoll set and the timerfd, and
// returns them with the guest's manifest. A network device's epoll data is
// its manifest index, its handle.
func attach(ta solo5.TenderArgs, info *solo5.Image) (*devices, []byte, error) {
	d := &devices{handles: map[string]int{}}
	for i, dev := range info.Manifest {
		d.handles[dev.Name] = i + 1
	}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("create the guest's epoll set: %w", err)
	}
	d.fds = append(d.fds, epfd)
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("create the guest's timerfd: %w", err)
	}
	d.fds = append(d.fds, tfd)
	if err := epollAdd(epfd, tfd, internalTimerfd); err != nil {
		return nil, nil, fmt.Errorf("add the timerfd to the guest's epoll set: %w", err)
	}
	d.filter.epollFD, d.filter.timerFD = epfd, tfd
	d.keep = []int{1, epfd, tfd}
	att := map[string]solo5.Attachment{}
	for _, b := range ta.Blocks {
		blk, err := hostdev.OpenBlock(b)
		if err != nil {
			return nil, nil, err
		}
		d.files = append(d.files, blk.File)
		fd := int(blk.File.Fd())
		d.filter.blocks = append(d.filter.blocks, blockFilter{fd: fd, blockSize: blk.SectorSize, capacity: blk.Capacity})
		d.keep = append(d.keep, fd)
		att[b.Name] = solo5.Attachment{Type: solo5.DeviceBlock, HostFD: fd, Capacity: blk.Capacity, BlockSize: blk.SectorSize}
	}
	for _, n := range ta.Nets {
		nd, err := hostdev.OpenNet(n)
		if err != nil {
			return nil, nil, err
		}
		d.fds = append(d.fds, nd.FD)
		if err := epollAdd(epfd, nd.FD, uint32(d.handles[n.Name])); err != nil {
			return nil, nil, fmt.Errorf("net device %q: add to the guest's epoll set: %w", n.Name, err)
		}
		d.filter.taps = append(d.filter.taps, nd.FD)
		d.keep = append(d.keep, nd.FD)
		att[n.Name] = solo5.Attachment{Type: solo5.DeviceNet, HostFD: nd.FD, MAC: nd.MAC, MTU: nd.MTU}
	}
	for _, fd := range d.keep[1:] {
		if fd <= 2 {
			return nil, nil, fmt.Errorf("a device was given descriptor %d, one of the standard streams", fd)
		}
	}
	mft, err := solo5.EncodeManifest(info.Manifest, att)
	if err != nil {
		return nil, nil, err
	}
	ok = true
	return d, mft, nil
}

// epollAdd adds fd to the epoll set epfd for input, with data as its
// event's data (the 64-bit value's low half; the high half is 0).
func epollAdd(epfd, fd int, data uint32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(data)}
	return unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// mapGuest maps guest memory, [hostMemBase, memSize), at its own
// addresses: readable and writable, private, without reserving swap for
// pages the guest never touches. MAP_FIXED_NOREPLACE makes a collision
// with a mapping of the tender's own an error instead of replacing it.
func mapGuest(memSize uint64) ([]byte, error) {
	size := uintptr(memSize - hostMemBase)
	want := unsafe.Add(unsafe.Pointer(nil), hostMemBase)
	p, err := unix.MmapPtr(-1, 0, want, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("guest memory [%#x, %#x) overlaps a mapping of the tender's own; try a smaller --mem", hostMemBase, memSize)
	}
	if err != nil {
		return nil, fmt.Errorf("map %d MB of guest memory: %w", memSize>>20, err)
	}
	if p != want {
		unix.MunmapPtr(p, size)
		return nil, fmt.Errorf("the kernel mapped guest memory at %p instead of %#x (no MAP_FIXED_NOREPLACE?)", p, hostMemBase)
	}
	return unsafe.Slice((*byte)(p), size), nil
}

// forwardSignals sends the guest every signal received on sigs, through a
// pidfd where the kernel has them so that a signal can never reach another
// process that reused the pid once the guest is reaped.
func forwardSignals(pid int, sigs <-chan os.Signal) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		pidfd = -1
	}
	for s := range sigs {
		sig := s.(unix.Signal)
		if pidfd >= 0 {
			unix.PidfdSendSignal(pidfd, sig, nil, 0)
		} else {
			unix.Kill(pid, sig)
		}
	}
}

// waitGuest waits for the guest process to end.
func waitGuest(pid int) (guestEnd, error) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return guestEnd{}, fmt.Errorf("wait for the guest process: %w", err)
		}
		switch {
		case ws.Exited():
			return guestEnd{status: ws.ExitStatus()}, nil
		case ws.Signaled():
			return guestEnd{signal: int(ws.Signal())}, nil
		}
	}
}

// dieBySignal ends the tender by sig with its default action, as the guest
// ended, so the tender's own parent sees what happened to the guest: core
// dumps are turned off first, the handler reset and the signal unblocked.
func dieBySignal(sig int) {
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	var dfl [4]uint64
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
	set := uint64(1) << (sig - 1)
	unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_UNBLOCK, uintptr(unsafe.Pointer(&set)), 0, 8, 0, 0)
	unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.Signal(sig))
}
