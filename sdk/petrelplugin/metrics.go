package petrelplugin

import (
	"github.com/hashicorp/go-plugin"

	"github.com/petrel-vmm/petrel/sdk/metrics"
)

// MetricsService is the dispense name of the metrics sink service.
const MetricsService = "metrics"

// MetricsPluginSets maps each supported protocol version to the plugins a
// metrics sink binary serves under it. impl is nil on petreld's side.
func MetricsPluginSets(impl metrics.Sink) map[int]plugin.PluginSet {
	return pluginSets(MetricsService, metrics.NewGRPCPlugin(impl))
}

// ServeMetrics serves a metrics sink and never returns normally. It is the
// whole body of a sink's main function, for Petrel's own sinks and
// third-party ones alike. The plugin exits when petreld dies, so no sink
// keeps a listener or connection open on its own.
func ServeMetrics(impl metrics.Sink) {
	printVersion(impl)
	serve(MetricsPluginSets(impl))
}
