package policy

import (
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestWatchBridges: in a throwaway network namespace, creating and
// removing a bridge is reported at once; a link of another kind is not.
func TestWatchBridges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a network namespace and a bridge")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // and switches this thread to it
	if err != nil {
		t.Skipf("cannot make a network namespace: %v", err)
	}
	defer ns.Close()
	defer netns.Set(orig)

	var calls atomic.Int32
	changed := make(chan struct{}, 16)
	stop, err := WatchBridges(func() {
		calls.Add(1)
		changed <- struct{}{}
	}, func(err error) { t.Log(err) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	await := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatalf("no report of %s", what)
		}
	}

	if err := netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tap0"}, Mode: netlink.TUNTAP_MODE_TAP}); err != nil {
		t.Fatal(err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "newbr"}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	await("a new bridge")
	if n := calls.Load(); n != 1 {
		t.Errorf("%d reports after a tap and a bridge, want 1 (the bridge)", n)
	}
	if err := netlink.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tap0"}, Mode: netlink.TUNTAP_MODE_TAP}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkDel(br); err != nil {
		t.Fatal(err)
	}
	await("a removed bridge")
	time.Sleep(50 * time.Millisecond)
	if n := calls.Load(); n != 2 {
		t.Errorf("%d reports after a tap and a bridge came and went, want 2 (the bridge's)", n)
	}
}
