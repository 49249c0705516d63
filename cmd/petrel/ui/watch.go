package ui

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// statsWindow is how far back the charts of a VM go.
const statsWindow = time.Hour

// maxEvents is how many recent events are kept per host.
const maxEvents = 200

// point is one statistics sample of a VM, as the charts draw it.
type point struct {
	TimeNs int64  `json:"t"`
	CPUNs  int64  `json:"cpu_ns"`
	RSS    int64  `json:"rss"`
	RxB    uint64 `json:"rx"`
	TxB    uint64 `json:"tx"`
	State  string `json:"state"`
}

// eventView is an event as the page shows it.
type eventView struct {
	TimeNs     int64  `json:"t"`
	Type       string `json:"type"`
	Name       string `json:"name"`
	ExitCode   int32  `json:"exit_code"`
	ExitSignal int32  `json:"exit_signal"`
	Message    string `json:"message,omitempty"`
}

// watcher follows one host's statistics and events for as long as the
// console serves it: it keeps the last hour of every VM's samples for
// the charts, the newest batch for the host's figures, and recent events,
// and hands new events to the pages that follow them. It reconnects,
// with back-off, when a stream ends (a restarted petreld, a leaf that
// expired, a revoked certificate).
type watcher struct {
	h      *host
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	series    map[string][]point
	last      *pluginv1.Batch
	events    []eventView
	subs      map[chan eventView]struct{}
	statsErr  string
	eventsErr string
}

// newWatcher starts following h until stop.
func newWatcher(parent context.Context, h *host) *watcher {
	ctx, cancel := context.WithCancel(parent)
	w := &watcher{h: h, cancel: cancel, series: map[string][]point{}, subs: map[chan eventView]struct{}{}}
	w.wg.Add(2)
	go func() { defer w.wg.Done(); w.loop(ctx, w.followStats, &w.statsErr) }()
	go func() { defer w.wg.Done(); w.loop(ctx, w.followEvents, &w.eventsErr) }()
	return w
}

// stop ends both streams and waits for them.
func (w *watcher) stop() {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	for ch := range w.subs {
		close(ch)
		delete(w.subs, ch)
	}
	w.mu.Unlock()
}

// loop runs follow until ctx ends, recording its last error in errp and
// waiting longer after each failure.
func (w *watcher) loop(ctx context.Context, follow func(context.Context) error, errp *string) {
	backoff := time.Second
	for ctx.Err() == nil {
		start := time.Now()
		err := follow(ctx)
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		if err != nil && !errors.Is(err, io.EOF) {
			*errp = describe(err, w.h.cfg)
		}
		w.mu.Unlock()
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func (w *watcher) followStats(ctx context.Context) error {
	c, err := w.h.client()
	if err != nil {
		return err
	}
	stream, err := c.API.Stats(ctx, &daemonv1.StatsRequest{Follow: true})
	if err != nil {
		return err
	}
	for {
		b, err := stream.Recv()
		if err != nil {
			return err
		}
		w.add(b)
	}
}

// add records a batch.
func (w *watcher) add(b *pluginv1.Batch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.statsErr = ""
	w.last = b
	cutoff := b.GetTimeNs() - int64(statsWindow)
	for _, vm := range b.GetVms() {
		p := point{TimeNs: b.GetTimeNs(), CPUNs: vm.GetCpuUserNs() + vm.GetCpuSystemNs(), RSS: vm.GetRssBytes(), State: vm.GetState()}
		for _, i := range vm.GetInterfaces() {
			p.RxB += i.GetRxBytes()
			p.TxB += i.GetTxBytes()
		}
		s := append(w.series[vm.GetName()], p)
		for len(s) > 0 && s[0].TimeNs < cutoff {
			s = s[1:]
		}
		w.series[vm.GetName()] = s
	}
	for n, s := range w.series {
		if len(s) == 0 || s[len(s)-1].TimeNs < cutoff {
			delete(w.series, n)
		}
	}
}

func (w *watcher) followEvents(ctx context.Context) error {
	c, err := w.h.client()
	if err != nil {
		return err
	}
	stream, err := c.API.Events(ctx, &daemonv1.EventsRequest{})
	if err != nil {
		return err
	}
	for {
		e, err := stream.Recv()
		if err != nil {
			return err
		}
		v := eventView{TimeNs: e.GetTimeNs(), Type: e.GetType(), Name: e.GetName(), ExitCode: e.GetExitCode(), ExitSignal: e.GetExitSignal(), Message: e.GetMessage()}
		w.mu.Lock()
		w.eventsErr = ""
		w.events = append(w.events, v)
		if len(w.events) > maxEvents {
			w.events = w.events[len(w.events)-maxEvents:]
		}
		for ch := range w.subs {
			select {
			case ch <- v:
			default: // a page that does not keep up misses events, never the host
			}
		}
		w.mu.Unlock()
	}
}

// subscribe returns a channel of new events and the function that ends
// the subscription.
func (w *watcher) subscribe() (<-chan eventView, func()) {
	ch := make(chan eventView, 64)
	w.mu.Lock()
	w.subs[ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		if _, ok := w.subs[ch]; ok {
			delete(w.subs, ch)
			close(ch)
		}
		w.mu.Unlock()
	}
}

// snapshot is what the watcher knows now.
type snapshot struct {
	Events    []eventView
	Last      *pluginv1.Batch
	StatsErr  string
	EventsErr string
}

func (w *watcher) snapshot() snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return snapshot{Events: append([]eventView(nil), w.events...), Last: w.last, StatsErr: w.statsErr, EventsErr: w.eventsErr}
}

// seriesOf returns a VM's samples of the last hour.
func (w *watcher) seriesOf(vm string) []point {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]point{}, w.series[vm]...)
}
