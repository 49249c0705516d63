package buffer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// countingSink fails with ErrUnavailable while fail is set and counts
// the writes that reach it.
type countingSink struct {
	fail     bool
	requests int
}

func (c *countingSink) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Name: "counting"}, nil
}
func (c *countingSink) Configure(context.Context, *pluginv1.ConfigureRequest) error { return nil }
func (c *countingSink) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY}, nil
}
func (c *countingSink) Close(context.Context) error { return nil }
func (c *countingSink) Write(context.Context, *pluginv1.Batch) error {
	c.requests++
	if c.fail {
		return fmt.Errorf("503 overloaded: %w", metrics.ErrUnavailable)
	}
	return nil
}

// TestBackoff: a failing destination is left alone for a doubling
// period, capped, and success resets it. Without a buffer, the writes in
// the period fail at once.
func TestBackoff(t *testing.T) {
	inner := &countingSink{fail: true}
	clock := time.Unix(1000, 0)
	s := Wrap(inner, Options{Logger: hclog.New(&hclog.LoggerOptions{Output: io.Discard}), Now: func() time.Time { return clock }}).(*sink)
	ctx := context.Background()
	if err := s.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{SettingMB: "0"}}); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	write := func() error { return s.Write(ctx, sdktest.SampleBatch(clock)) }
	if err := write(); !errors.Is(err, metrics.ErrUnavailable) {
		t.Fatalf("first write = %v; want ErrUnavailable", err)
	}
	if err := write(); !errors.Is(err, metrics.ErrUnavailable) || inner.requests != 1 {
		t.Fatalf("write during backoff = %v after %d requests; want a fast ErrUnavailable", err, inner.requests)
	}
	clock = clock.Add(minBackoff)
	write()
	if inner.requests != 2 || s.backoff != 2*minBackoff {
		t.Fatalf("after the first backoff: %d requests, backoff %s", inner.requests, s.backoff)
	}
	for range 10 {
		clock = clock.Add(s.backoff)
		write()
	}
	if s.backoff != maxBackoff {
		t.Fatalf("backoff %s; want it capped at %s", s.backoff, maxBackoff)
	}
	inner.fail = false
	clock = clock.Add(s.backoff)
	if err := write(); err != nil || s.backoff != 0 {
		t.Fatalf("write after recovery = %v, backoff %s", err, s.backoff)
	}
}
