package buffer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	"github.com/petrel-vmm/petrel/sdk/metrics/buffer"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// destination is a sink whose destination can be taken down, and which
// records what it received, in order.
type destination struct {
	mu       sync.Mutex
	down     bool
	refuse   map[int64]bool // batch times refused for good
	settings map[string]string
	got      []*pluginv1.Batch
	closed   bool
}

func (d *destination) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_METRICS, Name: "dest", Version: "1", ApiVersions: []uint32{petrelplugin.ProtocolVersion}}, nil
}

func (d *destination) Configure(_ context.Context, req *pluginv1.ConfigureRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if req.GetSettings()["bad"] != "" {
		return fmt.Errorf("dest: bad setting: %w", metrics.ErrInvalid)
	}
	d.settings, d.closed = req.GetSettings(), false
	return nil
}

func (d *destination) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY, Description: "dest", Attributes: map[string]string{"dest": "yes"}}, nil
}

func (d *destination) Write(_ context.Context, b *pluginv1.Batch) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return metrics.ErrNotConfigured
	case d.down:
		return fmt.Errorf("dest: connection refused: %w", metrics.ErrUnavailable)
	case d.refuse[b.GetTimeNs()]:
		return errors.New("dest: 400 bad request")
	}
	d.got = append(d.got, b)
	return nil
}

func (d *destination) Close(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *destination) setDown(down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = down
}

func (d *destination) times() []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int64
	for _, b := range d.got {
		out = append(out, b.GetTimeNs())
	}
	return out
}

func (d *destination) batches() []*pluginv1.Batch {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*pluginv1.Batch(nil), d.got...)
}

var quiet = buffer.Options{Logger: hclog.New(&hclog.LoggerOptions{Output: io.Discard})}

// wrapped serves a buffered destination through gRPC, as petreld sees it.
func wrapped(t *testing.T, d *destination, stateDir string, settings map[string]string) metrics.Sink {
	t.Helper()
	sk := sdktest.ServeMetrics(t, buffer.Wrap(d, quiet))
	if err := sk.Configure(context.Background(), &pluginv1.ConfigureRequest{Settings: settings, StateDir: stateDir}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return sk
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fingerprint(t *testing.T, sk metrics.Sink) *pluginv1.FingerprintResponse {
	t.Helper()
	fp, err := sk.Fingerprint(context.Background())
	if err != nil {
		t.Fatalf("Fingerprint: %v", err)
	}
	return fp
}

// write sends n batches, one time apart, and returns their times.
func write(t *testing.T, sk metrics.Sink, start time.Time, n int) []int64 {
	t.Helper()
	var out []int64
	for i := range n {
		b := sdktest.SampleBatch(start.Add(time.Duration(i) * time.Millisecond))
		b.Sink = &pluginv1.SinkSample{Name: "dest"}
		if err := sk.Write(context.Background(), b); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
		out = append(out, b.GetTimeNs())
	}
	return out
}

func sameTimes(a, b []int64) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// TestWrapOutage: while the destination is down, writes succeed and
// batches wait; health says so, with the error; once it is back, every
// batch arrives, in order, each saying how many waited before it.
func TestWrapOutage(t *testing.T) {
	d := &destination{}
	sk := wrapped(t, d, t.TempDir(), map[string]string{"keep": "me", "buffer_mb": "8", "buffer_max_age": "1h"})
	if d.settings["keep"] != "me" || len(d.settings) != 1 {
		t.Fatalf("destination got settings %v; want the buffer's taken out", d.settings)
	}
	start := time.Now()
	want := write(t, sk, start, 3)
	if got := d.times(); !sameTimes(got, want) {
		t.Fatalf("delivered %v; want %v at once", got, want)
	}
	if fp := fingerprint(t, sk); fp.GetHealth() != pluginv1.Health_HEALTH_HEALTHY || fp.GetAttributes()["dest"] != "yes" ||
		fp.GetAttributes()["buffer.queued_batches"] != "0" || fp.GetAttributes()["buffer.max_age"] != "1h0m0s" ||
		fp.GetAttributes()["buffer.max_bytes"] != fmt.Sprint(8<<20) {
		t.Fatalf("healthy fingerprint %v", fp)
	}

	d.setDown(true)
	want = append(want, write(t, sk, start.Add(time.Second), 5)...)
	fp := fingerprint(t, sk)
	if fp.GetHealth() != pluginv1.Health_HEALTH_DEGRADED || !strings.Contains(fp.GetDescription(), "connection refused") ||
		fp.GetAttributes()["buffer.queued_batches"] != "5" || fp.GetAttributes()["last_error"] == "" {
		t.Fatalf("fingerprint during the outage %v", fp)
	}
	t.Logf("during the outage: %s", fp.GetDescription())

	d.setDown(false)
	waitUntil(t, "the kept batches", func() bool { return len(d.times()) == len(want) })
	if got := d.times(); !sameTimes(got, want) {
		t.Fatalf("delivered %v; want %v", got, want)
	}
	for i, b := range d.batches()[3:] {
		if b.GetSink().GetQueuedBatches() != uint64(i) || b.GetSink().GetName() != "dest" {
			t.Fatalf("batch %d of the outage says %v; want %d queued before it", i, b.GetSink(), i)
		}
	}
	if fp := fingerprint(t, sk); fp.GetHealth() != pluginv1.Health_HEALTH_HEALTHY {
		t.Fatalf("fingerprint after the outage %v", fp)
	}
	// And directly again afterwards.
	more := write(t, sk, start.Add(2*time.Second), 1)
	if got := d.times(); got[len(got)-1] != more[0] {
		t.Fatalf("write after the outage not delivered at once: %v", got)
	}
}

// TestWrapRestartDuringOutage: the plugin (here the wrapper) stops while
// the destination is down; the next one, with the same state directory,
// delivers what the first kept, before anything new.
func TestWrapRestartDuringOutage(t *testing.T) {
	state := t.TempDir()
	d := &destination{down: true}
	start := time.Now()
	first := buffer.Wrap(d, quiet)
	ctx := context.Background()
	if err := first.Configure(ctx, &pluginv1.ConfigureRequest{StateDir: state}); err != nil {
		t.Fatal(err)
	}
	want := write(t, first, start, 4)
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(state, buffer.Subdir, "*.batch")); len(files) != 4 {
		t.Fatalf("files kept on disk: %v", files)
	}

	second := wrapped(t, d, state, nil)
	want = append(want, write(t, second, start.Add(time.Second), 2)...)
	d.setDown(false)
	waitUntil(t, "the kept batches", func() bool { return len(d.times()) == len(want) })
	if got := d.times(); !sameTimes(got, want) {
		t.Fatalf("delivered %v; want %v", got, want)
	}
}

// TestWrapBounds: beyond buffer_mb the oldest batches are dropped; the
// count reaches the destination in the batches and health is unhealthy
// while data is being lost.
func TestWrapBounds(t *testing.T) {
	d := &destination{down: true}
	sk := wrapped(t, d, t.TempDir(), map[string]string{"buffer_mb": "1"})
	times := write(t, sk, time.Now(), 260) // 256 fit, in 4 KiB blocks
	fp := fingerprint(t, sk)
	if fp.GetHealth() != pluginv1.Health_HEALTH_UNHEALTHY || fp.GetAttributes()["buffer.dropped_batches"] != "4" ||
		fp.GetAttributes()["buffer.queued_batches"] != "256" || !strings.Contains(fp.GetDescription(), "4 lost") {
		t.Fatalf("fingerprint with a full buffer %v", fp)
	}
	d.setDown(false)
	waitUntil(t, "the kept batches", func() bool { return len(d.times()) == 256 })
	if got := d.times(); !sameTimes(got, times[4:]) {
		t.Fatalf("kept %d batches, first %v; want the newest 256", len(got), got[0])
	}
	// The figures are those the batch found as it arrived: a full buffer,
	// and the drops before its own arrival made room for it.
	if last := d.batches()[255]; last.GetSink().GetBufferDroppedBatches() != 3 || last.GetSink().GetQueuedBatches() != 256 ||
		last.GetSink().GetQueuedBytes() != 1<<20 {
		t.Fatalf("last batch of the outage says %v", last.GetSink())
	}
}

// TestWrapRefusedBatch: a batch the destination refuses for good is
// returned to petreld when it comes directly, and dropped (counted) when
// it comes from the buffer, without holding up the ones after it.
func TestWrapRefusedBatch(t *testing.T) {
	start := time.Now()
	bad := start.Add(time.Millisecond).UnixNano()
	d := &destination{refuse: map[int64]bool{bad: true}}
	sk := wrapped(t, d, "", nil)
	b := sdktest.SampleBatch(time.Unix(0, bad))
	if err := sk.Write(context.Background(), b); err == nil || errors.Is(err, metrics.ErrUnavailable) {
		t.Fatalf("refused Write = %v; want the destination's error", err)
	}
	d.setDown(true)
	times := write(t, sk, start, 3)
	d.setDown(false)
	waitUntil(t, "the kept batches", func() bool { return len(d.times()) == 2 })
	if got := d.times(); !sameTimes(got, []int64{times[0], times[2]}) {
		t.Fatalf("delivered %v", got)
	}
	if fp := fingerprint(t, sk); fp.GetAttributes()["buffer.dropped_batches"] != "1" || fp.GetAttributes()["buffer.dir"] != "(memory)" {
		t.Fatalf("fingerprint %v", fp)
	}
}

// TestWrapWithoutBuffer: buffer_mb = "0" reports failures to petreld,
// which counts them, and health is unhealthy: data is lost.
func TestWrapWithoutBuffer(t *testing.T) {
	d := &destination{down: true}
	state := t.TempDir()
	sk := wrapped(t, d, state, map[string]string{"buffer_mb": "0"})
	b := sdktest.SampleBatch(time.Now())
	if err := sk.Write(context.Background(), b); !errors.Is(err, metrics.ErrUnavailable) {
		t.Fatalf("Write = %v; want ErrUnavailable", err)
	}
	// Within the back-off, without asking the destination.
	if err := sk.Write(context.Background(), b); !errors.Is(err, metrics.ErrUnavailable) || !strings.Contains(err.Error(), "next attempt") {
		t.Fatalf("second Write = %v", err)
	}
	fp := fingerprint(t, sk)
	if fp.GetHealth() != pluginv1.Health_HEALTH_UNHEALTHY || !strings.Contains(fp.GetDescription(), "no buffer") {
		t.Fatalf("fingerprint %v", fp)
	}
	if files, _ := filepath.Glob(filepath.Join(state, buffer.Subdir, "*")); len(files) != 0 {
		t.Fatalf("files without a buffer: %v", files)
	}
}

// TestWrapSettings: bad buffer settings are refused as invalid; the
// destination's own refusals pass through; Write needs Configure.
func TestWrapSettings(t *testing.T) {
	ctx := context.Background()
	for _, s := range []map[string]string{
		{"buffer_mb": "-1"}, {"buffer_mb": "lots"}, {"buffer_max_age": "0s"}, {"buffer_max_age": "yesterday"}, {"bad": "x"},
	} {
		sk := sdktest.ServeMetrics(t, buffer.Wrap(&destination{}, quiet))
		if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: s}); !errors.Is(err, metrics.ErrInvalid) {
			t.Errorf("Configure(%v) = %v; want ErrInvalid", s, err)
		}
	}
	sk := sdktest.ServeMetrics(t, buffer.Wrap(&destination{}, quiet))
	if err := sk.Write(ctx, sdktest.SampleBatch(time.Now())); !errors.Is(err, metrics.ErrNotConfigured) {
		t.Fatalf("Write before Configure = %v", err)
	}
}

// TestWrapConformance runs the SDK's sink suite over a wrapped sink.
func TestWrapConformance(t *testing.T) {
	sdktest.SinkSuite{
		New:      func(*testing.T) metrics.Sink { return buffer.Wrap(&destination{}, quiet) },
		Settings: func(*testing.T) map[string]string { return map[string]string{"buffer_mb": "4"} },
		Invalid:  []map[string]string{{"buffer_mb": "x"}, {"bad": "1"}},
	}.Run(t)
}
