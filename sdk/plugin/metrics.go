package plugin

import (
	"os"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/petrel-vmm/petrel/sdk/metrics"
)

// MetricsService is the dispense name of the metrics sink service.
const MetricsService = "metrics"

// MetricsPluginSets maps each supported protocol version to the plugins a
// metrics sink binary serves under it. impl is nil on petreld's side.
func MetricsPluginSets(impl metrics.Sink) map[int]goplugin.PluginSet {
	sets := map[int]goplugin.PluginSet{}
	for v := OldestProtocolVersion; v <= ProtocolVersion; v++ {
		sets[v] = goplugin.PluginSet{MetricsService: &metrics.GRPCPlugin{Impl: impl}}
	}
	return sets
}

// ServeMetrics serves a metrics sink and never returns normally. It is the
// whole body of a sink's main function, for Petrel's own sinks and
// third-party ones alike. The plugin exits when petreld dies, so no sink
// keeps a listener or connection open on its own.
func ServeMetrics(impl metrics.Sink) {
	startPlugin()
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: MetricsPluginSets(impl),
		GRPCServer:       goplugin.DefaultGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Level:      hclog.Info,
			Output:     os.Stderr,
			JSONFormat: true,
		}),
	})
}
