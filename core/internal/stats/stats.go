// Package stats is petreld's statistics loop: every interval it samples
// each VM (through its hypervisor plugin and the network plugin), the host
// and petreld itself, keeps the newest batch for `petrel stats`, and hands
// the batch to every metrics sink through a bounded queue of its own, so
// a sink that fails or hangs never slows VMs, the loop or other sinks.
package stats

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/vmrecord"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// VM is what the loop needs to know about one VM.
type VM struct {
	Name, Backend, State, RunID string
	MemoryMB                    uint32
	Restarts                    uint32
	StartedAt                   time.Time
	Nets                        []Net
}

// Net is one VM network interface.
type Net struct{ Name, HostIf, Bridge string }

// Source lists the VMs to sample.
type Source interface {
	StatsVMs() []VM
}

// Backends resolves hypervisor plugins.
type Backends interface {
	Hypervisor(name string) (hypervisor.Hypervisor, error)
}

// Interfaces reads tap counters (the network plugin).
type Interfaces interface {
	Stats(ctx context.Context, hostIfs []string) ([]*pluginv1.InterfaceStats, error)
}

// Sink receives batches (sdk/metrics.Sink satisfies it).
type Sink interface {
	Write(ctx context.Context, b *pluginv1.Batch) error
}

// Options configure a Collector.
type Options struct {
	Source   Source
	Backends Backends
	// Interfaces is nil when there is no network plugin.
	Interfaces Interfaces
	Interval   time.Duration
	Logger     hclog.Logger
	// Daemon adds petreld's own health (VMs by state, plugin restarts).
	Daemon func(*pluginv1.DaemonSample)
	// QueueLen bounds each sink's queue (batches).
	QueueLen int
	// WriteTimeout bounds one Write; when the loop stops, it also bounds
	// the time each sink gets to take the batches still queued for it.
	WriteTimeout time.Duration
	// Version is petreld's version, reported in every batch with the Go
	// release petreld was built with.
	Version string
}

// Collector runs the loop.
type Collector struct {
	opts Options

	mu    sync.Mutex
	last  *pluginv1.Batch
	subs  map[chan *pluginv1.Batch]struct{}
	sinks map[string]*queue
}

// New returns a Collector; Run starts it.
func New(opts Options) *Collector {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 8
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	return &Collector{opts: opts, subs: map[chan *pluginv1.Batch]struct{}{}, sinks: map[string]*queue{}}
}

// queue is one sink's bounded queue and its writer goroutine.
type queue struct {
	name    string
	sink    Sink
	ch      chan *pluginv1.Batch
	dropped atomic.Uint64
	written atomic.Uint64
	failed  atomic.Uint64
}

// AddSink registers a sink. Call before Run.
func (c *Collector) AddSink(name string, s Sink) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sinks[name] = &queue{name: name, sink: s, ch: make(chan *pluginv1.Batch, c.opts.QueueLen)}
}

// SinkStatus reports a sink's counters.
type SinkStatus struct {
	Name                     string
	Written, Failed, Dropped uint64
}

// Sinks reports every sink's counters.
func (c *Collector) Sinks() []SinkStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []SinkStatus
	for _, q := range c.sinks {
		out = append(out, SinkStatus{Name: q.name, Written: q.written.Load(), Failed: q.failed.Load(), Dropped: q.dropped.Load()})
	}
	return out
}

// Run collects every interval until ctx ends, and drives the sinks'
// writers; it returns once they have stopped.
func (c *Collector) Run(ctx context.Context) {
	var wg sync.WaitGroup
	c.mu.Lock()
	for _, q := range c.sinks {
		wg.Add(1)
		go func(q *queue) {
			defer wg.Done()
			c.write(ctx, q)
		}(q)
	}
	c.mu.Unlock()
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		c.publish(c.Collect(ctx))
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

// shutdownGrace is how long, once the loop stops, each sink gets to
// finish the write in progress and take the batches still queued for it:
// ample for a sink that works or buffers (milliseconds a batch), short
// enough not to hold up petreld's shutdown for one that hangs.
const shutdownGrace = 2 * time.Second

// write feeds one sink until ctx ends, then hands it what is still
// queued, so that stopping petreld loses no batch a working sink (or its
// buffer) could take. Writes are not cut short when ctx ends, only
// shutdownGrace later.
func (c *Collector) write(ctx context.Context, q *queue) {
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
		case <-wctx.Done():
			return
		}
		select {
		case <-time.After(min(shutdownGrace, c.opts.WriteTimeout)):
			cancel()
		case <-wctx.Done():
		}
	}()
	for {
		select {
		case <-ctx.Done():
			c.drain(wctx, q)
			return
		case b := <-q.ch:
			c.writeOne(wctx, q, b)
		}
	}
}

// drain writes the batches left in q's queue at shutdown until ctx ends;
// those left then are counted as dropped.
func (c *Collector) drain(ctx context.Context, q *queue) {
	for {
		select {
		case b := <-q.ch:
			if ctx.Err() != nil {
				q.dropped.Add(1)
				continue
			}
			c.writeOne(ctx, q, b)
		default:
			return
		}
	}
}

// writeOne writes b to q's sink within WriteTimeout, counting the result.
func (c *Collector) writeOne(ctx context.Context, q *queue, b *pluginv1.Batch) {
	wctx, cancel := context.WithTimeout(ctx, c.opts.WriteTimeout)
	err := q.sink.Write(wctx, b)
	cancel()
	if err != nil {
		q.failed.Add(1)
		c.opts.Logger.Warn("metrics sink write failed", "sink", q.name, "error", err)
		return
	}
	q.written.Add(1)
}

// publish stores b as the newest batch and offers it to followers and
// sinks without blocking.
func (c *Collector) publish(b *pluginv1.Batch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = b
	for ch := range c.subs {
		select {
		case ch <- b:
		default:
		}
	}
	for _, q := range c.sinks {
		sb := proto.Clone(b).(*pluginv1.Batch)
		if sb.Daemon == nil {
			sb.Daemon = &pluginv1.DaemonSample{}
		}
		// Batches lost to this sink: refused by a full queue, or written
		// without success. The sink's buffer, if it has one, adds what it
		// holds and what it dropped.
		sb.Daemon.DroppedBatches = q.dropped.Load() + q.failed.Load()
		sb.Sink = &pluginv1.SinkSample{Name: q.name, DroppedBatches: sb.Daemon.DroppedBatches}
		select {
		case q.ch <- sb:
		default:
			q.dropped.Add(1)
		}
	}
}

// Latest returns the newest batch, collecting one if there is none yet.
func (c *Collector) Latest(ctx context.Context) *pluginv1.Batch {
	c.mu.Lock()
	b := c.last
	c.mu.Unlock()
	if b == nil {
		b = c.Collect(ctx)
	}
	return b
}

// Follow delivers each new batch until the returned stop is called.
func (c *Collector) Follow() (<-chan *pluginv1.Batch, func()) {
	ch := make(chan *pluginv1.Batch, 2)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}

// Collect samples everything once.
func (c *Collector) Collect(ctx context.Context) *pluginv1.Batch {
	start := time.Now()
	host, _ := os.Hostname()
	b := &pluginv1.Batch{TimeNs: start.UnixNano(), Host: host}
	vms := c.opts.Source.StatsVMs()
	samples := make([]*pluginv1.VMSample, len(vms))
	var vmMemory uint64
	byBackend := map[string][]int{}
	for i, vm := range vms {
		s := &pluginv1.VMSample{Name: vm.Name, Backend: vm.Backend, State: vm.State, Restarts: vm.Restarts, MemoryMb: vm.MemoryMB}
		samples[i] = s
		if vm.State != "running" || vm.RunID == "" {
			continue
		}
		vmMemory += uint64(vm.MemoryMB) << 20
		s.UptimeSeconds = time.Since(vm.StartedAt).Seconds()
		byBackend[vm.Backend] = append(byBackend[vm.Backend], i)
	}
	var wg sync.WaitGroup
	for backend, idx := range byBackend {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.sampleBackend(ctx, backend, vms, idx, samples)
		}()
	}
	wg.Wait()
	c.sampleInterfaces(ctx, vms, samples)
	b.Vms = samples
	b.HostSample = hostSample()
	b.HostSample.VmMemoryBytes = vmMemory
	// Every state is reported, with 0 when no VM is in it, so that a sink
	// keeping the last value per state (InfluxDB, Prometheus) sees a
	// state empty out instead of keeping its last count.
	b.Daemon = &pluginv1.DaemonSample{VmsByState: map[string]uint32{}, RssBytes: selfRSS(), Version: c.opts.Version, GoVersion: runtime.Version()}
	for _, st := range vmrecord.States {
		b.Daemon.VmsByState[st] = 0
	}
	for _, vm := range vms {
		b.Daemon.VmsByState[vm.State]++
	}
	if c.opts.Daemon != nil {
		c.opts.Daemon(b.Daemon)
	}
	b.Daemon.CollectNs = time.Since(start).Nanoseconds()
	return b
}

// sampleBackend samples the running VMs vms[i], i in idx, all of one
// backend, in one call to its plugin, and fills samples[i].
func (c *Collector) sampleBackend(ctx context.Context, backend string, vms []VM, idx []int, samples []*pluginv1.VMSample) {
	hv, err := c.opts.Backends.Hypervisor(backend)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids := make([]string, len(idx))
	for j, i := range idx {
		ids[j] = vms[i].RunID
	}
	stats, err := hypervisor.StatsBatch(ctx, hv, ids)
	if err != nil {
		c.opts.Logger.Debug("sample VMs", "backend", backend, "error", err)
		return
	}
	for _, i := range idx {
		st, ok := stats[vms[i].RunID]
		if !ok {
			continue
		}
		s := samples[i]
		s.CpuUserNs, s.CpuSystemNs = st.GetUtimeNs(), st.GetStimeNs()
		s.RssBytes, s.VsizeBytes, s.ShimRssBytes = st.GetRssBytes(), st.GetVsizeBytes(), st.GetShimRssBytes()
		s.Minflt, s.Majflt = st.GetMinflt(), st.GetMajflt()
		s.Nvcsw, s.Nivcsw, s.Threads = st.GetNvcsw(), st.GetNivcsw(), st.GetThreads()
	}
}

// sampleInterfaces reads every tap in one call and turns host-side
// counters into the guest's view (what the tap sends, the guest receives).
func (c *Collector) sampleInterfaces(ctx context.Context, vms []VM, samples []*pluginv1.VMSample) {
	if c.opts.Interfaces == nil {
		return
	}
	var ifs []string
	for _, vm := range vms {
		if vm.State != "running" {
			continue
		}
		for _, n := range vm.Nets {
			ifs = append(ifs, n.HostIf)
		}
	}
	if len(ifs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stats, err := c.opts.Interfaces.Stats(ctx, ifs)
	if err != nil {
		c.opts.Logger.Debug("sample interfaces", "error", err)
		return
	}
	byIf := map[string]*pluginv1.InterfaceStats{}
	for _, st := range stats {
		byIf[st.GetHostIf()] = st
	}
	for i, vm := range vms {
		for _, n := range vm.Nets {
			st, ok := byIf[n.HostIf]
			if !ok {
				continue
			}
			samples[i].Interfaces = append(samples[i].Interfaces, &pluginv1.InterfaceSample{
				Name: n.Name, HostIf: n.HostIf, Bridge: n.Bridge,
				RxBytes: st.GetTxBytes(), RxPackets: st.GetTxPackets(), RxErrors: st.GetTxErrors(), RxDropped: st.GetTxDropped(),
				TxBytes: st.GetRxBytes(), TxPackets: st.GetRxPackets(), TxErrors: st.GetRxErrors(), TxDropped: st.GetRxDropped(),
			})
		}
	}
}

func selfRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(string(f[1]), 10, 64)
	return pages * int64(os.Getpagesize())
}
