package client

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// PluginList is petreld's plugin list as far as the caller may see it.
type PluginList struct {
	// Plugins are the plugins petreld reports. From a summary only their
	// names, kinds, health and (for backends) targets are set.
	Plugins []*daemonv1.Plugin
	// Summary is set when petreld keeps its full list (Plugins) to the
	// host's owner and the list is its health summary (PluginHealth):
	// no versions, paths, restarts, descriptions, attributes or problems,
	// and no plugin binaries that no block enables.
	Summary bool
}

// ListPlugins asks petreld for its plugins: the full list where the
// caller may read it (the host's owner, on petreld's own socket or with a
// certificate the root CA signed), else the health summary every
// authenticated caller may read, so that a delegate connected through
// petrel-endpoint still learns whether the host can run what it deploys.
// When petreld refuses the full list and is older than the summary, the
// refusal is the error.
func ListPlugins(ctx context.Context, api daemonv1.DaemonClient) (PluginList, error) {
	full, err := api.Plugins(ctx, &daemonv1.PluginsRequest{})
	if status.Code(err) != codes.PermissionDenied {
		return PluginList{Plugins: full.GetPlugins()}, err
	}
	return pluginSummary(ctx, api, err)
}

// ListPlugins is ListPlugins through c, which remembers that petreld
// refused it the full list: what a caller may read does not change while
// its connection lasts, so later calls ask for the summary alone, and a
// poller (the web console's overview) makes no refused call each time.
func (c *Client) ListPlugins(ctx context.Context) (PluginList, error) {
	if c.pluginsRefused.Load() {
		return pluginSummary(ctx, c.API, status.Error(codes.PermissionDenied, "the full plugin list is reserved to the host's owner"))
	}
	res, err := ListPlugins(ctx, c.API)
	if err == nil && res.Summary {
		c.pluginsRefused.Store(true)
	}
	return res, err
}

// pluginSummary asks for the health summary after petreld refused the
// full list with refusal, which is the error when petreld is older than
// the summary.
func pluginSummary(ctx context.Context, api daemonv1.DaemonClient, refusal error) (PluginList, error) {
	err := refusal
	summary, serr := api.PluginHealth(ctx, &daemonv1.PluginHealthRequest{})
	switch {
	case status.Code(serr) == codes.Unimplemented:
		return PluginList{}, err
	case serr != nil:
		// Keep the code, which says what kind of failure it is.
		return PluginList{}, status.Errorf(status.Code(serr), "plugin health summary: %s", status.Convert(serr).Message())
	}
	out := PluginList{Summary: true, Plugins: make([]*daemonv1.Plugin, 0, len(summary.GetPlugins()))}
	for _, e := range summary.GetPlugins() {
		out.Plugins = append(out.Plugins, &daemonv1.Plugin{Name: e.GetName(), Kind: e.GetKind(), Health: e.GetHealth(), Targets: e.GetTargets()})
	}
	return out, nil
}
