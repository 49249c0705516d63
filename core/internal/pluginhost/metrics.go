package pluginhost

import (
	"context"
	"fmt"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/metrics"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// MetricsKind launches metrics sinks.
var MetricsKind = Kind{Kind: pluginv1.Kind_KIND_METRICS, Service: petrelplugin.MetricsService, Sets: petrelplugin.MetricsPluginSets(nil)}

// Sink returns the restart-proof handle of metrics sink name: a write
// while the sink restarts waits for it briefly, then fails (the batch is
// then lost and counted by the caller), and writes resume once it is back.
func (h *Host) Sink(name string) (Writer, error) {
	m, ok := h.lookup(name, pluginv1.Kind_KIND_METRICS)
	if !ok {
		return nil, fmt.Errorf("%w: no metrics plugin %q is enabled on this host", hypervisor.ErrInvalid, name)
	}
	return &sinkProxy{m: m}, nil
}

// Writer is what petreld does with a sink.
type Writer interface {
	Write(ctx context.Context, b *pluginv1.Batch) error
}

type sinkProxy struct{ m *managed }

// Write is not repeated when the sink dies under it: the sink may have
// stored the batch already, and a lost batch is counted where a repeated
// one would go unnoticed.
func (p *sinkProxy) Write(ctx context.Context, b *pluginv1.Batch) error {
	return once(ctx, p.m, func(s metrics.Sink) error { return s.Write(ctx, b) })
}
