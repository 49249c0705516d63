package network

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/hashicorp/go-plugin"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// fake answers every call from fixed values or fails with err.
type fake struct {
	err     error
	gotKeep []string
	gotIfs  []string
	gotIf   string
	gotReq  *pluginv1.AttachRequest
}

func (f *fake) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_NETWORK, Name: "fake"}, f.err
}
func (f *fake) Configure(context.Context, *pluginv1.ConfigureRequest) error { return f.err }
func (f *fake) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY}, f.err
}
func (f *fake) Attach(_ context.Context, req *pluginv1.AttachRequest) (*pluginv1.AttachResponse, error) {
	f.gotReq = req
	if f.err != nil {
		return nil, f.err
	}
	return &pluginv1.AttachResponse{HostIf: "pt0", Mac: req.GetMac(), Mtu: 1400, Bridge: req.GetBridge()}, nil
}
func (f *fake) Detach(_ context.Context, hostIf string) error { f.gotIf = hostIf; return f.err }
func (f *fake) Reconcile(_ context.Context, keep []string) ([]string, error) {
	f.gotKeep = keep
	return []string{"pt1"}, f.err
}
func (f *fake) Stats(_ context.Context, hostIfs []string) ([]*pluginv1.InterfaceStats, error) {
	f.gotIfs = hostIfs
	return []*pluginv1.InterfaceStats{{HostIf: "pt0", RxBytes: 7, TxDropped: 3}}, f.err
}
func (f *fake) Bridges(context.Context) ([]*pluginv1.Bridge, error) {
	return []*pluginv1.Bridge{{Name: "br0", Members: []string{"pt0"}}}, f.err
}

func serve(t *testing.T, impl Network) Network {
	t.Helper()
	client, _ := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{"network": NewGRPCPlugin(impl)})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense("network")
	if err != nil {
		t.Fatal(err)
	}
	return raw.(Network)
}

func TestGRPCForwards(t *testing.T) {
	f := &fake{}
	n := serve(t, f)
	ctx := context.Background()
	if info, err := n.Info(ctx); err != nil || info.GetName() != "fake" {
		t.Fatalf("Info = %v, %v", info, err)
	}
	if fp, err := n.Fingerprint(ctx); err != nil || fp.GetHealth() != pluginv1.Health_HEALTH_HEALTHY {
		t.Fatalf("Fingerprint = %v, %v", fp, err)
	}
	if err := n.Configure(ctx, &pluginv1.ConfigureRequest{}); err != nil {
		t.Fatal(err)
	}
	res, err := n.Attach(ctx, &pluginv1.AttachRequest{Vm: "a:b", NetName: "n", Bridge: "br0", Mac: "02:00:00:00:00:01"})
	if err != nil || res.GetHostIf() != "pt0" || res.GetMtu() != 1400 || f.gotReq.GetVm() != "a:b" {
		t.Fatalf("Attach = %v, %v (plugin saw %v)", res, err, f.gotReq)
	}
	if err := n.Detach(ctx, "pt0"); err != nil || f.gotIf != "pt0" {
		t.Fatalf("Detach = %v (plugin saw %q)", err, f.gotIf)
	}
	if removed, err := n.Reconcile(ctx, []string{"pt0"}); err != nil || !slices.Equal(removed, []string{"pt1"}) || !slices.Equal(f.gotKeep, []string{"pt0"}) {
		t.Fatalf("Reconcile = %v, %v (plugin saw %v)", removed, err, f.gotKeep)
	}
	if st, err := n.Stats(ctx, []string{"pt0", "pt9"}); err != nil || len(st) != 1 || st[0].GetRxBytes() != 7 || st[0].GetTxDropped() != 3 || len(f.gotIfs) != 2 {
		t.Fatalf("Stats = %v, %v", st, err)
	}
	if bs, err := n.Bridges(ctx); err != nil || len(bs) != 1 || bs[0].GetMembers()[0] != "pt0" {
		t.Fatalf("Bridges = %v, %v", bs, err)
	}
}

func TestGRPCErrorClasses(t *testing.T) {
	ctx := context.Background()
	for _, class := range []error{ErrInvalid, ErrUnavailable, context.Canceled, context.DeadlineExceeded} {
		err := fmt.Errorf("attach: bridge br0 does not exist: %w", class)
		n := serve(t, &fake{err: err})
		_, got := n.Attach(ctx, &pluginv1.AttachRequest{})
		if !errors.Is(got, class) || got.Error() != err.Error() {
			t.Errorf("%v came back as %v", err, got)
		}
		if got := n.Detach(ctx, "x"); !errors.Is(got, class) {
			t.Errorf("Detach: %v came back as %v", err, got)
		}
	}
	n := serve(t, &fake{err: errors.New("netlink: boom")})
	_, got := n.Reconcile(ctx, nil)
	if got == nil || got.Error() != "netlink: boom" || errors.Is(got, ErrInvalid) || errors.Is(got, ErrUnavailable) {
		t.Errorf("unclassified error came back as %v", got)
	}
}

func TestGRPCPluginNeedsImpl(t *testing.T) {
	if err := (&GRPCPlugin{}).GRPCServer(nil, nil); err == nil {
		t.Fatal("GRPCServer without an implementation succeeded")
	}
}
