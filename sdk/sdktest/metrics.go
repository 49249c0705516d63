package sdktest

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// ServeMetrics serves impl over an in-process gRPC connection and returns
// the Sink petreld would see. Everything is torn down when the test ends.
func ServeMetrics(t testing.TB, impl metrics.Sink) metrics.Sink {
	t.Helper()
	return serve[metrics.Sink](t, petrelplugin.MetricsService, metrics.NewGRPCPlugin(impl))
}

// SampleBatch returns a batch like the ones petreld sends: a running VM
// "web:app" on backend hvt with one interface "service" (tap0 on br0), an
// exited VM "db" on backend spt without interfaces, host totals, daemon
// health and the state of a sink named "test". Every counter is non-zero
// and distinct, but for the batches petreld dropped, which it reports
// twice (as the daemon's and the sink's), so a test can tell fields apart
// at the destination.
func SampleBatch(at time.Time) *pluginv1.Batch {
	return &pluginv1.Batch{
		TimeNs: at.UnixNano(),
		Host:   "petrel-test",
		Vms: []*pluginv1.VMSample{{
			Name: "web:app", Backend: "hvt", State: "running",
			CpuUserNs: 1_500_000_000, CpuSystemNs: 250_000_000,
			RssBytes: 12_345_678, VsizeBytes: 98_765_432,
			Minflt: 1001, Majflt: 3, Nvcsw: 4004, Nivcsw: 55, Threads: 2,
			UptimeSeconds: 42.5, Restarts: 1, MemoryMb: 64, ShimRssBytes: 2_097_152,
			Interfaces: []*pluginv1.InterfaceSample{{
				Name: "service", HostIf: "tap0", Bridge: "br0",
				RxBytes: 10_240, RxPackets: 80, RxErrors: 1, RxDropped: 2,
				TxBytes: 20_480, TxPackets: 160, TxErrors: 3, TxDropped: 4,
			}},
		}, {
			Name: "db", Backend: "spt", State: "exited",
			CpuUserNs: 3_000_000_000, CpuSystemNs: 500_000_000,
			RssBytes: 4_194_304, VsizeBytes: 8_388_608,
			Minflt: 77, Majflt: 0, Nvcsw: 10, Nivcsw: 1, Threads: 1,
			UptimeSeconds: 0, Restarts: 3, MemoryMb: 32,
		}},
		HostSample: &pluginv1.HostSample{Cpus: 2, MemoryTotalBytes: 8 << 30, MemoryAvailableBytes: 6 << 30, Load1: 0.75, VmMemoryBytes: 96 << 20},
		Daemon: &pluginv1.DaemonSample{
			VmsByState:     map[string]uint32{"running": 1, "exited": 1},
			PluginRestarts: map[string]uint32{"hvt": 0, "influx": 2},
			RssBytes:       30 << 20, DroppedBatches: 5, CollectNs: 1_250_000,
			Version: "1.2.3", GoVersion: "go1.26.8",
		},
		Sink: &pluginv1.SinkSample{Name: "test", DroppedBatches: 5, BufferDroppedBatches: 2, QueuedBatches: 3, QueuedBytes: 12288},
	}
}

// OddBatch returns a batch a careless collector or a hostile name could
// produce: separators and quotes of every line format, control
// characters, empty strings, a duplicated VM, counters at their limits and
// non-finite gauges. A sink must accept it (dropping what its format
// cannot carry) rather than fail the batch, crash or corrupt other lines.
func OddBatch(at time.Time) *pluginv1.Batch {
	return &pluginv1.Batch{
		TimeNs: at.UnixNano(),
		Host:   `host with space,comma=eq"quote\`,
		Vms: []*pluginv1.VMSample{{
			Name: `odd vm,"x"=y\`, Backend: "", State: "running\nfailed",
			CpuUserNs: math.MaxInt64, RssBytes: -1, UptimeSeconds: math.NaN(),
			Restarts: math.MaxUint32, MemoryMb: math.MaxUint32,
			Interfaces: []*pluginv1.InterfaceSample{{Name: "", HostIf: "tap\t1", RxBytes: math.MaxUint64}},
		}, {
			Name: "ünïcode:名前", Backend: "hvt", State: "running", UptimeSeconds: math.Inf(1),
		}, {
			Name: "ünïcode:名前", Backend: "hvt", State: "running",
		}},
		HostSample: &pluginv1.HostSample{Load1: math.Inf(-1), MemoryTotalBytes: math.MaxUint64},
		Daemon:     &pluginv1.DaemonSample{VmsByState: map[string]uint32{"": 1, "odd state": 2}, PluginRestarts: map[string]uint32{"a\nb": 1}},
	}
}

// SinkSuite describes a metrics sink under test. The suite drives it
// through the gRPC boundary with ServeMetrics, as petreld would.
type SinkSuite struct {
	// New returns a fresh, unconfigured sink.
	New func(t *testing.T) metrics.Sink
	// Settings returns settings for Configure that deliver to a working
	// destination. It is called for every sink the suite configures, so
	// it can hand out fresh files or ports.
	Settings func(t *testing.T) map[string]string
	// Invalid lists settings Configure must refuse with metrics.ErrInvalid.
	Invalid []map[string]string
	// Delivered, if set, checks that batch, written with settings, reached
	// the destination. It is called after Write returned nil.
	Delivered func(t *testing.T, settings map[string]string, batch *pluginv1.Batch)
}

// callTimeout bounds every call the suite makes: a sink must answer
// promptly even when its destination is slow.
const callTimeout = 10 * time.Second

func (s SinkSuite) sink(t *testing.T) metrics.Sink {
	t.Helper()
	sk := ServeMetrics(t, s.New(t))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		sk.Close(ctx)
	})
	return sk
}

func (s SinkSuite) configured(t *testing.T) (metrics.Sink, map[string]string) {
	t.Helper()
	sk := s.sink(t)
	settings := s.Settings(t)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: settings}); err != nil {
		t.Fatalf("Configure(%v): %v", settings, err)
	}
	return sk, settings
}

func (s SinkSuite) write(t *testing.T, sk metrics.Sink, settings map[string]string, b *pluginv1.Batch) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := sk.Write(ctx, b); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if s.Delivered != nil {
		s.Delivered(t, settings, b)
	}
}

// Run runs the conformance suite.
func (s SinkSuite) Run(t *testing.T) {
	ctx := context.Background()

	t.Run("Identity", func(t *testing.T) {
		sk := s.sink(t)
		info, err := sk.Info(ctx)
		if err != nil || info.GetKind() != pluginv1.Kind_KIND_METRICS || info.GetName() == "" {
			t.Fatalf("Info = %v, %v; want kind metrics and a name", info, err)
		}
		speaks := false
		for _, v := range info.GetApiVersions() {
			speaks = speaks || v == petrelplugin.ProtocolVersion
		}
		if !speaks {
			t.Fatalf("Info api_versions %v lacks %d", info.GetApiVersions(), petrelplugin.ProtocolVersion)
		}
		if _, err := sk.Fingerprint(ctx); err != nil {
			t.Fatalf("Fingerprint before Configure: %v", err)
		}
		sk, _ = s.configured(t)
		fp, err := sk.Fingerprint(ctx)
		if err != nil || (fp.GetHealth() != pluginv1.Health_HEALTH_HEALTHY && fp.GetHealth() != pluginv1.Health_HEALTH_DEGRADED) {
			t.Fatalf("Fingerprint after Configure = %v, %v; want healthy or degraded", fp, err)
		}
	})

	t.Run("RefusesInvalidSettings", func(t *testing.T) {
		for _, settings := range s.Invalid {
			sk := s.sink(t)
			err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: settings})
			if !errors.Is(err, metrics.ErrInvalid) || err.Error() == "" {
				t.Errorf("Configure(%v) = %v; want ErrInvalid with a reason", settings, err)
			}
		}
	})

	t.Run("WriteNeedsConfigure", func(t *testing.T) {
		sk := s.sink(t)
		if err := sk.Write(ctx, SampleBatch(time.Now())); !errors.Is(err, metrics.ErrNotConfigured) {
			t.Fatalf("Write before Configure = %v; want ErrNotConfigured", err)
		}
	})

	t.Run("Write", func(t *testing.T) {
		sk, settings := s.configured(t)
		s.write(t, sk, settings, SampleBatch(time.Now()))
	})

	t.Run("EmptyAndOddBatches", func(t *testing.T) {
		sk, settings := s.configured(t)
		for _, b := range []*pluginv1.Batch{{TimeNs: time.Now().UnixNano()}, OddBatch(time.Now())} {
			wctx, cancel := context.WithTimeout(ctx, callTimeout)
			err := sk.Write(wctx, b)
			cancel()
			if err != nil {
				t.Fatalf("Write(%v): %v", b, err)
			}
		}
		// The sink still delivers well-formed batches afterwards.
		s.write(t, sk, settings, SampleBatch(time.Now()))
	})

	t.Run("ConcurrentWrites", func(t *testing.T) {
		sk, settings := s.configured(t)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 4; j++ {
					wctx, cancel := context.WithTimeout(ctx, callTimeout)
					errs <- sk.Write(wctx, SampleBatch(time.Now()))
					cancel()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent Write: %v", err)
			}
		}
		s.write(t, sk, settings, SampleBatch(time.Now()))
	})

	t.Run("Reconfigure", func(t *testing.T) {
		sk, _ := s.configured(t)
		settings := s.Settings(t)
		if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: settings}); err != nil {
			t.Fatalf("second Configure(%v): %v", settings, err)
		}
		s.write(t, sk, settings, SampleBatch(time.Now()))
	})

	t.Run("Close", func(t *testing.T) {
		sk, _ := s.configured(t)
		if err := sk.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := sk.Write(ctx, SampleBatch(time.Now())); !errors.Is(err, metrics.ErrNotConfigured) {
			t.Fatalf("Write after Close = %v; want ErrNotConfigured", err)
		}
		if err := sk.Close(ctx); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}
