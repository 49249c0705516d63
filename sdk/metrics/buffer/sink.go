package buffer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Settings Wrap takes from a sink's settings before the sink sees them,
// so every buffered sink understands them the same way.
const (
	// SettingMB is the bound on the buffer's disk use, in MiB (default
	// DefaultMB); "0" turns buffering off, and a failed write is then
	// reported to petreld, which counts the batch as dropped.
	SettingMB = "buffer_mb"
	// SettingMaxAge is how long a batch may wait for its destination, a
	// Go duration (default DefaultMaxAge).
	SettingMaxAge = "buffer_max_age"
)

// Defaults of the buffer settings: at the default stats_interval of 10 s
// a host with a few dozen VMs sends batches of a few KiB, so 64 MiB holds
// a day of them, and a day covers an outage noticed in the morning.
const (
	DefaultMB     = 64
	DefaultMaxAge = 24 * time.Hour
)

// Subdir is the directory, under the state directory petreld hands the
// plugin in Configure, where Wrap keeps its queue.
const Subdir = "buffer"

// Retry pacing after a failed delivery: the first retry comes soon, so a
// brief outage costs little, and retries slow down to about one default
// collection interval, so a server that is back gets data promptly
// without being hammered while it is down.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Options configure Wrap.
type Options struct {
	// Logger receives state changes (destination down, back, batches
	// dropped); nil logs JSON to stderr, which petreld forwards to its own
	// log.
	Logger hclog.Logger
	// DeliverTimeout bounds one delivery from the buffer, in case the
	// wrapped sink has no timeout of its own; zero means 30 s.
	DeliverTimeout time.Duration
	// Now tells the time; nil means time.Now.
	Now func() time.Time
}

// Wrap returns a sink that hands each batch to inner and, when inner
// fails with metrics.ErrUnavailable, keeps the batch in a Queue instead of
// losing it, and delivers the queue in order, in the background, once the
// destination takes batches again. inner's Write must deliver before it
// returns, and fail with ErrUnavailable for problems that may pass (a
// server down, a database not there yet); any other error is taken as a
// refusal of that batch for good.
//
// The queue is on disk under the state directory petreld passes in
// Configure (in memory when there is none), bounded by the settings
// buffer_mb and buffer_max_age, which Wrap removes before passing the
// settings on. Every batch leaves with its SinkSample completed (what the
// buffer held and had dropped when the batch arrived), so the queue's
// history reaches the destination with the data. Fingerprint adds the
// buffer's state to inner's and reports failing writes: degraded while
// batches are kept, unhealthy while they are being lost.
func Wrap(inner metrics.Sink, opts Options) metrics.Sink {
	if opts.Logger == nil {
		opts.Logger = hclog.New(&hclog.LoggerOptions{Name: "buffer", Output: os.Stderr, JSONFormat: true})
	}
	if opts.DeliverTimeout <= 0 {
		opts.DeliverTimeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &sink{inner: inner, opts: opts}
}

// sink is the buffering wrapper. life serialises Configure and Close;
// mu serialises deliveries and changes to the queue, so batches leave in
// order; st guards what Fingerprint reads, so a health check never waits
// for a slow delivery.
type sink struct {
	inner metrics.Sink
	opts  Options

	life    sync.Mutex
	flusher *flusher // nil unless configured with a queue

	mu      sync.Mutex
	name    string
	retryAt time.Time
	backoff time.Duration
	// configured is changed with mu held and read without it.
	configured atomic.Bool

	st      sync.Mutex
	q       *Queue   // nil when buffering is off
	failing *failure // nil while deliveries succeed
}

// failure describes deliveries failing since a time.
type failure struct {
	since   time.Time
	lastErr error
	// lost counts batches lost since the failures began: dropped by the
	// queue, refused for good, or (with buffering off) not delivered.
	lost uint64
}

// flusher is the goroutine delivering the queue; its owner is the sink,
// which starts it in Configure and stops it (cancel, then wait for done)
// in Close and before reconfiguring.
type flusher struct {
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{}
}

// Info identifies the wrapped plugin.
func (s *sink) Info(ctx context.Context) (*pluginv1.PluginInfo, error) {
	return s.inner.Info(ctx)
}

// parseSettings takes the buffer settings out of settings.
func parseSettings(settings map[string]string) (rest map[string]string, maxBytes int64, maxAge time.Duration, err error) {
	rest = maps.Clone(settings)
	if rest == nil {
		rest = map[string]string{}
	}
	mb, maxAge := int64(DefaultMB), DefaultMaxAge
	if v, ok := rest[SettingMB]; ok {
		delete(rest, SettingMB)
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n < 0 || n > 1<<20 {
			return nil, 0, 0, fmt.Errorf("buffer: %s %q is not a size in MiB between 0 (no buffer) and 1048576: %w", SettingMB, v, metrics.ErrInvalid)
		}
		mb = n
	}
	if v, ok := rest[SettingMaxAge]; ok {
		delete(rest, SettingMaxAge)
		d, perr := time.ParseDuration(v)
		if perr != nil || d <= 0 {
			return nil, 0, 0, fmt.Errorf("buffer: %s %q is not a positive duration such as \"24h\": %w", SettingMaxAge, v, metrics.ErrInvalid)
		}
		maxAge = d
	}
	return rest, mb << 20, maxAge, nil
}

// Configure passes the settings without the buffer's to inner, then opens
// (or keeps) the queue and starts delivering what an earlier process left
// in it.
func (s *sink) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error {
	rest, maxBytes, maxAge, err := parseSettings(req.GetSettings())
	if err != nil {
		return err
	}
	s.life.Lock()
	defer s.life.Unlock()
	inner := &pluginv1.ConfigureRequest{Settings: rest, RunDir: req.GetRunDir(), PluginDir: req.GetPluginDir(),
		InstanceId: req.GetInstanceId(), StateDir: req.GetStateDir()}
	if err := s.inner.Configure(ctx, inner); err != nil {
		return err
	}
	name := ""
	if info, err := s.inner.Info(ctx); err == nil {
		name = info.GetName()
	}
	dir := ""
	if req.GetStateDir() != "" {
		dir = filepath.Join(req.GetStateDir(), Subdir)
	}
	// Only Configure and Close change s.q, and both hold life.
	s.st.Lock()
	old := s.q
	s.st.Unlock()
	q := old
	switch {
	case maxBytes == 0:
		q = nil
	case old != nil && old.Dir() == dir:
		old.SetBounds(maxBytes, maxAge)
	default:
		if q, err = Open(QueueOptions{Dir: dir, MaxBytes: maxBytes, MaxAge: maxAge, OnDrop: s.dropped, Now: s.opts.Now}); err != nil {
			return fmt.Errorf("%w (set %s = \"0\" to write without a buffer): %w", err, SettingMB, metrics.ErrUnavailable)
		}
	}
	s.stopFlusher()
	s.mu.Lock()
	defer s.mu.Unlock()
	if old != nil && old != q {
		if n := old.Len(); n > 0 && old.Dir() == "" {
			s.opts.Logger.Warn("batches kept in memory are lost with the old buffer", "batches", n)
		}
		old.Close()
	}
	s.st.Lock()
	s.q, s.failing = q, nil
	s.st.Unlock()
	s.name, s.retryAt, s.backoff = name, time.Time{}, 0
	s.configured.Store(true)
	if q == nil {
		return nil
	}
	if st := q.Stats(); st.Batches > 0 {
		s.opts.Logger.Info("delivering batches kept from before the restart", "batches", st.Batches, "bytes", st.Bytes, "oldest", st.Oldest, "dir", dir)
	}
	s.startFlusher(q)
	return nil
}

// Fingerprint is inner's health, made worse by failing deliveries, with
// the buffer's state among the attributes.
func (s *sink) Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error) {
	fp, err := s.inner.Fingerprint(ctx)
	if err != nil {
		return nil, err
	}
	if !s.configured.Load() {
		return fp, nil
	}
	s.st.Lock()
	q, failing := s.q, s.failing
	var f failure
	if failing != nil {
		f = *failing
	}
	s.st.Unlock()
	attrs := maps.Clone(fp.GetAttributes())
	if attrs == nil {
		attrs = map[string]string{}
	}
	var st Stats
	kept := "no buffer"
	if q != nil {
		st = q.Stats()
		attrs["buffer.dir"] = q.Dir()
		if q.Dir() == "" {
			attrs["buffer.dir"] = "(memory)"
		}
		attrs["buffer.max_bytes"] = strconv.FormatInt(st.MaxBytes, 10)
		attrs["buffer.max_age"] = st.MaxAge.String()
		attrs["buffer.queued_batches"] = strconv.Itoa(st.Batches)
		attrs["buffer.queued_bytes"] = strconv.FormatInt(st.Bytes, 10)
		attrs["buffer.dropped_batches"] = strconv.FormatUint(st.Dropped, 10)
		kept = fmt.Sprintf("%d batches (%d KiB) kept in %s", st.Batches, st.Bytes>>10, attrs["buffer.dir"])
	}
	health, desc := fp.GetHealth(), fp.GetDescription()
	switch {
	case failing != nil:
		attrs["last_error"] = f.lastErr.Error()
		attrs["failing_since"] = f.since.UTC().Format(time.RFC3339)
		health = worse(health, pluginv1.Health_HEALTH_DEGRADED)
		desc = fmt.Sprintf("writes failing for %s: %v; %s", s.opts.Now().Sub(f.since).Round(time.Second), f.lastErr, kept)
		if f.lost > 0 || q == nil {
			health = pluginv1.Health_HEALTH_UNHEALTHY
			desc += fmt.Sprintf(", %d lost since the failures began", f.lost)
		}
	case st.Batches > 0:
		health = worse(health, pluginv1.Health_HEALTH_DEGRADED)
		desc = fmt.Sprintf("%s; delivering %s, oldest from %s", desc, kept, st.Oldest.UTC().Format(time.RFC3339))
	}
	return &pluginv1.FingerprintResponse{Health: health, Description: desc, Attributes: attrs}, nil
}

// worse returns the less healthy of a and b.
func worse(a, b pluginv1.Health) pluginv1.Health {
	if a == pluginv1.Health_HEALTH_UNSPECIFIED || b > a {
		return b
	}
	return a
}

// Write delivers b at once when nothing is queued before it and the
// destination is not known to be down; otherwise, or when that delivery
// fails with ErrUnavailable, it queues b and returns nil: the batch is
// kept, and petreld has nothing to count. Without a buffer a failed
// delivery is returned, and while the destination is down after a
// failure, Writes fail at once until the next attempt is due.
func (s *sink) Write(ctx context.Context, b *pluginv1.Batch) error {
	if b == nil {
		return fmt.Errorf("buffer: nil batch: %w", metrics.ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.configured.Load() {
		return fmt.Errorf("buffer: write: %w", metrics.ErrNotConfigured)
	}
	s.st.Lock()
	q := s.q
	s.st.Unlock()
	s.stamp(b, q)
	now := s.opts.Now()
	if q == nil {
		if now.Before(s.retryAt) {
			s.lose(1)
			return s.failedErr(now)
		}
		err := s.deliver(ctx, b)
		if err != nil {
			s.lose(1)
		}
		return err
	}
	if q.Len() == 0 && !now.Before(s.retryAt) {
		err := s.deliver(ctx, b)
		if err == nil || !retryable(err) {
			if err != nil {
				s.lose(1)
			}
			return err
		}
	}
	if err := q.Push(b); err != nil {
		s.lose(1)
		return fmt.Errorf("keep batch for later: %v: %w", err, metrics.ErrUnavailable)
	}
	s.flusher.kick()
	return nil
}

// failedErr is the error of a Write refused during the back-off.
func (s *sink) failedErr(now time.Time) error {
	s.st.Lock()
	defer s.st.Unlock()
	var last error = metrics.ErrUnavailable
	if s.failing != nil {
		last = s.failing.lastErr
	}
	return fmt.Errorf("destination failed, next attempt in %s: %w", s.retryAt.Sub(now).Round(time.Millisecond), last)
}

// stamp completes the batch's SinkSample with the buffer's state as the
// batch arrives. Called with mu held.
func (s *sink) stamp(b *pluginv1.Batch, q *Queue) {
	if b.Sink == nil {
		b.Sink = &pluginv1.SinkSample{Name: s.name}
	}
	if q == nil {
		return
	}
	st := q.Stats()
	b.Sink.QueuedBatches, b.Sink.QueuedBytes, b.Sink.BufferDroppedBatches = uint64(st.Batches), uint64(st.Bytes), st.Dropped
}

// deliver hands b to inner and keeps the record of failures and the
// back-off. Called with mu held.
func (s *sink) deliver(ctx context.Context, b *pluginv1.Batch) error {
	err := s.inner.Write(ctx, b)
	now := s.opts.Now()
	s.st.Lock()
	defer s.st.Unlock()
	if err == nil {
		if s.failing != nil {
			s.opts.Logger.Info("destination takes batches again", "failing_for", now.Sub(s.failing.since).Round(time.Millisecond).String(),
				"lost", s.failing.lost)
		}
		s.failing, s.retryAt, s.backoff = nil, time.Time{}, 0
		return nil
	}
	if !retryable(err) {
		return err
	}
	if s.failing == nil {
		s.failing = &failure{since: now}
		s.opts.Logger.Warn("destination unavailable; keeping batches for later", "error", err, "buffer", s.q != nil)
	}
	s.failing.lastErr = err
	s.backoff = min(max(2*s.backoff, minBackoff), maxBackoff)
	s.retryAt = now.Add(s.backoff)
	return err
}

// lose counts batches lost while deliveries fail (for Fingerprint).
func (s *sink) lose(n uint64) {
	s.st.Lock()
	defer s.st.Unlock()
	if s.failing != nil {
		s.failing.lost += n
	}
}

// dropped is the queue's OnDrop: it logs and counts what the bounds cost.
// It runs with the queue's lock held.
func (s *sink) dropped(timeNs int64, reason error) {
	s.opts.Logger.Warn("buffered batch dropped", "collected", time.Unix(0, timeNs).UTC(), "reason", reason)
	s.lose(1)
}

// retryable reports whether a delivery that failed with err may succeed
// later, so the batch is worth keeping.
func retryable(err error) bool {
	return errors.Is(err, metrics.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// startFlusher starts delivering q. Called with life and mu held.
func (s *sink) startFlusher(q *Queue) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flusher{cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.flusher = f
	go func() {
		defer close(f.done)
		s.flush(ctx, q, f.wake)
	}()
	f.kick()
}

// stopFlusher stops the flusher and waits for it. Called with life held
// and mu not held: the flusher takes mu for each delivery.
func (s *sink) stopFlusher() {
	if s.flusher == nil {
		return
	}
	s.flusher.cancel()
	<-s.flusher.done
	s.flusher = nil
}

// kick wakes the flusher; a nil flusher (no buffer) ignores it.
func (f *flusher) kick() {
	if f == nil {
		return
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// flush delivers q's batches, oldest first, whenever woken or when the
// back-off ends, until ctx is cancelled.
func (s *sink) flush(ctx context.Context, q *Queue, wake <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := s.drain(ctx, q)
		if wait <= 0 {
			wait = time.Hour
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-timer.C:
		}
	}
}

// drain delivers batches until the queue is empty, a delivery fails or
// ctx ends; it returns how long to wait before trying again (0: until
// woken).
func (s *sink) drain(ctx context.Context, q *Queue) time.Duration {
	delivered := 0
	start := s.opts.Now()
	defer func() {
		if delivered > 0 && q.Len() == 0 {
			s.opts.Logger.Info("delivered the kept batches", "batches", delivered, "took", s.opts.Now().Sub(start).Round(time.Millisecond).String())
		}
	}()
	for ctx.Err() == nil {
		wait, more := s.deliverHead(ctx, q)
		if !more {
			return wait
		}
		delivered++
	}
	return 0
}

// deliverHead delivers the oldest queued batch. It reports whether to go
// on at once, and otherwise how long to wait.
func (s *sink) deliverHead(ctx context.Context, q *Queue) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.opts.Now(); now.Before(s.retryAt) {
		return s.retryAt.Sub(now), false
	}
	item, err := q.Peek()
	if err != nil {
		s.opts.Logger.Error("cannot read the buffer", "error", err)
		return maxBackoff, false
	}
	if item == nil {
		return 0, false
	}
	dctx, cancel := context.WithTimeout(ctx, s.opts.DeliverTimeout)
	err = s.deliver(dctx, item.Batch)
	cancel()
	switch {
	case err == nil:
		if err := q.Remove(item.Seq); err != nil {
			s.opts.Logger.Error("delivered batch stays in the buffer and will be sent again", "error", err)
		}
	case ctx.Err() != nil:
		return 0, false
	case retryable(err):
		return s.retryAt.Sub(s.opts.Now()), false
	default:
		s.opts.Logger.Error("destination refused a buffered batch for good; dropping it", "collected", time.Unix(0, item.Batch.GetTimeNs()).UTC(), "error", err)
		if err := q.Drop(item.Seq, err); err != nil {
			s.opts.Logger.Error("refused batch stays in the buffer", "error", err)
		}
	}
	return 0, true
}

// Close stops delivering, leaves the queue on disk for the next process
// and closes inner.
func (s *sink) Close(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	s.stopFlusher()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.configured.Store(false)
	s.st.Lock()
	q := s.q
	s.q, s.failing = nil, nil
	s.st.Unlock()
	var qerr error
	if q != nil {
		if n := q.Len(); n > 0 {
			s.opts.Logger.Info("batches stay in the buffer for the next start", "batches", n, "dir", q.Dir())
		}
		qerr = q.Close()
	}
	return errors.Join(s.inner.Close(ctx), qerr)
}
