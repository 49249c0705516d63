package sdktest

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/network"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// ServeNetwork serves impl over an in-process gRPC connection and returns
// the Network petreld would see. Everything is torn down when the test
// ends.
func ServeNetwork(t testing.TB, impl network.Network) network.Network {
	t.Helper()
	return serve[network.Network](t, petrelplugin.NetworkService, network.NewGRPCPlugin(impl))
}

// NetworkSuite describes a network plugin under test. The suite drives it
// through the gRPC boundary with ServeNetwork and checks it only through
// the plugin API, so it fits any plugin that puts interfaces on bridges.
//
// The suite removes every interface the plugin reports as its own
// (Reconcile with nothing kept) to check for leaks, so run it where no
// live VM has interfaces, such as a throwaway network namespace.
type NetworkSuite struct {
	// New returns a fresh, unconfigured plugin.
	New func(t *testing.T) network.Network
	// Settings are passed to Configure.
	Settings map[string]string
	// Bridge is an existing bridge the plugin may attach interfaces to.
	Bridge string
	// NotBridge is an existing interface that is not a bridge and that
	// the plugin did not create (a loopback interface will do).
	NotBridge string
}

// The petreld instances the suite's plugins serve: most serve the first;
// one serves the second, to check that instances leave each other's
// interfaces alone.
const (
	suiteInstance = "c0ffee00c0ffee00"
	otherInstance = "0ddba11000ddba11"
)

func (s NetworkSuite) configured(t *testing.T) network.Network {
	t.Helper()
	return s.configuredFor(t, suiteInstance)
}

// configuredFor returns a plugin serving the petreld instance instance.
func (s NetworkSuite) configuredFor(t *testing.T, instance string) network.Network {
	t.Helper()
	n := ServeNetwork(t, s.New(t))
	if err := n.Configure(context.Background(), &pluginv1.ConfigureRequest{Settings: s.Settings, InstanceId: instance}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return n
}

// bridge returns the suite's bridge as the plugin lists it.
func (s NetworkSuite) bridge(ctx context.Context, t *testing.T, n network.Network) *pluginv1.Bridge {
	t.Helper()
	bs, err := n.Bridges(ctx)
	if err != nil {
		t.Fatalf("Bridges: %v", err)
	}
	if !slices.IsSortedFunc(bs, func(a, b *pluginv1.Bridge) int { return cmp.Compare(a.GetName(), b.GetName()) }) {
		t.Fatalf("Bridges not sorted by name: %v", bs)
	}
	for _, b := range bs {
		if b.GetName() == s.Bridge {
			return b
		}
	}
	t.Fatalf("Bridges %v lacks %s", bs, s.Bridge)
	return nil
}

// noLeaks fails the test if the plugin still has interfaces of its own.
func noLeaks(ctx context.Context, t *testing.T, n network.Network) {
	t.Helper()
	removed, err := n.Reconcile(ctx, nil)
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if len(removed) != 0 {
		t.Fatalf("interfaces left behind: %v", removed)
	}
}

// Run runs the conformance suite.
func (s NetworkSuite) Run(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.configured(t).Reconcile(ctx, nil); err != nil {
		t.Fatalf("initial Reconcile: %v", err)
	}

	t.Run("Identity", func(t *testing.T) {
		n := s.configured(t)
		info, err := n.Info(ctx)
		if err != nil || info.GetKind() != pluginv1.Kind_KIND_NETWORK || info.GetName() == "" || len(info.GetApiVersions()) == 0 {
			t.Fatalf("Info: %v %v", info, err)
		}
		fp, err := n.Fingerprint(ctx)
		if err != nil || fp.GetHealth() != pluginv1.Health_HEALTH_HEALTHY {
			t.Fatalf("Fingerprint: %v %v", fp, err)
		}
		if err := n.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{"no-such-setting": "1"}}); !errors.Is(err, network.ErrInvalid) {
			t.Fatalf("Configure with an unknown setting = %v; want ErrInvalid", err)
		}
		s.bridge(ctx, t, n)
	})

	t.Run("AttachDetach", func(t *testing.T) {
		n := s.configured(t)
		req := &pluginv1.AttachRequest{Vm: "conformance:net:vm", NetName: "service0", Bridge: s.Bridge}
		res, err := n.Attach(ctx, req)
		if err != nil {
			t.Fatalf("Attach: %v", err)
		}
		want := network.TapNameFor(suiteInstance, req.Vm, req.NetName)
		br := s.bridge(ctx, t, n)
		if res.GetHostIf() != want || res.GetMac() != network.DeriveMACFor(suiteInstance, req.Vm, req.NetName) || res.GetBridge() != s.Bridge || res.GetMtu() != br.GetMtu() {
			t.Fatalf("Attach = %v; want %s with the derived MAC and MTU %d", res, want, br.GetMtu())
		}
		if !slices.Contains(br.GetMembers(), want) {
			t.Fatalf("bridge members %v lack %s", br.GetMembers(), want)
		}
		again, err := n.Attach(ctx, req)
		if err != nil || again.GetHostIf() != res.GetHostIf() || again.GetMac() != res.GetMac() {
			t.Fatalf("second Attach = %v, %v; want the same interface", again, err)
		}
		st, err := n.Stats(ctx, []string{want, "ptmissing0"})
		if err != nil || len(st) != 1 || st[0].GetHostIf() != want {
			t.Fatalf("Stats = %v, %v; want one entry for %s", st, err, want)
		}
		if err := n.Detach(ctx, want); err != nil {
			t.Fatalf("Detach: %v", err)
		}
		if err := n.Detach(ctx, want); err != nil {
			t.Fatalf("second Detach: %v", err)
		}
		if m := s.bridge(ctx, t, n).GetMembers(); slices.Contains(m, want) {
			t.Fatalf("bridge members %v still hold %s", m, want)
		}
		if st, err := n.Stats(ctx, []string{want}); err != nil || len(st) != 0 {
			t.Fatalf("Stats after Detach = %v, %v; want none", st, err)
		}
		noLeaks(ctx, t, n)
	})

	t.Run("GivenNameAndMAC", func(t *testing.T) {
		n := s.configured(t)
		res, err := n.Attach(ctx, &pluginv1.AttachRequest{Vm: "conformance:net:vm", NetName: "mgmt", Bridge: s.Bridge, HostIf: "ptconf0", Mac: "02:AA:BB:CC:DD:EE"})
		if err != nil {
			t.Fatalf("Attach: %v", err)
		}
		if res.GetHostIf() != "ptconf0" || res.GetMac() != "02:aa:bb:cc:dd:ee" {
			t.Fatalf("Attach = %v; want ptconf0 with MAC 02:aa:bb:cc:dd:ee", res)
		}
		if err := n.Detach(ctx, "ptconf0"); err != nil {
			t.Fatalf("Detach: %v", err)
		}
		noLeaks(ctx, t, n)
	})

	t.Run("Refusals", func(t *testing.T) {
		n := s.configured(t)
		base := pluginv1.AttachRequest{Vm: "conformance:net:bad", NetName: "service0", Bridge: s.Bridge}
		cases := map[string]func(r *pluginv1.AttachRequest){
			"missing bridge": func(r *pluginv1.AttachRequest) { r.Bridge = "nosuchbr0" },
			"not a bridge":   func(r *pluginv1.AttachRequest) { r.Bridge = s.NotBridge },
			"no bridge":      func(r *pluginv1.AttachRequest) { r.Bridge = "" },
			"multicast MAC":  func(r *pluginv1.AttachRequest) { r.Mac = "01:00:5e:00:00:01" },
			"zero MAC":       func(r *pluginv1.AttachRequest) { r.Mac = "00:00:00:00:00:00" },
			"junk MAC":       func(r *pluginv1.AttachRequest) { r.Mac = "junk" },
			"bad name":       func(r *pluginv1.AttachRequest) { r.HostIf = "bad/name" },
			"long name":      func(r *pluginv1.AttachRequest) { r.HostIf = "abcdefghijklmnop" },
			"foreign name":   func(r *pluginv1.AttachRequest) { r.HostIf = s.NotBridge },
			"no VM":          func(r *pluginv1.AttachRequest) { r.Vm = "" },
		}
		for name, mutate := range cases {
			req := &pluginv1.AttachRequest{Vm: base.Vm, NetName: base.NetName, Bridge: base.Bridge}
			mutate(req)
			if res, err := n.Attach(ctx, req); !errors.Is(err, network.ErrInvalid) {
				t.Errorf("%s: Attach = %v, %v; want ErrInvalid", name, res, err)
			}
		}
		if err := n.Detach(ctx, s.NotBridge); !errors.Is(err, network.ErrInvalid) {
			t.Errorf("Detach(%s) = %v; want ErrInvalid", s.NotBridge, err)
		}
		if err := n.Detach(ctx, s.Bridge); !errors.Is(err, network.ErrInvalid) {
			t.Errorf("Detach(%s) = %v; want ErrInvalid", s.Bridge, err)
		}
		s.bridge(ctx, t, n)
		noLeaks(ctx, t, n)
	})

	t.Run("Reconcile", func(t *testing.T) {
		n := s.configured(t)
		var names []string
		for _, dev := range []string{"keep0", "orphan0"} {
			res, err := n.Attach(ctx, &pluginv1.AttachRequest{Vm: "conformance:net:rec", NetName: dev, Bridge: s.Bridge})
			if err != nil {
				t.Fatalf("Attach %s: %v", dev, err)
			}
			names = append(names, res.GetHostIf())
		}
		// A fresh plugin instance finds the other's interfaces.
		n2 := s.configured(t)
		removed, err := n2.Reconcile(ctx, names[:1])
		if err != nil || !slices.Equal(removed, names[1:]) {
			t.Fatalf("Reconcile = %v, %v; want %v removed", removed, err, names[1:])
		}
		if st, err := n2.Stats(ctx, names); err != nil || len(st) != 1 || st[0].GetHostIf() != names[0] {
			t.Fatalf("Stats after Reconcile = %v, %v; want only %s", st, err, names[0])
		}
		removed, err = n2.Reconcile(ctx, nil)
		if err != nil || !slices.Equal(removed, names[:1]) {
			t.Fatalf("Reconcile(nil) = %v, %v; want %v removed", removed, err, names[:1])
		}
	})

	t.Run("OtherInstances", func(t *testing.T) {
		// Two petreld instances on one host: the same VM device gets an
		// interface of each, and neither removes the other's, by
		// reconciliation or by detaching.
		mine, theirs := s.configured(t), s.configuredFor(t, otherInstance)
		req := &pluginv1.AttachRequest{Vm: "conformance:net:both", NetName: "service0", Bridge: s.Bridge}
		a, err := mine.Attach(ctx, req)
		if err != nil {
			t.Fatalf("Attach: %v", err)
		}
		b, err := theirs.Attach(ctx, req)
		if err != nil || b.GetHostIf() == a.GetHostIf() || b.GetMac() == a.GetMac() {
			t.Fatalf("Attach for another instance = %v, %v; want another interface and MAC than %v", b, err, a)
		}
		if removed, err := theirs.Reconcile(ctx, nil); err != nil || !slices.Equal(removed, []string{b.GetHostIf()}) {
			t.Fatalf("other instance's Reconcile = %v, %v; want only its own %s removed", removed, err, b.GetHostIf())
		}
		if err := theirs.Detach(ctx, a.GetHostIf()); !errors.Is(err, network.ErrInvalid) {
			t.Fatalf("other instance's Detach(%s) = %v; want ErrInvalid", a.GetHostIf(), err)
		}
		if st, err := mine.Stats(ctx, []string{a.GetHostIf()}); err != nil || len(st) != 1 {
			t.Fatalf("the interface of the first instance is gone: %v, %v", st, err)
		}
		if err := mine.Detach(ctx, a.GetHostIf()); err != nil {
			t.Fatalf("Detach: %v", err)
		}
		noLeaks(ctx, t, mine)
	})
}
