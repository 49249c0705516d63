package stats

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

type source []VM

func (s source) StatsVMs() []VM { return s }

type statsHV struct{ hypervisor.Hypervisor }

func (statsHV) Stats(_ context.Context, id string) (*pluginv1.VMStats, error) {
	if id == "broken" {
		return nil, errors.New("no such run")
	}
	return &pluginv1.VMStats{UtimeNs: 1e9, RssBytes: 4 << 20, Threads: 2}, nil
}

type backends struct{}

func (backends) Hypervisor(string) (hypervisor.Hypervisor, error) { return statsHV{}, nil }

type taps struct{}

func (taps) Stats(_ context.Context, ifs []string) ([]*pluginv1.InterfaceStats, error) {
	var out []*pluginv1.InterfaceStats
	for _, i := range ifs {
		out = append(out, &pluginv1.InterfaceStats{HostIf: i, RxBytes: 100, TxBytes: 7})
	}
	return out, nil
}

type recordingSink struct {
	mu      sync.Mutex
	batches []*pluginv1.Batch
}

func (s *recordingSink) Write(_ context.Context, b *pluginv1.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, b)
	return nil
}

func (s *recordingSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.batches)
}

type hangingSink struct{ calls atomic.Int32 }

func (h *hangingSink) Write(ctx context.Context, _ *pluginv1.Batch) error {
	h.calls.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

func TestCollect(t *testing.T) {
	c := New(Options{Source: source{
		{Name: "a:web", Backend: "hvt", State: "running", RunID: "r1", MemoryMB: 32, StartedAt: time.Now().Add(-time.Minute),
			Nets: []Net{{Name: "service0", HostIf: "pt1", Bridge: "br0"}}},
		{Name: "a:gone", Backend: "hvt", State: "exited"},
		{Name: "a:odd", Backend: "hvt", State: "running", RunID: "broken"},
	}, Backends: backends{}, Interfaces: taps{}})
	b := c.Collect(context.Background())
	if len(b.GetVms()) != 3 {
		t.Fatalf("%d samples", len(b.GetVms()))
	}
	web := b.GetVms()[0]
	if web.GetCpuUserNs() != 1e9 || web.GetRssBytes() != 4<<20 || web.GetUptimeSeconds() < 59 {
		t.Fatalf("web: %v", web)
	}
	if len(web.GetInterfaces()) != 1 || web.GetInterfaces()[0].GetRxBytes() != 7 || web.GetInterfaces()[0].GetTxBytes() != 100 {
		t.Fatalf("interfaces must be from the guest's side: %v", web.GetInterfaces())
	}
	if b.GetDaemon().GetVmsByState()["running"] != 2 || b.GetDaemon().GetRssBytes() <= 0 || b.GetHostSample().GetMemoryTotalBytes() == 0 {
		t.Fatalf("daemon/host: %v %v", b.GetDaemon(), b.GetHostSample())
	}
}

// TestHangingSinkIsolated: a sink that never returns costs others nothing
// and loses batches, counted, instead of queueing without bound.
func TestHangingSinkIsolated(t *testing.T) {
	c := New(Options{Source: source{}, Backends: backends{}, Interval: 10 * time.Millisecond, QueueLen: 2, WriteTimeout: time.Hour})
	good, bad := &recordingSink{}, &hangingSink{}
	c.AddSink("good", good)
	c.AddSink("bad", bad)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for good.count() < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	calls := bad.calls.Load()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
	if good.count() < 20 {
		t.Fatalf("good sink got %d batches", good.count())
	}
	var dropped uint64
	for _, s := range c.Sinks() {
		if s.Name == "bad" {
			dropped = s.Dropped
		}
	}
	if dropped < 10 || calls != 1 {
		t.Fatalf("bad sink: %d dropped, %d calls while running", dropped, calls)
	}
	last := good.batches[len(good.batches)-1]
	if last.GetDaemon() == nil {
		t.Fatal("no daemon sample")
	}
}

// countingSource counts collections, each of which makes one batch.
type countingSource struct{ n atomic.Int32 }

func (s *countingSource) StatsVMs() []VM {
	s.n.Add(1)
	return nil
}

// slowSink takes a while for every batch, so batches queue up for it.
type slowSink struct{ recordingSink }

func (s *slowSink) Write(ctx context.Context, b *pluginv1.Batch) error {
	time.Sleep(20 * time.Millisecond)
	return s.recordingSink.Write(ctx, b)
}

// TestShutdownDrains: when the loop stops, what is queued for a sink is
// still written to it, so every batch collected is either in the sink or
// counted as dropped; each batch names its sink, what petreld lost for it
// and petreld's version.
func TestShutdownDrains(t *testing.T) {
	src := &countingSource{}
	c := New(Options{Source: src, Backends: backends{}, Interval: 5 * time.Millisecond, QueueLen: 8, Version: "9.9.9"})
	sk := &slowSink{}
	c.AddSink("slow", sk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	st := c.Sinks()[0]
	collected := uint64(src.n.Load())
	if got := uint64(sk.count()); got+st.Dropped != collected || st.Written != got {
		t.Fatalf("%d collected, %d written, %d dropped: batches went missing at shutdown", collected, got, st.Dropped)
	}
	if st.Dropped == 0 {
		t.Fatalf("the slow sink dropped nothing; the test needs a full queue")
	}
	last := sk.batches[len(sk.batches)-1]
	if last.GetSink().GetName() != "slow" || last.GetSink().GetDroppedBatches() == 0 ||
		last.GetSink().GetDroppedBatches() != last.GetDaemon().GetDroppedBatches() ||
		last.GetDaemon().GetVersion() != "9.9.9" || !strings.HasPrefix(last.GetDaemon().GetGoVersion(), "go") {
		t.Fatalf("last batch: sink %v, daemon %v", last.GetSink(), last.GetDaemon())
	}
	t.Logf("%d collected, %d written, %d dropped while the queue was full", collected, st.Written, st.Dropped)
}
