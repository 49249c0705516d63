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

// as returns m's current process as a T, waiting for a restarting
// plugin like every proxied call.
func as[T any](ctx context.Context, m *managed) (T, error) {
	var zero T
	c, err := m.current(ctx)
	if err != nil {
		return zero, err
	}
	t, ok := c.(T)
	if !ok {
		return zero, fmt.Errorf("%w: plugin %s does not serve this service", hypervisor.ErrUnavailable, m.name)
	}
	return t, nil
}

// call runs f on m's current process as a T.
func call[T, R any](ctx context.Context, m *managed, f func(T) (R, error)) (R, error) {
	t, err := as[T](ctx, m)
	if err != nil {
		var zero R
		return zero, err
	}
	return f(t)
}

// do is call for methods that return only an error.
func do[T any](ctx context.Context, m *managed, f func(T) error) error {
	t, err := as[T](ctx, m)
	if err != nil {
		return err
	}
	return f(t)
}

func (p *proxy) Info(ctx context.Context) (*pluginv1.PluginInfo, error) {
	return call(ctx, p.m, func(x hypervisor.Hypervisor) (*pluginv1.PluginInfo, error) { return x.Info(ctx) })
}

func (p *proxy) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error {
	return do(ctx, p.m, func(x hypervisor.Hypervisor) error { return x.Configure(ctx, req) })
}

func (p *proxy) Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error) {
	return call(ctx, p.m, func(x hypervisor.Hypervisor) (*pluginv1.FingerprintResponse, error) { return x.Fingerprint(ctx) })
}

func (p *proxy) Capabilities(ctx context.Context) (*pluginv1.HypervisorCapabilities, error) {
	return call(ctx, p.m, func(x hypervisor.Hypervisor) (*pluginv1.HypervisorCapabilities, error) { return x.Capabilities(ctx) })
}

func (p *proxy) Validate(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.ValidateResponse, error) {
	return call(ctx, p.m, func(x hypervisor.Hypervisor) (*pluginv1.ValidateResponse, error) { return x.Validate(ctx, spec) })
}

func (p *proxy) Start(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.Handle, error) {
	return call(ctx, p.m, func(x hypervisor.Hypervisor) (*pluginv1.Handle, error) { return x.Start(ctx, spec) })
}

func (p *proxy) Recover(ctx context.Context, h *pluginv1.Handle) (*pluginv1.RecoverResponse, error) {
	return call(ctx, p.m, func(x hypervisor.Hypervisor) (*pluginv1.RecoverResponse, error) { return x.Recover(ctx, h) })
}

func (p *proxy) Wait(ctx context.Context, id string) (*pluginv1.ExitStatus, error) {
	return call(ctx, p.m, func(x hypervisor.Hypervisor) (*pluginv1.ExitStatus, error) { return x.Wait(ctx, id) })
}

func (p *proxy) Stop(ctx context.Context, id string, timeout time.Duration) error {
	return do(ctx, p.m, func(x hypervisor.Hypervisor) error { return x.Stop(ctx, id, timeout) })
}

func (p *proxy) Destroy(ctx context.Context, id string) error {
	return do(ctx, p.m, func(x hypervisor.Hypervisor) error { return x.Destroy(ctx, id) })
}

func (p *proxy) Stats(ctx context.Context, id string) (*pluginv1.VMStats, error) {
	return call(ctx, p.m, func(x hypervisor.Hypervisor) (*pluginv1.VMStats, error) { return x.Stats(ctx, id) })
}

func (p *proxy) Console(ctx context.Context, req *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	return do(ctx, p.m, func(x hypervisor.Hypervisor) error { return x.Console(ctx, req, fn) })
}
