package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// proxy forwards each call to the hypervisor plugin's current process.
type proxy struct{ m *managed }

// exitGrace bounds how long a call whose connection failed waits for the
// plugin's process to exit, which tells a crash (the call is retried on
// the next process) from a connection problem (the error is returned).
const exitGrace = 2 * time.Second

// maxAttempts bounds how often one call is made on successive processes,
// so that a request that crashes its plugin every time is reported
// instead of crashing it forever.
const maxAttempts = 3

// as returns m's current process and its service as a T, waiting for a
// restarting plugin like every proxied call.
func as[T any](ctx context.Context, m *managed) (*generation, T, error) {
	var zero T
	g, err := m.current(ctx)
	if err != nil {
		return nil, zero, err
	}
	t, ok := g.svc.(T)
	if !ok {
		return nil, zero, fmt.Errorf("%w: plugin %s does not serve this service", hypervisor.ErrUnavailable, m.name)
	}
	return g, t, nil
}

// diedUnder reports whether err, from a call on g, means that g's process
// died under the call: the connection failed (or was closed as the crash
// was handled) and the process has exited, now or within exitGrace. The
// call can then be made again on the next process.
func diedUnder(ctx context.Context, g *generation, err error) bool {
	if ctx.Err() != nil || !(errors.Is(err, hypervisor.ErrUnreachable) || errors.Is(err, context.Canceled)) {
		return false
	}
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-g.exited:
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}

// call runs f on m's current process as a T. When that process dies under
// the call, f runs again on the next one (up to maxAttempts processes):
// every call proxied this way must be safe to repeat, as the plugin may
// have acted before it died. Hypervisor and network calls are (Start and
// Attach find and adopt what an interrupted attempt made).
func call[T, R any](ctx context.Context, m *managed, f func(T) (R, error)) (R, error) {
	for attempt := 1; ; attempt++ {
		g, t, err := as[T](ctx, m)
		if err != nil {
			var zero R
			return zero, err
		}
		r, err := f(t)
		if err == nil || attempt == maxAttempts || !diedUnder(ctx, g, err) {
			return r, err
		}
		m.host.opts.Logger.Debug("plugin died under a call; calling its successor", "plugin", m.name, "error", err)
	}
}

// do is call for methods that return only an error.
func do[T any](ctx context.Context, m *managed, f func(T) error) error {
	_, err := call(ctx, m, func(t T) (struct{}, error) { return struct{}{}, f(t) })
	return err
}

// once runs f on m's current process as a T without repeating it: for
// calls that must not be made twice.
func once[T any](ctx context.Context, m *managed, f func(T) error) error {
	_, t, err := as[T](ctx, m)
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

// Capabilities asks the plugin's current process once and answers from
// that afterwards (a copy each time): a plugin's capabilities do not
// change while its process lives, and a create needs them on its way to
// the start. A restarted plugin is asked again.
func (p *proxy) Capabilities(ctx context.Context) (*pluginv1.HypervisorCapabilities, error) {
	for attempt := 1; ; attempt++ {
		g, x, err := as[hypervisor.Hypervisor](ctx, p.m)
		if err != nil {
			return nil, err
		}
		g.capsMu.Lock()
		caps := g.caps
		g.capsMu.Unlock()
		if caps == nil {
			caps, err = x.Capabilities(ctx)
			if err != nil {
				if attempt == maxAttempts || !diedUnder(ctx, g, err) {
					return nil, err
				}
				continue
			}
			g.capsMu.Lock()
			g.caps = caps
			g.capsMu.Unlock()
		}
		return proto.Clone(caps).(*pluginv1.HypervisorCapabilities), nil
	}
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

// StatsBatch samples ids on the plugin's current process in one call
// (hypervisor.StatsBatch), repeated on the next process like Stats.
func (p *proxy) StatsBatch(ctx context.Context, ids []string) (map[string]*pluginv1.VMStats, error) {
	return call(ctx, p.m, func(x hypervisor.Hypervisor) (map[string]*pluginv1.VMStats, error) {
		return hypervisor.StatsBatch(ctx, x, ids)
	})
}

// Console is repeated on the next process only while no line has been
// delivered: a stream cut short later ends with its error, and the caller
// resumes it from the last line it has.
func (p *proxy) Console(ctx context.Context, req *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	for attempt := 1; ; attempt++ {
		g, x, err := as[hypervisor.Hypervisor](ctx, p.m)
		if err != nil {
			return err
		}
		delivered := false
		err = x.Console(ctx, req, func(l *pluginv1.ConsoleLine) error {
			delivered = true
			return fn(l)
		})
		if err == nil || delivered || attempt == maxAttempts || !diedUnder(ctx, g, err) {
			return err
		}
	}
}

// FollowConsoles opens a FollowConsoles stream on the plugin's current
// process; when that process goes, the stream fails and the caller opens
// another. A plugin served without the SDK's adapter, which cannot
// follow consoles together, gives errors.ErrUnsupported.
func (p *proxy) FollowConsoles(ctx context.Context) (hypervisor.ConsoleStream, error) {
	_, x, err := as[hypervisor.Hypervisor](ctx, p.m)
	if err != nil {
		return nil, err
	}
	f, ok := x.(hypervisor.ConsoleFollower)
	if !ok {
		return nil, fmt.Errorf("plugin %s: follow consoles: %w", p.m.name, errors.ErrUnsupported)
	}
	return f.FollowConsoles(ctx)
}
