//go:build linux

package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/sdk/network"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// env is one test's throwaway network namespace, a netlink handle into
// it, and a plugin confined to it.
type env struct {
	ns netns.NsHandle
	h  *netlink.Handle
	p  *Plugin
}

// inThread runs fn on a locked OS thread that has entered ns (or, with
// ns closed, a fresh namespace that fn's thread alone sees). The thread is
// never unlocked, so the runtime discards it afterwards and no other
// goroutine ever runs in the namespace: the host's interfaces are never
// touched.
func inThread(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if ns.IsOpen() {
			if err := netns.Set(ns); err != nil {
				errc <- fmt.Errorf("enter namespace: %w", err)
				return
			}
		}
		errc <- fn()
	}()
	return <-errc
}

// newEnv creates a namespace with a bridge br0 (MTU 1400, up) and a plugin
// working in it.
func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) to create network namespaces and taps")
	}
	if _, err := os.Stat(TunDevice); err != nil {
		t.Skipf("needs %s: %v", TunDevice, err)
	}
	ns := netns.None()
	err := inThread(netns.None(), func() error {
		var err error
		ns, err = netns.New()
		return err
	})
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	p, err := NewAt("test", ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Configure(context.Background(), &pluginv1.ConfigureRequest{InstanceId: testInstance}); err != nil {
		t.Fatal(err)
	}
	e := &env{ns: ns, h: h, p: p}
	e.addBridge(t, "br0", 1400)
	return e
}

// testInstance is the petreld instance the tests' plugins serve.
const testInstance = "7e57000000000001"

func (e *env) addBridge(t *testing.T, name string, mtu int) netlink.Link {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}
	if err := e.h.LinkAdd(br); err != nil {
		t.Fatalf("add bridge %s: %v", name, err)
	}
	if err := e.h.LinkSetUp(br); err != nil {
		t.Fatalf("bridge %s up: %v", name, err)
	}
	return e.link(t, name)
}

func (e *env) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := e.h.LinkByName(name)
	if err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	return l
}

// taps lists the names of all taps in the namespace.
func (e *env) taps(t *testing.T) []string {
	t.Helper()
	links, err := e.h.LinkList()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	var out []string
	for _, l := range links {
		if l.Type() == "tuntap" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// addForeignTap creates a tap that Petrel did not make.
func (e *env) addForeignTap(t *testing.T, name, alias string) {
	t.Helper()
	err := inThread(e.ns, func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI})
	})
	if err != nil {
		t.Fatalf("add tap %s: %v", name, err)
	}
	if alias != "" {
		if err := e.h.LinkSetAlias(e.link(t, name), alias); err != nil {
			t.Fatalf("alias %s: %v", name, err)
		}
	}
}

func attachReq(vm, dev string) *pluginv1.AttachRequest {
	return &pluginv1.AttachRequest{Vm: vm, NetName: dev, Bridge: "br0"}
}

func TestAttach(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	req := attachReq("team:app:web", "service0")
	res, err := e.p.Attach(ctx, req)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	name := network.TapNameFor(testInstance, req.Vm, req.NetName)
	mac := network.DeriveMACFor(testInstance, req.Vm, req.NetName)
	if res.GetHostIf() != name || res.GetMac() != mac || res.GetMtu() != 1400 || res.GetBridge() != "br0" {
		t.Fatalf("Attach = %v; want %s, %s, MTU 1400 on br0", res, name, mac)
	}
	l := e.link(t, name)
	at := l.Attrs()
	br := e.link(t, "br0")
	if at.Flags&net.FlagUp == 0 {
		t.Error("tap is not up")
	}
	if at.MTU != 1400 {
		t.Errorf("tap MTU %d; want the bridge's 1400", at.MTU)
	}
	if at.MasterIndex != br.Attrs().Index {
		t.Errorf("tap master index %d; want br0's %d", at.MasterIndex, br.Attrs().Index)
	}
	if tag, ok := network.ParseAlias(at.Alias); !ok || tag != (network.Tag{VM: req.Vm, Net: req.NetName, MAC: mac, Owner: testInstance}) {
		t.Errorf("alias %q parses to %+v, %v", at.Alias, tag, ok)
	}
	if hm, _ := network.HostMAC(mac); at.HardwareAddr.String() != hm {
		t.Errorf("tap MAC %s; want %s", at.HardwareAddr, hm)
	}
	tt, ok := l.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("link is a %T, not a tuntap", l)
	}
	if tt.Mode != netlink.TUNTAP_MODE_TAP || tt.Flags&netlink.TUNTAP_NO_PI == 0 || tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 || tt.NonPersist || tt.Owner != 0 {
		t.Errorf("tap mode %v flags %#x persist %v owner %d; want a persistent single-queue tap without PI owned by root", tt.Mode, tt.Flags, !tt.NonPersist, tt.Owner)
	}
}

func TestAttachRefusalsLeaveNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addBridge(t, "br1", 1500)
	cases := map[string]*pluginv1.AttachRequest{
		"missing bridge":    {Vm: "v", NetName: "n", Bridge: "nosuchbr"},
		"not a bridge":      {Vm: "v", NetName: "n", Bridge: "lo"},
		"multicast MAC":     {Vm: "v", NetName: "n", Bridge: "br0", Mac: "03:00:00:00:00:01"},
		"bad name":          {Vm: "v", NetName: "n", Bridge: "br0", HostIf: "a b"},
		"taken by a bridge": {Vm: "v", NetName: "n", Bridge: "br0", HostIf: "br1"},
	}
	for name, req := range cases {
		if _, err := e.p.Attach(ctx, req); !errors.Is(err, network.ErrInvalid) {
			t.Errorf("%s: Attach = %v; want ErrInvalid", name, err)
		}
	}
	_, err := e.p.Attach(ctx, cases["missing bridge"])
	if want := "bridge nosuchbr does not exist"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("missing bridge error %v; want it to say %q", err, want)
	}
	_, err = e.p.Attach(ctx, cases["not a bridge"])
	if want := "lo is not a bridge"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("not-a-bridge error %v; want it to say %q", err, want)
	}
	if taps := e.taps(t); len(taps) != 0 {
		t.Fatalf("refused attaches left taps %v", taps)
	}
	e.link(t, "br1")
}

func TestAttachFailureRemovesTap(t *testing.T) {
	e := newEnv(t)
	a, err := parseAttach(attachReq("vm", "service0"), testInstance)
	if err != nil {
		t.Fatal(err)
	}
	// A bridge that vanished between its lookup and the enslaving makes
	// a step fail after the tap was created; the tap must go again.
	stale := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "gone0", Index: 99999, MTU: 1400}}
	if _, err := e.p.attachTo(a, stale); err == nil {
		t.Fatal("attach to a vanished bridge succeeded")
	}
	if taps := e.taps(t); len(taps) != 0 {
		t.Fatalf("failed attach left taps %v", taps)
	}
}

func TestAttachIdempotentAndAdopts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	req := attachReq("a:b:vm", "service0")
	first, err := e.p.Attach(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	idx := e.link(t, first.GetHostIf()).Attrs().Index
	second, err := e.p.Attach(ctx, req)
	if err != nil || second.GetHostIf() != first.GetHostIf() || second.GetMac() != first.GetMac() {
		t.Fatalf("second Attach = %v, %v; want %v", second, err, first)
	}
	if got := e.link(t, first.GetHostIf()).Attrs().Index; got != idx {
		t.Fatalf("second Attach recreated the tap (index %d, was %d)", got, idx)
	}
	// A new MAC for the same device is recorded on the same tap.
	req.Mac = "02:00:00:00:00:42"
	if _, err := e.p.Attach(ctx, req); err != nil {
		t.Fatal(err)
	}
	if tag, _ := network.ParseAlias(e.link(t, first.GetHostIf()).Attrs().Alias); tag.MAC != req.Mac {
		t.Fatalf("tag MAC %q; want %q", tag.MAC, req.Mac)
	}
	if taps := e.taps(t); len(taps) != 1 {
		t.Fatalf("taps %v; want exactly one", taps)
	}

	// An untagged tap with the derived name is a create cut short: adopt.
	cut := attachReq("a:b:vm", "cut0")
	cutName := network.TapNameFor(testInstance, cut.Vm, cut.NetName)
	e.addForeignTap(t, cutName, "")
	if res, err := e.p.Attach(ctx, cut); err != nil || res.GetHostIf() != cutName {
		t.Fatalf("Attach over an untagged derived-name tap = %v, %v", res, err)
	}
	if e.link(t, cutName).Attrs().MasterIndex == 0 {
		t.Fatal("adopted tap not enslaved")
	}

	// Another VM's tap, or an untagged tap under a given name, is refused
	// and left alone.
	other := attachReq("other:vm", "service0")
	otherName := network.TapNameFor(testInstance, other.Vm, other.NetName)
	alias, _ := network.Tag{VM: "third:vm", Net: "service0"}.Alias()
	e.addForeignTap(t, otherName, alias)
	e.addForeignTap(t, "usertap0", "")
	for _, r := range []*pluginv1.AttachRequest{other, {Vm: "x", NetName: "y", Bridge: "br0", HostIf: "usertap0"}} {
		_, err := e.p.Attach(ctx, r)
		if !errors.Is(err, network.ErrInvalid) || !strings.Contains(err.Error(), "exists and is not ours") {
			t.Fatalf("Attach over a foreign tap = %v; want ErrInvalid saying it is not ours", err)
		}
	}
	e.link(t, otherName)
	e.link(t, "usertap0")
}

func TestDetach(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	res, err := e.p.Attach(ctx, attachReq("vm", "service0"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.p.Detach(ctx, res.GetHostIf()); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if _, err := e.h.LinkByName(res.GetHostIf()); !isNotFound(err) {
		t.Fatalf("tap still there after Detach: %v", err)
	}
	if err := e.p.Detach(ctx, res.GetHostIf()); err != nil {
		t.Fatalf("Detach of a missing tap: %v", err)
	}
	e.addForeignTap(t, "usertap0", "")
	for _, name := range []string{"br0", "usertap0", "lo"} {
		if err := e.p.Detach(ctx, name); !errors.Is(err, network.ErrInvalid) {
			t.Errorf("Detach(%s) = %v; want ErrInvalid", name, err)
		}
		e.link(t, name)
	}
	if err := e.p.Detach(ctx, "bad/name"); !errors.Is(err, network.ErrInvalid) {
		t.Errorf("Detach(bad/name) = %v; want ErrInvalid", err)
	}
}

func TestReconcile(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	keep, err := e.p.Attach(ctx, attachReq("vm1", "service0"))
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := e.p.Attach(ctx, attachReq("vm2", "service0"))
	if err != nil {
		t.Fatal(err)
	}
	e.addForeignTap(t, "usertap0", "")
	e.addForeignTap(t, "usertap1", "someone else's tap")
	// Left by a plugin killed between making a tap and tagging it.
	e.addForeignTap(t, "pt00000000abcd", "")
	// Tagged before instances had an id, or by another instance.
	legacy, _ := network.Tag{VM: "old", Net: "service0"}.Alias()
	e.addForeignTap(t, "pt00000000beef", legacy)
	theirs, _ := network.Tag{VM: "vm2", Net: "service0", Owner: "0ther000000000000"}.Alias()
	e.addForeignTap(t, "pt00000000cafe", theirs)
	removed, err := e.p.Reconcile(ctx, []string{keep.GetHostIf()})
	want := []string{orphan.GetHostIf(), "pt00000000abcd"}
	slices.Sort(want)
	if err != nil || !slices.Equal(removed, want) {
		t.Fatalf("Reconcile = %v, %v; want %v", removed, err, want)
	}
	got := e.taps(t)
	slices.Sort(got)
	want = []string{keep.GetHostIf(), "usertap0", "usertap1", "pt00000000beef", "pt00000000cafe"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("taps after Reconcile %v; want %v", got, want)
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	res, err := e.p.Attach(ctx, attachReq("vm", "service0"))
	if err != nil {
		t.Fatal(err)
	}
	// Play the guest: open the tap the way a Solo5 tender does and send
	// one broadcast frame with an experimental EtherType. It stays in the
	// namespace's bridge.
	const frames, size = 3, 60
	err = inThread(e.ns, func() error {
		fd, err := unix.Open(TunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(res.GetHostIf())
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		frame := make([]byte, size)
		copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
		for range frames {
			if _, err := unix.Write(fd, frame); err != nil {
				return fmt.Errorf("write frame: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.p.Stats(ctx, []string{res.GetHostIf(), "missing0"})
	if err != nil || len(st) != 1 {
		t.Fatalf("Stats = %v, %v; want one entry", st, err)
	}
	if s := st[0]; s.GetHostIf() != res.GetHostIf() || s.GetRxPackets() < frames || s.GetRxBytes() < frames*size {
		t.Fatalf("Stats = %v; want at least %d packets / %d bytes received", s, frames, frames*size)
	}
	if _, err := e.p.Stats(ctx, []string{"bad name"}); !errors.Is(err, network.ErrInvalid) {
		t.Fatalf("Stats(bad name) = %v; want ErrInvalid", err)
	}
}

func TestBridgesAndFingerprint(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addBridge(t, "abr", 1500)
	var names []string
	for _, dev := range []string{"a", "b"} {
		res, err := e.p.Attach(ctx, attachReq("vm", dev))
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, res.GetHostIf())
	}
	slices.Sort(names)
	bs, err := e.p.Bridges(ctx)
	if err != nil || len(bs) != 2 || bs[0].GetName() != "abr" || bs[1].GetName() != "br0" {
		t.Fatalf("Bridges = %v, %v; want abr, br0", bs, err)
	}
	br0 := bs[1]
	if br0.GetMtu() != 1400 || !br0.GetUp() || br0.GetMac() != e.link(t, "br0").Attrs().HardwareAddr.String() || !slices.Equal(br0.GetMembers(), names) {
		t.Fatalf("br0 = %v; want MTU 1400, up, members %v", br0, names)
	}
	if len(bs[0].GetMembers()) != 0 {
		t.Fatalf("abr members %v; want none", bs[0].GetMembers())
	}
	fp, err := e.p.Fingerprint(ctx)
	if err != nil || fp.GetHealth() != pluginv1.Health_HEALTH_HEALTHY || fp.GetAttributes()["bridges"] != "2" {
		t.Fatalf("Fingerprint = %v, %v; want healthy with 2 bridges", fp, err)
	}
}

func TestConfigureOwner(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.p.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{SettingOwner: "1234", SettingGroup: "56"}}); err != nil {
		t.Fatal(err)
	}
	res, err := e.p.Attach(ctx, attachReq("vm", "service0"))
	if err != nil {
		t.Fatal(err)
	}
	if tt, ok := e.link(t, res.GetHostIf()).(*netlink.Tuntap); !ok || tt.Owner != 1234 || tt.Group != 56 {
		t.Fatalf("tap = %+v; want owner 1234 group 56", e.link(t, res.GetHostIf()))
	}
	for _, bad := range []map[string]string{{SettingOwner: "root"}, {"mtu": "9000"}} {
		if err := e.p.Configure(ctx, &pluginv1.ConfigureRequest{Settings: bad}); !errors.Is(err, network.ErrInvalid) {
			t.Errorf("Configure(%v) = %v; want ErrInvalid", bad, err)
		}
	}
}

func TestConcurrentAttach(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := e.p.Attach(ctx, attachReq(fmt.Sprintf("vm%d", i), "service0"))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Attach: %v", err)
		}
	}
	removed, err := e.p.Reconcile(ctx, nil)
	if err != nil || len(removed) != n {
		t.Fatalf("Reconcile removed %d (%v); want %d", len(removed), err, n)
	}
	if taps := e.taps(t); len(taps) != 0 {
		t.Fatalf("taps left: %v", taps)
	}
}

func TestChurn(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const cycles = 500
	var attach, detach time.Duration
	for i := range cycles {
		t0 := time.Now()
		res, err := e.p.Attach(ctx, attachReq(fmt.Sprintf("churn:vm%d", i), "service0"))
		if err != nil {
			t.Fatalf("cycle %d: Attach: %v", i, err)
		}
		t1 := time.Now()
		if err := e.p.Detach(ctx, res.GetHostIf()); err != nil {
			t.Fatalf("cycle %d: Detach: %v", i, err)
		}
		attach += t1.Sub(t0)
		detach += time.Since(t1)
	}
	t.Logf("%d attach/detach cycles in %v: attach %v, detach %v on average", cycles, (attach + detach).Round(time.Millisecond),
		(attach / cycles).Round(time.Microsecond), (detach / cycles).Round(time.Microsecond))
	if taps := e.taps(t); len(taps) != 0 {
		t.Fatalf("churn left taps %v", taps)
	}
}

func TestConformance(t *testing.T) {
	e := newEnv(t)
	sdktest.NetworkSuite{
		New: func(t *testing.T) network.Network {
			p, err := NewAt("test", e.ns)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			return p
		},
		Bridge:    "br0",
		NotBridge: "lo",
	}.Run(t)
}
