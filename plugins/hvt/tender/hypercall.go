package tender

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// Hypercall numbers (enum hvt_hypercall). On x86-64 the guest issues
// hypercall nr by writing the 32-bit guest-physical address of its argument
// structure to I/O port hypercallPIOBase+nr.
const (
	hypercallPIOBase = 0x500

	hcWalltime   = 1
	hcPuts       = 2
	hcPoll       = 3
	hcBlockWrite = 4
	hcBlockRead  = 5
	hcNetWrite   = 6
	hcNetRead    = 7
	hcHalt       = 8
	hcMax        = 9
)

// Sizes of the hypercall argument structures (hvt_abi.h).
const (
	sizeWalltime   = 8
	sizePuts       = 16
	sizePoll       = 24
	sizeBlock      = 40
	sizeNet        = 32
	sizeHalt       = 16
	haltCookieSize = 512
)

// Values of solo5_result_t stored in the ret fields.
const (
	resultOK     = 0
	resultAgain  = 1
	resultEInval = 2
	resultEUnspc = 3
)

// errWouldBlock is returned by a netIO Read when no frame is waiting.
var errWouldBlock = errors.New("no frame available")

// guestError reports guest behaviour that ends the guest: a pointer or
// length outside guest memory, an unknown hypercall, a malformed access.
type guestError struct{ msg string }

// Error implements error.
func (e *guestError) Error() string { return e.msg }

// guestErr builds a guestError.
func guestErr(format string, args ...any) error {
	return &guestError{msg: fmt.Sprintf(format, args...)}
}

// guestMem is guest-physical memory as seen by the tender: address 0 is the
// first byte. Every access goes through region, which bounds-checks it.
type guestMem []byte

// region returns the n bytes at guest-physical address gpa, or a
// guestError naming what if any part of them lies outside guest memory.
func (m guestMem) region(gpa, n uint64, what string) ([]byte, error) {
	size := uint64(len(m))
	if gpa > size || n > size-gpa {
		return nil, guestErr("invalid guest memory access: %s at %#x (%d bytes) is outside guest memory (%d bytes)", what, gpa, n, size)
	}
	return m[gpa : gpa+n : gpa+n], nil
}

// netIO is the host side of a network device: a non-blocking frame reader
// and writer (a tap device in production, a fake in tests).
type netIO interface {
	// Read reads one frame into p, returning errWouldBlock if none waits.
	Read(p []byte) (int, error)
	// Write writes one frame.
	Write(p []byte) (int, error)
}

// blockIO is the host side of a block device, normally an *os.File.
type blockIO interface {
	io.ReaderAt
	io.WriterAt
}

// blockDevice is an attached block device.
type blockDevice struct {
	name       string
	io         blockIO
	capacity   uint64
	sectorSize uint64
}

// netDevice is an attached network device.
type netDevice struct {
	name string
	io   netIO
	mac  [6]byte
	mtu  uint64
}

// poller waits up to timeout for any network device to become readable and
// returns the set of handles that are (bit n set for handle n).
type poller interface {
	poll(timeout time.Duration) (readySet uint64, err error)
}

// halt is the result of the HALT hypercall.
type halt struct {
	status int
}

// hypercalls holds the state the hypercall handlers act upon. It knows
// nothing of KVM, so the handlers can be tested against a byte slice.
type hypercalls struct {
	mem     guestMem
	console io.Writer
	blocks  map[uint64]*blockDevice
	nets    map[uint64]*netDevice
	poller  poller
	now     func() time.Time
}

// ethHeaderSize is the size of the Ethernet header a frame carries on top
// of the MTU.
const ethHeaderSize = 14

// hypercall runs hypercall nr with its argument structure at gpa. It
// returns a non-nil *halt when the guest asked to stop, and an error when
// the guest must be stopped for misbehaving (a *guestError) or the host
// failed.
func (h *hypercalls) hypercall(nr int, gpa uint64) (*halt, error) {
	switch nr {
	case hcWalltime:
		return nil, h.walltime(gpa)
	case hcPuts:
		return nil, h.puts(gpa)
	case hcPoll:
		return nil, h.poll(gpa)
	case hcBlockWrite, hcBlockRead:
		return nil, h.block(nr == hcBlockWrite, gpa)
	case hcNetWrite:
		return nil, h.netWrite(gpa)
	case hcNetRead:
		return nil, h.netRead(gpa)
	case hcHalt:
		return h.halt(gpa)
	}
	return nil, guestErr("invalid guest hypercall: num=%d", nr)
}

// le is the byte order of every structure shared with the guest.
var le = binary.LittleEndian

// walltime stores the host's wall clock time in nanoseconds since the
// Unix epoch.
func (h *hypercalls) walltime(gpa uint64) error {
	a, err := h.mem.region(gpa, sizeWalltime, "WALLTIME argument")
	if err != nil {
		return err
	}
	le.PutUint64(a, uint64(h.now().UnixNano()))
	return nil
}

// puts writes the guest's buffer to the console, unchanged.
func (h *hypercalls) puts(gpa uint64) error {
	a, err := h.mem.region(gpa, sizePuts, "PUTS argument")
	if err != nil {
		return err
	}
	data, err := h.mem.region(le.Uint64(a[0:]), le.Uint64(a[8:]), "PUTS data")
	if err != nil {
		return err
	}
	if _, err := h.console.Write(data); err != nil {
		return fmt.Errorf("write guest console: %w", err)
	}
	return nil
}

// maxPollTimeout bounds a single POLL so that a huge guest timeout cannot
// overflow time.Duration.
const maxPollTimeout = time.Duration(math.MaxInt64)

// poll waits up to the guest's timeout for network input and reports
// which network handles are readable.
func (h *hypercalls) poll(gpa uint64) error {
	a, err := h.mem.region(gpa, sizePoll, "POLL argument")
	if err != nil {
		return err
	}
	ns := le.Uint64(a[0:])
	timeout := maxPollTimeout
	if ns < uint64(math.MaxInt64) {
		timeout = time.Duration(ns)
	}
	ready, err := h.poller.poll(timeout)
	if err != nil {
		return fmt.Errorf("poll: %w", err)
	}
	n := 0
	for s := ready; s != 0; s &= s - 1 {
		n++
	}
	le.PutUint64(a[8:], ready)
	le.PutUint32(a[16:], uint32(n))
	return nil
}

// block performs a BLOCK_WRITE or BLOCK_READ of whole sectors within the
// device. Requests the device cannot satisfy get SOLO5_R_EINVAL; a buffer
// outside guest memory ends the guest.
func (h *hypercalls) block(write bool, gpa uint64) error {
	what := "BLOCK_READ"
	if write {
		what = "BLOCK_WRITE"
	}
	a, err := h.mem.region(gpa, sizeBlock, what+" argument")
	if err != nil {
		return err
	}
	handle, off, data, n := le.Uint64(a[0:]), le.Uint64(a[8:]), le.Uint64(a[16:]), le.Uint64(a[24:])
	ret := func(r uint32) error {
		le.PutUint32(a[32:], r)
		return nil
	}
	dev := h.blocks[handle]
	if dev == nil {
		return ret(resultEInval)
	}
	buf, err := h.mem.region(data, n, what+" data")
	if err != nil {
		return err
	}
	if n == 0 || n%dev.sectorSize != 0 || off%dev.sectorSize != 0 ||
		off > dev.capacity || n > dev.capacity-off || off > math.MaxInt64 {
		return ret(resultEInval)
	}
	if write {
		_, err = dev.io.WriteAt(buf, int64(off))
	} else {
		var got int
		got, err = dev.io.ReadAt(buf, int64(off))
		if got == len(buf) {
			err = nil
		}
	}
	if err != nil {
		return ret(resultEUnspc)
	}
	return ret(resultOK)
}

// netWrite sends one frame of at most MTU plus Ethernet header bytes.
func (h *hypercalls) netWrite(gpa uint64) error {
	a, err := h.mem.region(gpa, sizeNet, "NET_WRITE argument")
	if err != nil {
		return err
	}
	handle, data, n := le.Uint64(a[0:]), le.Uint64(a[8:]), le.Uint64(a[16:])
	ret := func(r uint32) error {
		le.PutUint32(a[24:], r)
		return nil
	}
	dev := h.nets[handle]
	if dev == nil {
		return ret(resultEInval)
	}
	buf, err := h.mem.region(data, n, "NET_WRITE data")
	if err != nil {
		return err
	}
	if n == 0 || n > dev.mtu+ethHeaderSize {
		return ret(resultEInval)
	}
	if w, err := dev.io.Write(buf); err != nil || w != len(buf) {
		return ret(resultEUnspc)
	}
	return ret(resultOK)
}

// netRead receives one frame into a buffer of at least MTU plus Ethernet
// header bytes, storing its length in the len field, or SOLO5_R_AGAIN when
// none is waiting.
func (h *hypercalls) netRead(gpa uint64) error {
	a, err := h.mem.region(gpa, sizeNet, "NET_READ argument")
	if err != nil {
		return err
	}
	handle, data, n := le.Uint64(a[0:]), le.Uint64(a[8:]), le.Uint64(a[16:])
	ret := func(r uint32) error {
		le.PutUint32(a[24:], r)
		return nil
	}
	dev := h.nets[handle]
	if dev == nil {
		return ret(resultEInval)
	}
	buf, err := h.mem.region(data, n, "NET_READ data")
	if err != nil {
		return err
	}
	if n < dev.mtu+ethHeaderSize {
		return ret(resultEInval)
	}
	got, err := dev.io.Read(buf)
	if errors.Is(err, errWouldBlock) {
		return ret(resultAgain)
	}
	if err != nil || got < 0 || got > len(buf) {
		return ret(resultEUnspc)
	}
	le.PutUint64(a[16:], uint64(got))
	return ret(resultOK)
}

// halt ends the guest with its exit status, truncated to 8 bits as by
// exit(3). A non-zero cookie must point at HVT_HALT_COOKIE_MAX bytes of
// guest memory.
func (h *hypercalls) halt(gpa uint64) (*halt, error) {
	a, err := h.mem.region(gpa, sizeHalt, "HALT argument")
	if err != nil {
		return nil, err
	}
	if cookie := le.Uint64(a[0:]); cookie != 0 {
		if _, err := h.mem.region(cookie, haltCookieSize, "HALT cookie"); err != nil {
			return nil, err
		}
	}
	status := int32(le.Uint32(a[8:]))
	return &halt{status: int(uint8(status))}, nil
}
