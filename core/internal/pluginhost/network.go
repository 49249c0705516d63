package pluginhost

import (
	"context"
	"fmt"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/network"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// NetworkKind launches network plugins.
var NetworkKind = Kind{Kind: pluginv1.Kind_KIND_NETWORK, Service: petrelplugin.NetworkService, Sets: petrelplugin.NetworkPluginSets(nil)}

// Network returns the restart-proof handle of network plugin name.
func (h *Host) Network(name string) (network.Network, error) {
	m, ok := h.lookup(name, pluginv1.Kind_KIND_NETWORK)
	if !ok {
		return nil, fmt.Errorf("%w: no network plugin %q is enabled on this host", hypervisor.ErrInvalid, name)
	}
	return &netProxy{m: m}, nil
}

// netProxy forwards each call to the network plugin's current process.
type netProxy struct{ m *managed }

func (p *netProxy) Info(ctx context.Context) (*pluginv1.PluginInfo, error) {
	return call(ctx, p.m, func(x network.Network) (*pluginv1.PluginInfo, error) { return x.Info(ctx) })
}

func (p *netProxy) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error {
	return do(ctx, p.m, func(x network.Network) error { return x.Configure(ctx, req) })
}

func (p *netProxy) Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error) {
	return call(ctx, p.m, func(x network.Network) (*pluginv1.FingerprintResponse, error) { return x.Fingerprint(ctx) })
}

func (p *netProxy) Attach(ctx context.Context, req *pluginv1.AttachRequest) (*pluginv1.AttachResponse, error) {
	return call(ctx, p.m, func(x network.Network) (*pluginv1.AttachResponse, error) { return x.Attach(ctx, req) })
}

func (p *netProxy) Detach(ctx context.Context, hostIf string) error {
	return do(ctx, p.m, func(x network.Network) error { return x.Detach(ctx, hostIf) })
}

func (p *netProxy) Reconcile(ctx context.Context, keep []string) ([]string, error) {
	return call(ctx, p.m, func(x network.Network) ([]string, error) { return x.Reconcile(ctx, keep) })
}

func (p *netProxy) Stats(ctx context.Context, hostIfs []string) ([]*pluginv1.InterfaceStats, error) {
	return call(ctx, p.m, func(x network.Network) ([]*pluginv1.InterfaceStats, error) { return x.Stats(ctx, hostIfs) })
}

func (p *netProxy) Bridges(ctx context.Context) ([]*pluginv1.Bridge, error) {
	return call(ctx, p.m, func(x network.Network) ([]*pluginv1.Bridge, error) { return x.Bridges(ctx) })
}
