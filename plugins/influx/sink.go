package main

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	"github.com/petrel-vmm/petrel/sdk/metrics/buffer"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

// sink is the InfluxDB metrics sink. It delivers each batch before Write
// returns; newPlugin wraps it in the SDK's buffer, which keeps the
// batches a down server cannot take and paces the retries. One mutex
// serialises Configure, Write and Close: petreld writes one batch at a
// time anyway, and a TCP stream must not interleave two batches.
type sink struct {
	log hclog.Logger

	mu  sync.Mutex
	cfg config
	out output // nil until configured and after Close
}

func newSink() *sink {
	return &sink{log: hclog.New(&hclog.LoggerOptions{Name: "influx", Output: os.Stderr, JSONFormat: true})}
}

// newPlugin is the sink as petreld runs it: buffered, so that batches
// survive an outage of InfluxDB and restarts during one.
func newPlugin() metrics.Sink {
	s := newSink()
	return buffer.Wrap(s, buffer.Options{Logger: s.log})
}

// Info identifies the plugin.
func (s *sink) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_METRICS, Name: "influx", Version: version,
		ApiVersions: []uint32{petrelplugin.ProtocolVersion}}, nil
}

// Configure validates the settings and replaces the output. It does not
// contact the destination: InfluxDB being down at petreld's start is a
// condition Write reports and recovers from, not a configuration error.
func (s *sink) Configure(_ context.Context, req *pluginv1.ConfigureRequest) error {
	c, err := parseConfig(req.GetSettings())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out != nil {
		s.out.close()
	}
	s.cfg, s.out = c, newOutput(c, s.log)
	return nil
}

// Fingerprint reports whether the destination answers right now.
func (s *sink) Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error) {
	s.mu.Lock()
	out, timeout := s.out, s.cfg.timeout
	s.mu.Unlock()
	if out == nil {
		return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_UNHEALTHY, Description: "not configured"}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	desc, attrs, err := out.probe(ctx)
	if err != nil {
		return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_DEGRADED, Description: err.Error(), Attributes: attrs}, nil
	}
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY, Description: desc, Attributes: attrs}, nil
}

// Write encodes the batch and sends it, within the configured timeout.
// A destination that cannot take it now fails with ErrUnavailable, which
// the buffer answers by keeping the batch.
func (s *sink) Write(ctx context.Context, batch *pluginv1.Batch) error {
	if batch == nil {
		return fmt.Errorf("influx: nil batch: %w", metrics.ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return fmt.Errorf("influx: write: %w", metrics.ErrNotConfigured)
	}
	lines, skipped, encErr := encode(metrics.Points(batch), s.cfg.precision)
	if skipped > 0 {
		s.log.Warn("points left out of the batch", "count", skipped, "first_error", encErr)
	}
	if len(lines) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	if err := s.out.send(ctx, lines); err != nil {
		return fmt.Errorf("influx: %w", err)
	}
	return nil
}

// Close releases the connection; the sink needs Configure again to write.
func (s *sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return nil
	}
	err := s.out.close()
	s.out = nil
	if err != nil {
		return fmt.Errorf("influx: close %s: %w", s.cfg.destination(), err)
	}
	return nil
}
