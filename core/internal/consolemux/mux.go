// Package consolemux copies the consoles of every VM of one hypervisor
// plugin into petreld's console rings over a single FollowConsoles
// stream. A stream, its goroutines and buffers for each VM cost petreld
// and the plugin tens of kilobytes per VM, which at a thousand VMs is
// most of what they use; one stream per plugin costs that once.
//
// A plugin that cannot follow consoles together (it predates the call)
// is noticed when the stream is opened or fails, and Follow then tells
// its callers to follow each console alone, as before.
package consolemux

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/core/internal/console"
	"github.com/petrel-vmm/petrel/sdk/consolepack"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Opener opens a FollowConsoles stream to the plugin, lasting until ctx
// ends. An error wrapping errors.ErrUnsupported says that the plugin
// cannot follow consoles together; any other, that it failed this time.
type Opener func(ctx context.Context) (hypervisor.ConsoleStream, error)

// Options tune a Mux.
type Options struct {
	// RetryDelay is the wait before a failed stream is opened again, or
	// a VM whose follow failed is followed again.
	RetryDelay time.Duration
	// Retries bounds the consecutive failures of one VM's follow (a
	// failed stream counts for every VM on it) before Follow gives up on
	// that console; a line received starts the count afresh.
	Retries int
	// Logger receives failures of the stream.
	Logger hclog.Logger
}

// Mux follows the consoles of one plugin's VMs over one stream, opened
// while some VM is followed and opened again after it failed (the plugin
// restarted). It is safe for concurrent use.
type Mux struct {
	ctx    context.Context
	cancel context.CancelFunc
	open   Opener
	opts   Options
	done   chan struct{} // closed when the goroutine has returned

	mu          sync.Mutex
	subs        map[string]*sub // by run id
	stream      hypervisor.ConsoleStream
	queue       []*pluginv1.FollowConsolesRequest // for stream, not yet sent
	queued      chan struct{}                     // holds a token when queue is not empty
	unsupported bool
	started     bool
	kick        chan struct{} // holds a token when a VM was added
}

// sub is one VM's console being followed.
type sub struct {
	id       string
	ring     *console.Ring
	failures int           // guarded by Mux.mu
	ended    chan struct{} // closed when the follow is over
	alone    bool          // set before ended is closed: follow it alone
}

// New returns a Mux opening its streams with open; Close stops it.
func New(open Opener, opts Options) *Mux {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Retries <= 0 {
		opts.Retries = 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Mux{ctx: ctx, cancel: cancel, open: open, opts: opts, done: make(chan struct{}),
		subs: map[string]*sub{}, kick: make(chan struct{}, 1), queued: make(chan struct{}, 1)}
}

// Follow copies the console of run id into ring, from the ring's last
// line on, until the console ends (the VM exited and every line was
// copied; or the plugin does not know the VM; or following it failed
// Retries times in a row) or ctx ends, and then reports true. It reports
// false, at once or later, when the plugin cannot follow consoles
// together: the caller then follows the console alone, from the ring's
// last line.
func (m *Mux) Follow(ctx context.Context, id string, ring *console.Ring) bool {
	s := &sub{id: id, ring: ring, ended: make(chan struct{})}
	m.mu.Lock()
	if m.unsupported || m.ctx.Err() != nil {
		m.mu.Unlock()
		return m.ctx.Err() != nil
	}
	if old := m.subs[id]; old != nil {
		m.endLocked(old, false)
	}
	m.subs[id] = s
	m.sendLocked(s.request())
	if !m.started {
		m.started = true
		go m.run()
	}
	select {
	case m.kick <- struct{}{}:
	default:
	}
	m.mu.Unlock()
	select {
	case <-s.ended:
		return !s.alone
	case <-ctx.Done():
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.subs[id] == s {
		delete(m.subs, id)
		m.sendLocked(&pluginv1.FollowConsolesRequest{Id: id, Stop: true})
	}
	return true
}

// Close stops the Mux: current Follow calls return true, and later ones
// return at once.
func (m *Mux) Close() {
	m.cancel()
	m.mu.Lock()
	started := m.started
	for _, s := range m.subs {
		m.endLocked(s, false)
	}
	m.mu.Unlock()
	if started {
		<-m.done
	}
}

// request is the request that follows s from its ring's last line.
func (s *sub) request() *pluginv1.FollowConsolesRequest {
	var since int64
	if t := s.ring.LastTime(); !t.IsZero() {
		since = t.UnixNano()
	}
	return &pluginv1.FollowConsolesRequest{Id: s.id, SinceNs: since, Packed: true}
}

// sendLocked queues r for the current stream, if one is open: the next
// one follows every VM anew. Requests are sent by a goroutine of the
// stream's, so that no caller waits for the stream or grows its stack
// with gRPC's. Caller holds m.mu.
func (m *Mux) sendLocked(r *pluginv1.FollowConsolesRequest) {
	if m.stream == nil {
		return
	}
	m.queue = append(m.queue, r)
	select {
	case m.queued <- struct{}{}:
	default:
	}
}

// sendQueued sends the queued requests on st until ctx ends. A failure
// is the stream's, which Recv reports.
func (m *Mux) sendQueued(ctx context.Context, st hypervisor.ConsoleStream) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.queued:
		}
		m.mu.Lock()
		q := m.queue
		m.queue = nil
		m.mu.Unlock()
		for _, r := range q {
			if ctx.Err() != nil {
				return
			}
			_ = st.Send(r)
		}
	}
}

// endLocked ends s's follow; alone says the caller is to follow it alone.
// Caller holds m.mu.
func (m *Mux) endLocked(s *sub, alone bool) {
	if m.subs[s.id] == s {
		delete(m.subs, s.id)
	}
	select {
	case <-s.ended:
	default:
		s.alone = alone
		close(s.ended)
	}
}

// run keeps a stream open while VMs are followed.
func (m *Mux) run() {
	defer close(m.done)
	for m.waitForSubs() {
		ctx, cancel := context.WithCancel(m.ctx)
		st, err := m.open(ctx)
		if err == nil {
			err = m.serve(ctx, cancel, st)
		}
		cancel()
		if m.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errors.ErrUnsupported) {
			m.opts.Logger.Debug("plugin does not follow consoles together; following each alone", "error", err)
			m.mu.Lock()
			m.unsupported = true
			for _, s := range m.subs {
				m.endLocked(s, true)
			}
			m.mu.Unlock()
			return
		}
		m.opts.Logger.Debug("console stream failed", "error", err)
		m.mu.Lock()
		for _, s := range m.subs {
			s.failures++
			if s.failures >= m.opts.Retries {
				m.endLocked(s, false)
			}
		}
		m.mu.Unlock()
		if !sleep(m.ctx, m.opts.RetryDelay) {
			return
		}
	}
}

// waitForSubs waits until some VM is followed; false once m is closed.
func (m *Mux) waitForSubs() bool {
	for {
		m.mu.Lock()
		n := len(m.subs)
		m.mu.Unlock()
		if n > 0 {
			return true
		}
		select {
		case <-m.ctx.Done():
			return false
		case <-m.kick:
		}
	}
}

// serve follows every VM on st and copies what comes until st fails;
// cancel ends st (and ctx, which it lasts for).
func (m *Mux) serve(ctx context.Context, cancel context.CancelFunc, st hypervisor.ConsoleStream) error {
	m.mu.Lock()
	m.stream = st
	m.queue = nil
	for _, s := range m.subs {
		m.sendLocked(s.request())
	}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.stream, m.queue = nil, nil
		m.mu.Unlock()
	}()
	// The requests go out while lines come in: the plugin may answer
	// the first before it reads the last.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { m.sendQueued(ctx, st) })
	var retries sync.WaitGroup
	defer retries.Wait()
	defer cancel() // first: nothing waited for above may wait on st
	var buf []console.Line
	for {
		msg, err := st.Recv()
		if err != nil {
			return err
		}
		got := len(msg.GetLines()) > 0 || msg.GetPacked() != nil
		m.mu.Lock()
		s := m.subs[msg.GetId()]
		if s != nil && got {
			s.failures = 0
		}
		m.mu.Unlock()
		if s == nil {
			continue // stopped meanwhile
		}
		if got {
			buf = lines(buf[:0], msg.GetLines())
			if buf, err = unpack(buf, msg.GetPacked()); err != nil {
				return fmt.Errorf("console of %s: %w", s.id, err)
			}
			s.ring.AppendBatch(buf)
			clear(buf)
			if cap(buf) > maxReuse {
				buf = nil
			}
		}
		if msg.GetEnd() {
			m.ended(ctx, st, s, hypervisor.FollowEndError(msg), &retries)
		}
	}
}

// ended handles the end of s's console on st: over for good, or to be
// followed again after RetryDelay when it failed.
func (m *Mux) ended(ctx context.Context, st hypervisor.ConsoleStream, s *sub, err error, retries *sync.WaitGroup) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil || errors.Is(err, hypervisor.ErrUnknownVM) {
		m.endLocked(s, false)
		return
	}
	m.opts.Logger.Debug("console follow failed", "run", s.id, "error", err)
	s.failures++
	if s.failures >= m.opts.Retries {
		m.endLocked(s, false)
		return
	}
	retries.Go(func() {
		if !sleep(ctx, m.opts.RetryDelay) {
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.subs[s.id] == s && m.stream == st {
			m.sendLocked(s.request())
		}
	})
}

// lines appends the lines of a message to buf, as ring lines.
func lines(buf []console.Line, ls []*pluginv1.ConsoleLine) []console.Line {
	for _, l := range ls {
		buf = append(buf, console.Line{Time: time.Unix(0, l.GetTimeNs()), Text: l.GetText(), Truncated: l.GetTruncated(), Dropped: l.GetDropped()})
	}
	return buf
}

// maxReuse is the most lines of the buffer serve keeps between
// messages, so that one burst's large buffer does not stay forever.
const maxReuse = 1 << 13

// unpack appends the lines of p (nil: none) to buf, a marker first when
// lines were lost before them. Their texts share p's, which the ring
// copies what it keeps of.
func unpack(buf []console.Line, p *pluginv1.PackedLines) ([]console.Line, error) {
	if p == nil {
		return buf, nil
	}
	r := consolepack.Run{Count: p.GetCount(), Dropped: p.GetDropped(), StartNs: p.GetStartNs(), Deltas: p.GetDeltas(), Text: p.GetText(), Truncated: p.GetTruncated()}
	return consolepack.Unpack(buf, r,
		func(t int64, dropped uint64) console.Line {
			return console.Line{Time: time.Unix(0, t), Dropped: dropped}
		},
		func(t int64, text string) console.Line { return console.Line{Time: time.Unix(0, t), Text: text} },
		func(l *console.Line) { l.Truncated = true })
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
