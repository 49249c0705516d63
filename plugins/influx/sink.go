package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	"github.com/petrel-vmm/petrel/sdk/plugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

// Backoff between attempts to reach a destination that failed: it starts
// small, so a brief outage costs little, and stops at about one default
// collection interval, so a recovered server gets data again promptly.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// sink is the InfluxDB metrics sink. One mutex serialises Configure,
// Write and Close: petreld writes one batch at a time anyway, and a TCP
// stream must not interleave two batches.
type sink struct {
	log hclog.Logger
	now func() time.Time

	mu  sync.Mutex
	cfg config
	out output // nil until configured and after Close
	// retryAt is when the destination may be contacted again after a
	// failure; until then Write fails at once with the last error.
	retryAt time.Time
	backoff time.Duration
	lastErr error
}

func newSink() *sink {
	return &sink{
		log: hclog.New(&hclog.LoggerOptions{Name: "influx", Output: os.Stderr, JSONFormat: true}),
		now: time.Now,
	}
}

// Info identifies the plugin.
func (s *sink) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_METRICS, Name: "influx", Version: version,
		ApiVersions: []uint32{plugin.ProtocolVersion}}, nil
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
	s.cfg, s.out = c, newOutput(c)
	s.retryAt, s.backoff, s.lastErr = time.Time{}, 0, nil
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
// After a failure the destination is left alone for a backoff period that
// doubles up to maxBackoff; Writes in that period fail at once, so a dead
// server costs petreld nothing but an error per interval.
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
	if now := s.now(); now.Before(s.retryAt) {
		return fmt.Errorf("influx: %s failed, next attempt in %s: %w", s.cfg.destination(), s.retryAt.Sub(now).Round(time.Millisecond), s.lastErr)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	if err := s.out.send(ctx, lines); err != nil {
		s.backoff = min(max(2*s.backoff, minBackoff), maxBackoff)
		s.retryAt, s.lastErr = s.now().Add(s.backoff), err
		return fmt.Errorf("influx: %w", err)
	}
	if s.lastErr != nil {
		s.log.Info("destination reachable again", "destination", s.cfg.destination())
	}
	s.retryAt, s.backoff, s.lastErr = time.Time{}, 0, nil
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
