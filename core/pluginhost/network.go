package pluginhost

import (
	"context"
	"fmt"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/network"
	"github.com/petrel-vmm/petrel/sdk/plugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// NetworkKind launches network plugins.
var NetworkKind = Kind{Kind: pluginv1.Kind_KIND_NETWORK, Service: plugin.NetworkService, Sets: plugin.NetworkPluginSets(nil)}

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

func (p *netProxy) current(ctx context.Context) (network.Network, error) {
	c, err := p.m.current(ctx)
	if err != nil {
		return nil, err
	}
	n, ok := c.(network.Network)
	if !ok {
		return nil, fmt.Errorf("%w: plugin %s is not a network plugin", hypervisor.ErrUnavailable, p.m.name)
	}
	return n, nil
}

func (p *netProxy) Info(ctx context.Context) (*pluginv1.PluginInfo, error) {
	n, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return n.Info(ctx)
}

func (p *netProxy) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error {
	n, err := p.current(ctx)
	if err != nil {
		return err
	}
	return n.Configure(ctx, req)
}

func (p *netProxy) Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error) {
	n, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return n.Fingerprint(ctx)
}

func (p *netProxy) Attach(ctx context.Context, req *pluginv1.AttachRequest) (*pluginv1.AttachResponse, error) {
	n, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return n.Attach(ctx, req)
}

func (p *netProxy) Detach(ctx context.Context, hostIf string) error {
	n, err := p.current(ctx)
	if err != nil {
		return err
	}
	return n.Detach(ctx, hostIf)
}

func (p *netProxy) Reconcile(ctx context.Context, keep []string) ([]string, error) {
	n, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return n.Reconcile(ctx, keep)
}

func (p *netProxy) Stats(ctx context.Context, hostIfs []string) ([]*pluginv1.InterfaceStats, error) {
	n, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return n.Stats(ctx, hostIfs)
}

func (p *netProxy) Bridges(ctx context.Context) ([]*pluginv1.Bridge, error) {
	n, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return n.Bridges(ctx)
}
