package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
)

// fakeBlocks is an in-memory BlockDevices: each device has a size and at
// most one holder, and every call is recorded. Like core/internal/block, a release
// by a VM that does not hold the device leaves it alone.
type fakeBlocks struct {
	mu      sync.Mutex
	sizeMB  map[string]int64
	holder  map[string]string
	failFor map[string]error // Acquire of these devices fails so
	calls   []string
}

func newFakeBlocks(sizes map[string]int64) *fakeBlocks {
	return &fakeBlocks{sizeMB: sizes, holder: map[string]string{}, failFor: map[string]error{}}
}

func (b *fakeBlocks) Acquire(dev, vm string) (string, int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, "acquire "+dev+" "+vm)
	if err := b.failFor[dev]; err != nil {
		return "", 0, err
	}
	size, ok := b.sizeMB[dev]
	if !ok {
		return "", 0, fmt.Errorf("no block device %s", dev)
	}
	if h := b.holder[dev]; h != "" && h != vm {
		return "", 0, fmt.Errorf("%s is in use by %s", dev, h)
	}
	b.holder[dev] = vm
	return "/blocks/" + dev, size, nil
}

func (b *fakeBlocks) Release(dev, vm string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, "release "+dev+" "+vm)
	if b.holder[dev] == vm {
		delete(b.holder, dev)
	}
}

// held lists the holds as "dev=vm", sorted.
func (b *fakeBlocks) held() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for d, vm := range b.holder {
		out = append(out, d+"="+vm)
	}
	sort.Strings(out)
	return out
}

// log returns the calls recorded since the last log and forgets them.
func (b *fakeBlocks) log() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.calls
	b.calls = nil
	return c
}

// fakeNet is an in-memory Network: taps are a set, bridges a fixed list,
// and every Attach, Detach and Reconcile is recorded.
type fakeNet struct {
	mu      sync.Mutex
	bridges []string
	taps    map[string]string // host interface -> bridge
	failFor map[string]error  // Attach of these host interfaces fails so
	calls   []string
}

func newFakeNet(bridges ...string) *fakeNet {
	return &fakeNet{bridges: bridges, taps: map[string]string{}, failFor: map[string]error{}}
}

func (n *fakeNet) TapName(vm, netName string) string { return "tap-" + vm + "-" + netName }

func (n *fakeNet) DeriveMAC(vm, netName string) string {
	h := fnv.New32a()
	h.Write([]byte(vm + "/" + netName))
	s := h.Sum32()
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(s>>24), byte(s>>16), byte(s>>8), byte(s))
}

func (n *fakeNet) ParseMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return "", err
	}
	return hw.String(), nil
}

func (n *fakeNet) BridgeExists(_ context.Context, bridge string) (bool, error) {
	return slices.Contains(n.bridges, bridge), nil
}

func (n *fakeNet) Attach(_ context.Context, vm, netName, bridge, mac, hostIf string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, "attach "+hostIf+" "+bridge+" "+mac)
	if err := n.failFor[hostIf]; err != nil {
		return err
	}
	n.taps[hostIf] = bridge
	return nil
}

func (n *fakeNet) Detach(_ context.Context, hostIf string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, "detach "+hostIf)
	delete(n.taps, hostIf)
	return nil
}

func (n *fakeNet) Reconcile(_ context.Context, keep []string) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := slices.Clone(keep)
	sort.Strings(k)
	n.calls = append(n.calls, "reconcile "+strings.Join(k, ","))
	var removed []string
	for t := range n.taps {
		if !slices.Contains(keep, t) {
			delete(n.taps, t)
			removed = append(removed, t)
		}
	}
	return removed, nil
}

// up lists the taps as "tap@bridge", sorted.
func (n *fakeNet) up() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for t, br := range n.taps {
		out = append(out, t+"@"+br)
	}
	sort.Strings(out)
	return out
}

// log returns the calls recorded since the last log and forgets them.
func (n *fakeNet) log() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.calls
	n.calls = nil
	return c
}

// newDeviceFixture is a fixture whose supervisor has block devices disk1
// (16 MB), disk2 (16 MB) and odd (1 MB), and bridges br0 and br1.
func newDeviceFixture(t *testing.T) (*fixture, *fakeBlocks, *fakeNet) {
	t.Helper()
	blocks := newFakeBlocks(map[string]int64{"disk1": 16, "disk2": 16, "odd": 1})
	nets := newFakeNet("br0", "br1")
	f := &fixture{t: t, dir: t.TempDir(), hv: newFake(), blocks: blocks, net: nets}
	f.open("boot-1", nil)
	sha, _, err := f.st.PutImage(bytes.NewReader([]byte("image")), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	f.sha = sha
	return f, blocks, nets
}

// twoOfEach is a create of VM web with two block devices and two network
// devices.
func (f *fixture) twoOfEach() CreateParams {
	return CreateParams{Name: "web", ImageSHA256: f.sha, MemoryMB: 16,
		Blocks: []BlockParam{{Name: "data", Device: "disk1"}, {Name: "logs", Device: "disk2"}},
		Nets:   []NetParam{{Name: "service", Bridge: "br0"}, {Name: "admin", Bridge: "br1"}}}
}

func sameCalls(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// TestDevicesAcquiredForRun: a create takes each block device and
// attaches each tap, in order, and hands the backend their files, names
// and addresses.
func TestDevicesAcquiredForRun(t *testing.T) {
	f, blocks, nets := newDeviceFixture(t)
	r, err := f.sup.Create(context.Background(), f.twoOfEach())
	if err != nil {
		t.Fatal(err)
	}
	macS, macA := nets.DeriveMAC("web", "service"), nets.DeriveMAC("web", "admin")
	sameCalls(t, "block calls", blocks.log(), "acquire disk1 web", "acquire disk2 web")
	sameCalls(t, "network calls", nets.log(), "attach tap-web-service br0 "+macS, "attach tap-web-admin br1 "+macA)
	sameCalls(t, "held", blocks.held(), "disk1=web", "disk2=web")
	sameCalls(t, "taps", nets.up(), "tap-web-admin@br1", "tap-web-service@br0")
	if r.Nets[0].HostIf != "tap-web-service" || r.Nets[1].MAC != macA {
		t.Fatalf("recorded nets %+v", r.Nets)
	}
	f.hv.mu.Lock()
	spec := f.hv.specs["web"]
	f.hv.mu.Unlock()
	var got []string
	for _, b := range spec.GetBlocks() {
		got = append(got, b.GetName()+"="+b.GetPath())
	}
	for _, n := range spec.GetNets() {
		got = append(got, n.GetName()+"="+n.GetHostIf()+"/"+n.GetMac())
	}
	sameCalls(t, "spec devices", got, "data=/blocks/disk1", "logs=/blocks/disk2",
		"service=tap-web-service/"+macS, "admin=tap-web-admin/"+macA)
}

// TestSecondTapFails: when the second tap cannot be attached, the first
// is detached and both block devices are given back; nothing started,
// nothing recorded, nothing held.
func TestSecondTapFails(t *testing.T) {
	f, blocks, nets := newDeviceFixture(t)
	boom := errors.New("netlink: operation not permitted")
	nets.failFor["tap-web-admin"] = boom
	_, err := f.sup.Create(context.Background(), f.twoOfEach())
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "attach tap-web-admin to br1") {
		t.Fatalf("create with a failing tap: %v", err)
	}
	macS, macA := nets.DeriveMAC("web", "service"), nets.DeriveMAC("web", "admin")
	sameCalls(t, "network calls", nets.log(),
		"attach tap-web-service br0 "+macS, "attach tap-web-admin br1 "+macA, "detach tap-web-service")
	sameCalls(t, "block calls", blocks.log(),
		"acquire disk1 web", "acquire disk2 web", "release disk1 web", "release disk2 web")
	sameCalls(t, "held", blocks.held())
	sameCalls(t, "taps", nets.up())
	if len(f.hv.started) != 0 {
		t.Fatalf("started %v", f.hv.started)
	}
	if recs, _ := f.sup.Info(""); len(recs) != 0 {
		t.Fatalf("a failed create left %v", recs)
	}
}

// TestSecondBlockFails: when the second block device is taken by another
// VM, the first is given back and no tap is made.
func TestSecondBlockFails(t *testing.T) {
	f, blocks, nets := newDeviceFixture(t)
	if _, _, err := blocks.Acquire("disk2", "other"); err != nil {
		t.Fatal(err)
	}
	blocks.log()
	_, err := f.sup.Create(context.Background(), f.twoOfEach())
	if err == nil || !strings.Contains(err.Error(), "block device disk2: disk2 is in use by other") {
		t.Fatalf("create with a block device in use: %v", err)
	}
	sameCalls(t, "block calls", blocks.log(), "acquire disk1 web", "acquire disk2 web", "release disk1 web")
	sameCalls(t, "held", blocks.held(), "disk2=other")
	sameCalls(t, "network calls", nets.log())
}

// TestSectorSizeMismatch: a device whose size is no multiple of the
// sector size asked for is given back at once, with the one taken before
// it, and the create is refused as the caller's mistake.
func TestSectorSizeMismatch(t *testing.T) {
	f, blocks, _ := newDeviceFixture(t)
	p := CreateParams{Name: "web", ImageSHA256: f.sha, MemoryMB: 16, Blocks: []BlockParam{
		{Name: "data", Device: "disk1"}, {Name: "big", Device: "odd", SectorSize: 1 << 21}}}
	_, err := f.sup.Create(context.Background(), p)
	if !errors.Is(err, hypervisor.ErrInvalid) || !strings.Contains(err.Error(), "sector size 2097152 does not divide the 1 MB of odd") {
		t.Fatalf("create with a sector size larger than the device: %v", err)
	}
	sameCalls(t, "block calls", blocks.log(), "acquire disk1 web", "acquire odd web", "release odd web", "release disk1 web")
	sameCalls(t, "held", blocks.held())
}

// TestStartFailsReleasesDevices: when the backend cannot start the VM,
// every device it was given is given back.
func TestStartFailsReleasesDevices(t *testing.T) {
	f, blocks, nets := newDeviceFixture(t)
	f.hv.mu.Lock()
	f.hv.unreachable = 1
	f.hv.mu.Unlock()
	if _, err := f.sup.Create(context.Background(), f.twoOfEach()); !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Fatalf("create on a backend that is away: %v", err)
	}
	sameCalls(t, "held", blocks.held())
	sameCalls(t, "taps", nets.up())
	log := nets.log()
	sameCalls(t, "network calls after the start failed", log[2:], "detach tap-web-service", "detach tap-web-admin")
}

// TestDevicesReleasedOnDestroy: destroying a running VM gives back its
// block devices and removes its taps.
func TestDevicesReleasedOnDestroy(t *testing.T) {
	f, blocks, nets := newDeviceFixture(t)
	if _, err := f.sup.Create(context.Background(), f.twoOfEach()); err != nil {
		t.Fatal(err)
	}
	blocks.log()
	nets.log()
	if err := f.sup.Destroy(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	sameCalls(t, "block calls", blocks.log(), "release disk1 web", "release disk2 web")
	sameCalls(t, "network calls", nets.log(), "detach tap-web-service", "detach tap-web-admin")
	sameCalls(t, "held", blocks.held())
	sameCalls(t, "taps", nets.up())
}

// TestReleaseTwiceHarmless: a VM that exited has given its devices back;
// destroying it gives them back again, which leaves another VM that took
// a device meanwhile holding it.
func TestReleaseTwiceHarmless(t *testing.T) {
	f, blocks, nets := newDeviceFixture(t)
	r, err := f.sup.Create(context.Background(), f.twoOfEach())
	if err != nil {
		t.Fatal(err)
	}
	f.hv.exit(r.RunID, 0, 0)
	eventually(t, "exit", func() bool { return f.state("web").State == StateExited })
	sameCalls(t, "held after the exit", blocks.held())
	sameCalls(t, "taps after the exit", nets.up())
	if _, err := f.sup.Create(context.Background(), CreateParams{Name: "next", ImageSHA256: f.sha, MemoryMB: 16,
		Blocks: []BlockParam{{Name: "data", Device: "disk1"}}}); err != nil {
		t.Fatalf("a device given back at exit cannot be taken: %v", err)
	}
	blocks.log()
	if err := f.sup.Destroy(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	sameCalls(t, "block calls", blocks.log(), "release disk1 web", "release disk2 web")
	sameCalls(t, "held", blocks.held(), "disk1=next")
}

// TestRestartReacquires: a restart gives the devices back and takes them
// again for the new run; the VM holds them once, as before.
func TestRestartReacquires(t *testing.T) {
	f, blocks, nets := newDeviceFixture(t)
	if _, err := f.sup.Create(context.Background(), f.twoOfEach()); err != nil {
		t.Fatal(err)
	}
	blocks.log()
	nets.log()
	if _, err := f.sup.Restart(context.Background(), "web", nil); err != nil {
		t.Fatal(err)
	}
	sameCalls(t, "block calls", blocks.log(),
		"release disk1 web", "release disk2 web", "acquire disk1 web", "acquire disk2 web")
	sameCalls(t, "held", blocks.held(), "disk1=web", "disk2=web")
	sameCalls(t, "taps", nets.up(), "tap-web-admin@br1", "tap-web-service@br0")
}

// TestReplaceSwapsDevices: a forced create gives back the devices of the
// VM it replaces and takes those of the new configuration.
func TestReplaceSwapsDevices(t *testing.T) {
	f, blocks, nets := newDeviceFixture(t)
	if _, err := f.sup.Create(context.Background(), f.twoOfEach()); err != nil {
		t.Fatal(err)
	}
	p := CreateParams{Name: "web", ImageSHA256: f.sha, MemoryMB: 16, Force: true,
		Blocks: []BlockParam{{Name: "data", Device: "disk2"}},
		Nets:   []NetParam{{Name: "other", Bridge: "br1"}}}
	if _, err := f.sup.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	sameCalls(t, "held", blocks.held(), "disk2=web")
	sameCalls(t, "taps", nets.up(), "tap-web-other@br1")
}

// TestRecoverReclaimsAndReconciles: a new daemon finds a VM still
// running; it takes its block devices back (so no other VM gets them),
// keeps its taps and removes a tap no VM owns.
func TestRecoverReclaimsAndReconciles(t *testing.T) {
	f, blocks, nets := newDeviceFixture(t)
	if _, err := f.sup.Create(context.Background(), f.twoOfEach()); err != nil {
		t.Fatal(err)
	}
	f.close()
	fresh := newFakeBlocks(blocks.sizeMB)
	f.blocks = fresh
	nets.taps["tap-gone-eth0"] = "br0"
	nets.log()
	f.open("boot-1", nil)
	if reattached, _, err := f.sup.Recover(context.Background()); err != nil || reattached != 1 {
		t.Fatalf("Recover: %d reattached, %v", reattached, err)
	}
	sameCalls(t, "held after recovery", fresh.held(), "disk1=web", "disk2=web")
	sameCalls(t, "taps after recovery", nets.up(), "tap-web-admin@br1", "tap-web-service@br0")
	sameCalls(t, "network calls", nets.log(), "reconcile tap-web-admin,tap-web-service")
}

// TestNetworkGone: a VM created with network devices, which a daemon
// configured without a network plugin is to start (after a reboot, or on
// request), fails with the reason; the daemon does not crash and keeps no
// block device for it.
func TestNetworkGone(t *testing.T) {
	f, blocks, _ := newDeviceFixture(t)
	if _, err := f.sup.Create(context.Background(), f.twoOfEach()); err != nil {
		t.Fatal(err)
	}
	f.close()
	f.hv = newFake()
	f.net = nil
	f.open("boot-2", nil)
	if _, started, err := f.sup.Recover(context.Background()); err != nil || started != 0 {
		t.Fatalf("Recover after a reboot without a network plugin: %d started, %v", started, err)
	}
	if s := f.state("web"); s.State != StateFailed || !strings.Contains(s.Message, "no network plugin") {
		t.Fatalf("after a reboot without a network plugin: %+v", s)
	}
	sameCalls(t, "held after the reboot", blocks.held())
	_, err := f.sup.Restart(context.Background(), "web", nil)
	if !errors.Is(err, hypervisor.ErrInvalid) || !strings.Contains(err.Error(), "no network plugin") {
		t.Fatalf("restart without a network plugin: %v", err)
	}
	if s := f.state("web"); s.State != StateFailed {
		t.Fatalf("after a restart without a network plugin: %+v", s)
	}
	sameCalls(t, "held", blocks.held())
}
