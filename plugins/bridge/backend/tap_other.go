//go:build !linux && !freebsd

package backend

import (
	"context"
	"fmt"
	"runtime"

	"github.com/petrel-vmm/petrel/sdk/network"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Plugin stands in for the bridge plugin on systems it does not support,
// so that the binary builds everywhere and says why it cannot work.
type Plugin struct {
	version string
}

// New returns the plugin. version is reported by Info.
func New(version string) *Plugin { return &Plugin{version: version} }

// Close releases nothing.
func (p *Plugin) Close() error { return nil }

// errUnsupported explains every refusal.
var errUnsupported = fmt.Errorf("%w: the bridge plugin supports Linux and FreeBSD, not %s", network.ErrUnavailable, runtime.GOOS)

// Info identifies the plugin.
func (p *Plugin) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return info(p.version), nil
}

// Configure checks the settings so that configuration mistakes are still
// reported.
func (p *Plugin) Configure(_ context.Context, req *pluginv1.ConfigureRequest) error {
	_, err := parseSettings(req.GetSettings())
	return err
}

// Fingerprint reports the plugin unhealthy.
func (p *Plugin) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_UNHEALTHY, Description: errUnsupported.Error()}, nil
}

// Attach always fails with ErrUnavailable.
func (p *Plugin) Attach(context.Context, *pluginv1.AttachRequest) (*pluginv1.AttachResponse, error) {
	return nil, errUnsupported
}

// Detach always fails with ErrUnavailable.
func (p *Plugin) Detach(context.Context, string) error { return errUnsupported }

// Reconcile has nothing to remove.
func (p *Plugin) Reconcile(context.Context, []string) ([]string, error) { return nil, nil }

// Stats always fails with ErrUnavailable.
func (p *Plugin) Stats(context.Context, []string) ([]*pluginv1.InterfaceStats, error) {
	return nil, errUnsupported
}

// Bridges always fails with ErrUnavailable.
func (p *Plugin) Bridges(context.Context) ([]*pluginv1.Bridge, error) {
	return nil, errUnsupported
}
