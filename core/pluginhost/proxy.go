package pluginhost

import (
	"context"
	"fmt"
	"time"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// proxy forwards each call to the hypervisor plugin's current process.
type proxy struct{ m *managed }

// hv returns the current process as a Hypervisor.
func (p *proxy) current(ctx context.Context) (hypervisor.Hypervisor, error) {
	c, err := p.m.current(ctx)
	if err != nil {
		return nil, err
	}
	hv, ok := c.(hypervisor.Hypervisor)
	if !ok {
		return nil, fmt.Errorf("%w: plugin %s is not a hypervisor", hypervisor.ErrUnavailable, p.m.name)
	}
	return hv, nil
}

func (p *proxy) Info(ctx context.Context) (*pluginv1.PluginInfo, error) {
	hv, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return hv.Info(ctx)
}

func (p *proxy) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error {
	hv, err := p.current(ctx)
	if err != nil {
		return err
	}
	return hv.Configure(ctx, req)
}

func (p *proxy) Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error) {
	hv, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return hv.Fingerprint(ctx)
}

func (p *proxy) Capabilities(ctx context.Context) (*pluginv1.HypervisorCapabilities, error) {
	hv, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return hv.Capabilities(ctx)
}

func (p *proxy) Validate(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.ValidateResponse, error) {
	hv, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return hv.Validate(ctx, spec)
}

func (p *proxy) Start(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.Handle, error) {
	hv, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return hv.Start(ctx, spec)
}

func (p *proxy) Recover(ctx context.Context, h *pluginv1.Handle) (*pluginv1.RecoverResponse, error) {
	hv, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return hv.Recover(ctx, h)
}

func (p *proxy) Wait(ctx context.Context, id string) (*pluginv1.ExitStatus, error) {
	hv, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return hv.Wait(ctx, id)
}

func (p *proxy) Stop(ctx context.Context, id string, timeout time.Duration) error {
	hv, err := p.current(ctx)
	if err != nil {
		return err
	}
	return hv.Stop(ctx, id, timeout)
}

func (p *proxy) Destroy(ctx context.Context, id string) error {
	hv, err := p.current(ctx)
	if err != nil {
		return err
	}
	return hv.Destroy(ctx, id)
}

func (p *proxy) Stats(ctx context.Context, id string) (*pluginv1.VMStats, error) {
	hv, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return hv.Stats(ctx, id)
}

func (p *proxy) Console(ctx context.Context, req *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	hv, err := p.current(ctx)
	if err != nil {
		return err
	}
	return hv.Console(ctx, req, fn)
}
