package tender

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// memBlock is an in-memory block device.
type memBlock struct{ data []byte }

func (m *memBlock) ReadAt(p []byte, off int64) (int, error) {
	return copy(p, m.data[off:]), nil
}

func (m *memBlock) WriteAt(p []byte, off int64) (int, error) {
	return copy(m.data[off:], p), nil
}

// fakeNet is a network device with a queue of frames to read and a record
// of frames written.
type fakeNet struct {
	in, out [][]byte
	fail    bool
}

func (f *fakeNet) Read(p []byte) (int, error) {
	if f.fail {
		return 0, errors.New("broken")
	}
	if len(f.in) == 0 {
		return 0, errWouldBlock
	}
	n := copy(p, f.in[0])
	f.in = f.in[1:]
	return n, nil
}

func (f *fakeNet) Write(p []byte) (int, error) {
	if f.fail {
		return 0, errors.New("broken")
	}
	f.out = append(f.out, append([]byte(nil), p...))
	return len(p), nil
}

// fakePoller reports a fixed ready set and records the timeout asked for.
type fakePoller struct {
	ready   uint64
	timeout time.Duration
}

func (p *fakePoller) poll(timeout time.Duration) (uint64, error) {
	p.timeout = timeout
	return p.ready, nil
}

const (
	testMemSize  = 1 << 20
	blockHandle  = 1
	netHandle    = 2
	testArgAt    = 0x1000
	testDataAt   = 0x8000
	testCapacity = 64 * 512
)

// testHV is a hypervisor over 1 MiB of guest memory with block device 1
// (64 sectors of 512 bytes) and net device 2.
type testHV struct {
	*hypercalls
	console bytes.Buffer
	disk    *memBlock
	nic     *fakeNet
	poll    *fakePoller
}

func newTestHV() *testHV {
	th := &testHV{disk: &memBlock{data: make([]byte, testCapacity)}, nic: &fakeNet{}, poll: &fakePoller{}}
	th.hypercalls = &hypercalls{
		mem:     make(guestMem, testMemSize),
		console: &th.console,
		blocks:  map[uint64]*blockDevice{blockHandle: {name: "storage", io: th.disk, capacity: testCapacity, sectorSize: 512}},
		nets:    map[uint64]*netDevice{netHandle: {name: "service0", io: th.nic, mtu: 1500}},
		poller:  th.poll,
		now:     func() time.Time { return time.Unix(1700000000, 42) },
	}
	return th
}

// args writes 64-bit words at testArgAt, the usual argument location.
func (th *testHV) args(words ...uint64) {
	for i, w := range words {
		binary.LittleEndian.PutUint64(th.mem[testArgAt+8*i:], w)
	}
}

func (th *testHV) u64(off int) uint64 { return binary.LittleEndian.Uint64(th.mem[testArgAt+off:]) }
func (th *testHV) ret(off int) uint32 { return binary.LittleEndian.Uint32(th.mem[testArgAt+off:]) }

// mustGuestError checks that err is a guestError mentioning want.
func mustGuestError(t *testing.T, err error, want string) {
	t.Helper()
	var ge *guestError
	if !errors.As(err, &ge) {
		t.Fatalf("error %v is not a guest error", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not mention %q", err, want)
	}
}

// hostileAddrs are argument addresses that lie partly or wholly outside
// guest memory.
var hostileAddrs = []uint64{testMemSize, testMemSize - 4, math.MaxUint32, math.MaxUint64 - 3}

func TestWalltime(t *testing.T) {
	th := newTestHV()
	if h, err := th.hypercall(hcWalltime, testArgAt); err != nil || h != nil {
		t.Fatalf("walltime: %v %v", h, err)
	}
	if got := th.u64(0); got != 1700000000*1e9+42 {
		t.Errorf("walltime = %d", got)
	}
	for _, a := range hostileAddrs {
		_, err := th.hypercall(hcWalltime, a)
		mustGuestError(t, err, "WALLTIME argument")
	}
}

func TestPuts(t *testing.T) {
	th := newTestHV()
	copy(th.mem[testDataAt:], "hello, world")
	th.args(testDataAt, 5)
	if _, err := th.hypercall(hcPuts, testArgAt); err != nil {
		t.Fatal(err)
	}
	if th.console.String() != "hello" {
		t.Errorf("console = %q", th.console.String())
	}
	th.args(testDataAt, 0)
	if _, err := th.hypercall(hcPuts, testArgAt); err != nil || th.console.Len() != 5 {
		t.Errorf("empty puts: %v, console %q", err, th.console.String())
	}
	for _, c := range [][2]uint64{{testMemSize - 2, 3}, {testDataAt, testMemSize}, {testDataAt, math.MaxUint64}, {math.MaxUint64, 2}} {
		th.args(c[0], c[1])
		_, err := th.hypercall(hcPuts, testArgAt)
		mustGuestError(t, err, "PUTS data")
	}
	for _, a := range hostileAddrs {
		_, err := th.hypercall(hcPuts, a)
		mustGuestError(t, err, "PUTS argument")
	}
	if th.console.Len() != 5 {
		t.Errorf("hostile puts wrote to the console: %q", th.console.String())
	}
}

func TestPoll(t *testing.T) {
	th := newTestHV()
	th.poll.ready = 1 << netHandle
	th.args(5e6, 0, 0)
	if _, err := th.hypercall(hcPoll, testArgAt); err != nil {
		t.Fatal(err)
	}
	if th.poll.timeout != 5*time.Millisecond || th.u64(8) != 1<<netHandle || th.ret(16) != 1 {
		t.Errorf("poll: timeout %v ready %#x ret %d", th.poll.timeout, th.u64(8), th.ret(16))
	}
	th.args(math.MaxUint64)
	if _, err := th.hypercall(hcPoll, testArgAt); err != nil || th.poll.timeout != maxPollTimeout {
		t.Errorf("huge timeout: %v, %v", th.poll.timeout, err)
	}
	for _, a := range hostileAddrs {
		_, err := th.hypercall(hcPoll, a)
		mustGuestError(t, err, "POLL argument")
	}
}

func TestBlock(t *testing.T) {
	th := newTestHV()
	pattern := bytes.Repeat([]byte("0123456789abcdef"), 64)
	copy(th.mem[testDataAt:], pattern)
	th.args(blockHandle, 512, testDataAt, 1024, 0xffffffff)
	if _, err := th.hypercall(hcBlockWrite, testArgAt); err != nil || th.ret(32) != resultOK {
		t.Fatalf("write: %v ret %d", err, th.ret(32))
	}
	if !bytes.Equal(th.disk.data[512:1536], pattern) {
		t.Fatalf("disk contents not written")
	}
	clear(th.mem[testDataAt : testDataAt+2048])
	th.args(blockHandle, 512, testDataAt+1024, 1024, 0xffffffff)
	if _, err := th.hypercall(hcBlockRead, testArgAt); err != nil || th.ret(32) != resultOK {
		t.Fatalf("read: %v ret %d", err, th.ret(32))
	}
	if !bytes.Equal(th.mem[testDataAt+1024:testDataAt+2048], pattern) {
		t.Fatalf("read data wrong")
	}

	einval := []struct {
		name                    string
		handle, off, data, size uint64
	}{
		{"unknown handle", 9, 0, testDataAt, 512},
		{"net handle", netHandle, 0, testDataAt, 512},
		{"misaligned offset", blockHandle, 1, testDataAt, 512},
		{"partial sector", blockHandle, 0, testDataAt, 100},
		{"zero length", blockHandle, 0, testDataAt, 0},
		{"past the end", blockHandle, testCapacity, testDataAt, 512},
		{"straddles the end", blockHandle, testCapacity - 512, testDataAt, 1024},
		{"offset overflow", blockHandle, math.MaxUint64 - 511, testDataAt, 512},
	}
	for _, nr := range []int{hcBlockWrite, hcBlockRead} {
		for _, c := range einval {
			th.args(c.handle, c.off, c.data, c.size, 0)
			if _, err := th.hypercall(nr, testArgAt); err != nil || th.ret(32) != resultEInval {
				t.Errorf("%d %s: err %v ret %d, want EINVAL", nr, c.name, err, th.ret(32))
			}
		}
		for _, c := range [][2]uint64{{testMemSize - 256, 512}, {math.MaxUint64 - 100, 512}, {testDataAt, math.MaxUint64 &^ 511}} {
			th.args(blockHandle, 0, c[0], c[1], 0)
			_, err := th.hypercall(nr, testArgAt)
			mustGuestError(t, err, "data")
		}
		for _, a := range hostileAddrs {
			_, err := th.hypercall(nr, a)
			mustGuestError(t, err, "argument")
		}
	}
}

func TestNetWrite(t *testing.T) {
	th := newTestHV()
	copy(th.mem[testDataAt:], "frame-data")
	th.args(netHandle, testDataAt, 10, 0xffff)
	if _, err := th.hypercall(hcNetWrite, testArgAt); err != nil || th.ret(24) != resultOK {
		t.Fatalf("write: %v ret %d", err, th.ret(24))
	}
	if len(th.nic.out) != 1 || string(th.nic.out[0]) != "frame-data" {
		t.Fatalf("frames written: %q", th.nic.out)
	}
	for _, c := range []struct {
		name         string
		handle, size uint64
		want         uint32
	}{
		{"unknown handle", 7, 10, resultEInval},
		{"block handle", blockHandle, 10, resultEInval},
		{"oversized", netHandle, 1515, resultEInval},
		{"empty", netHandle, 0, resultEInval},
	} {
		th.args(c.handle, testDataAt, c.size, 0xffff)
		if _, err := th.hypercall(hcNetWrite, testArgAt); err != nil || th.ret(24) != c.want {
			t.Errorf("%s: err %v ret %d, want %d", c.name, err, th.ret(24), c.want)
		}
	}
	th.nic.fail = true
	th.args(netHandle, testDataAt, 10, 0)
	if _, err := th.hypercall(hcNetWrite, testArgAt); err != nil || th.ret(24) != resultEUnspc {
		t.Errorf("failing device: err %v ret %d", err, th.ret(24))
	}
	th.args(netHandle, testMemSize-5, 10)
	_, err := th.hypercall(hcNetWrite, testArgAt)
	mustGuestError(t, err, "NET_WRITE data")
	for _, a := range hostileAddrs {
		_, err := th.hypercall(hcNetWrite, a)
		mustGuestError(t, err, "NET_WRITE argument")
	}
}

func TestNetRead(t *testing.T) {
	th := newTestHV()
	th.nic.in = [][]byte{[]byte("incoming")}
	th.args(netHandle, testDataAt, 1514, 0xffff)
	if _, err := th.hypercall(hcNetRead, testArgAt); err != nil || th.ret(24) != resultOK {
		t.Fatalf("read: %v ret %d", err, th.ret(24))
	}
	if th.u64(16) != 8 || string(th.mem[testDataAt:testDataAt+8]) != "incoming" {
		t.Fatalf("read len %d data %q", th.u64(16), th.mem[testDataAt:testDataAt+8])
	}
	th.args(netHandle, testDataAt, 1514, 0xffff)
	if _, err := th.hypercall(hcNetRead, testArgAt); err != nil || th.ret(24) != resultAgain {
		t.Errorf("empty queue: err %v ret %d, want AGAIN", err, th.ret(24))
	}
	for _, c := range []struct {
		name         string
		handle, size uint64
	}{{"unknown handle", 0, 1514}, {"block handle", blockHandle, 1514}, {"short buffer", netHandle, 100}} {
		th.args(c.handle, testDataAt, c.size, 0xffff)
		if _, err := th.hypercall(hcNetRead, testArgAt); err != nil || th.ret(24) != resultEInval {
			t.Errorf("%s: err %v ret %d, want EINVAL", c.name, err, th.ret(24))
		}
	}
	th.nic.fail = true
	th.args(netHandle, testDataAt, 1514, 0)
	if _, err := th.hypercall(hcNetRead, testArgAt); err != nil || th.ret(24) != resultEUnspc {
		t.Errorf("failing device: err %v ret %d", err, th.ret(24))
	}
	th.args(netHandle, testMemSize-1000, 1514)
	_, err := th.hypercall(hcNetRead, testArgAt)
	mustGuestError(t, err, "NET_READ data")
	for _, a := range hostileAddrs {
		_, err := th.hypercall(hcNetRead, a)
		mustGuestError(t, err, "NET_READ argument")
	}
}

func TestHalt(t *testing.T) {
	th := newTestHV()
	for _, c := range []struct {
		status uint64
		want   int
	}{{0, 0}, {7, 7}, {255, 255}, {0xffffffff, 255}, {256, 0}} {
		th.args(0, c.status)
		h, err := th.hypercall(hcHalt, testArgAt)
		if err != nil || h == nil || h.status != c.want {
			t.Errorf("halt(%d) = %+v, %v; want status %d", c.status, h, err, c.want)
		}
	}
	th.args(testDataAt, 3)
	if h, err := th.hypercall(hcHalt, testArgAt); err != nil || h.status != 3 {
		t.Errorf("halt with cookie: %+v %v", h, err)
	}
	th.args(testMemSize-100, 3)
	_, err := th.hypercall(hcHalt, testArgAt)
	mustGuestError(t, err, "HALT cookie")
	for _, a := range hostileAddrs {
		_, err := th.hypercall(hcHalt, a)
		mustGuestError(t, err, "HALT argument")
	}
}

func TestUnknownHypercall(t *testing.T) {
	th := newTestHV()
	for _, nr := range []int{0, hcMax, 255, -1} {
		_, err := th.hypercall(nr, testArgAt)
		mustGuestError(t, err, "invalid guest hypercall")
	}
}

// FuzzHypercall runs every hypercall with fuzzed argument structures and
// guest memory contents. Whatever the guest supplies, a handler must either
// succeed or report a guest error; it must never panic, touch memory outside
// the guest, or return any other kind of error.
func FuzzHypercall(f *testing.F) {
	seed := func(nr int, gpa uint32, words ...uint64) {
		b := make([]byte, 8*len(words))
		for i, w := range words {
			binary.LittleEndian.PutUint64(b[8*i:], w)
		}
		f.Add(uint8(nr), gpa, b)
	}
	seed(hcPuts, 0x100, 0x200, 16)
	seed(hcPuts, 0x100, math.MaxUint64, 16)
	seed(hcBlockWrite, 0x100, blockHandle, 512, 0x200, 512)
	seed(hcBlockRead, 0x100, blockHandle, math.MaxUint64-511, 0x200, 1024)
	seed(hcNetWrite, 0x100, netHandle, 0x200, 60)
	seed(hcNetRead, 0xfff0, netHandle, 0x200, 1514)
	seed(hcPoll, 0x100, 1000)
	seed(hcHalt, 0x100, 0x300, 1)
	seed(hcWalltime, math.MaxUint32)
	f.Fuzz(func(t *testing.T, nr uint8, gpa uint32, args []byte) {
		th := newTestHV()
		th.mem = th.mem[:64<<10]
		th.nic.in = [][]byte{bytes.Repeat([]byte{1}, 2000)}
		copy(th.mem[0x100:], args)
		_, err := th.hypercall(int(nr), uint64(gpa))
		var ge *guestError
		if err != nil && !errors.As(err, &ge) {
			t.Fatalf("hypercall %d at %#x: non-guest error %v", nr, gpa, err)
		}
	})
}
