package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/sdk/consolepack"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/shim"
)

// ConsoleStream is one FollowConsoles stream: requests start and stop
// following VMs, and messages bring their lines, each tagged with its VM.
// Send and Recv may be called at the same time, but neither by two
// goroutines at once.
type ConsoleStream interface {
	Send(*pluginv1.FollowConsolesRequest) error
	Recv() (*pluginv1.FollowConsolesMessage, error)
}

// ConsoleFollower is a Hypervisor that can follow many VMs' consoles over
// one stream (the client petreld holds for a plugin), which costs a
// plugin and petreld far less per VM than a Console stream each. Only
// plugins whose capabilities set FollowsConsoles serve it; with others
// the stream fails with an error wrapping errors.ErrUnsupported.
type ConsoleFollower interface {
	FollowConsoles(ctx context.Context) (ConsoleStream, error)
}

// ShimDirs is implemented by a backend whose VMs each run under a
// petrel-shim in a runtime directory of their own: ShimDir returns that
// of VM id (ErrUnknownVM when there is none). The FollowConsoles of such
// a backend reads every shim's console in one loop (shim.Watch) rather
// than with a Console call, and so a goroutine, for each VM.
type ShimDirs interface {
	ShimDir(id string) (string, error)
}

// FollowConsoles serves a FollowConsoles stream for impl: recv returns
// the caller's requests (io.EOF once it closed its side), and send, which
// is called by one goroutine at a time, delivers messages. It returns
// when recv fails, after every follower it started has stopped.
func FollowConsoles(ctx context.Context, impl Hypervisor, recv func() (*pluginv1.FollowConsolesRequest, error),
	send func(*pluginv1.FollowConsolesMessage) error) error {
	ctx, cancel := context.WithCancel(ctx)
	set := &followSet{impl: impl, send: send, follows: map[string]*following{}}
	var w watcher
	if sd, ok := impl.(ShimDirs); ok {
		w = newShimWatcher(sd, set)
	} else {
		w = &consoleWatcher{ctx: ctx, set: set}
	}
	defer func() {
		cancel()
		w.close()
	}()
	for {
		req, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetStop() {
			w.stop(req.GetId())
		} else {
			w.start(req.GetId(), req.GetSinceNs(), req.GetPacked())
		}
	}
}

// watcher follows the VMs one FollowConsoles stream asks for, and sends
// their lines through its followSet.
type watcher interface {
	// start follows id from sinceNs, in place of any earlier follow of it;
	// packed says the caller accepts lines packed.
	start(id string, sinceNs int64, packed bool)
	// stop ends the follow of id, after which nothing more is sent for it.
	stop(id string)
	// close stops every follow and waits until nothing more is sent.
	close()
}

// followSet sends one stream's messages, one at a time, and knows which
// follow of each VM is current, so that the end of a replaced or stopped
// follow is never reported.
type followSet struct {
	impl   Hypervisor
	sendMu sync.Mutex
	send   func(*pluginv1.FollowConsolesMessage) error

	mu      sync.Mutex
	follows map[string]*following
}

// following is one follow of a VM; a new one replaces it on a new start.
type following struct {
	cancel context.CancelFunc
}

// register makes f the current follow of id, stopping the one it
// replaces.
func (s *followSet) register(id string, f *following) {
	s.mu.Lock()
	old := s.follows[id]
	s.follows[id] = f
	s.mu.Unlock()
	if old != nil && old.cancel != nil {
		old.cancel()
	}
}

// unregister removes id's current follow and returns it (nil if none).
func (s *followSet) unregister(id string) *following {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.follows[id]
	delete(s.follows, id)
	return f
}

// lines sends lines of id. A send error means the stream is broken,
// which recv will report too; the follower stops.
func (s *followSet) lines(id string, lines []*pluginv1.ConsoleLine) error {
	if len(lines) == 0 {
		return nil
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.send(&pluginv1.FollowConsolesMessage{Id: id, Lines: lines})
}

// packed sends lines of id packed; errors as for lines.
func (s *followSet) packed(id string, p *pluginv1.PackedLines) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.send(&pluginv1.FollowConsolesMessage{Id: id, Packed: p})
}

// end reports that f, id's follow, ended with err (nil: the console
// ended), unless f is no longer current (stopped or replaced).
func (s *followSet) end(id string, f *following, err error) {
	s.mu.Lock()
	if s.follows[id] != f {
		s.mu.Unlock()
		return
	}
	delete(s.follows, id)
	s.mu.Unlock()
	m := &pluginv1.FollowConsolesMessage{Id: id, End: true}
	if err != nil {
		st, _ := status.FromError(toStatus(err))
		m.Code, m.Error = int32(st.Code()), st.Message()
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	_ = s.send(m)
}

// consoleWatcher follows each VM with a Console call of its own, for
// backends that are not ShimDirs.
type consoleWatcher struct {
	ctx context.Context
	set *followSet
	wg  sync.WaitGroup
}

func (w *consoleWatcher) start(id string, sinceNs int64, _ bool) {
	ctx, cancel := context.WithCancel(w.ctx)
	f := &following{cancel: cancel}
	w.set.register(id, f)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer cancel()
		req := &pluginv1.ConsoleRequest{Id: id, SinceNs: sinceNs, Follow: true, Batch: true}
		err := w.set.impl.Console(ctx, req, func(l *pluginv1.ConsoleLine) error {
			return w.set.lines(id, flatten(l))
		})
		if ctx.Err() != nil {
			return // stopped, replaced, or the stream is over
		}
		w.set.end(id, f, err)
	}()
}

func (w *consoleWatcher) stop(id string) {
	if f := w.set.unregister(id); f != nil {
		f.cancel()
	}
}

func (w *consoleWatcher) close() { w.wg.Wait() }

// flatten returns the lines of a console message, the head first, none
// of them carrying more.
func flatten(l *pluginv1.ConsoleLine) []*pluginv1.ConsoleLine {
	more := l.GetMore()
	if len(more) == 0 {
		return []*pluginv1.ConsoleLine{l}
	}
	out := make([]*pluginv1.ConsoleLine, 0, 1+len(more))
	l.More = nil
	return append(append(out, l), more...)
}

// clientConsoleStream is a FollowConsoles stream seen from petreld, with
// errors of the hypervisor classes.
type clientConsoleStream struct {
	s pluginv1.Hypervisor_FollowConsolesClient
}

func (c *clientConsoleStream) Send(r *pluginv1.FollowConsolesRequest) error {
	return followError(c.s.Send(r))
}

func (c *clientConsoleStream) Recv() (*pluginv1.FollowConsolesMessage, error) {
	m, err := c.s.Recv()
	return m, followError(err)
}

// followError turns a stream error into one of the hypervisor classes; a
// plugin that predates FollowConsoles gives errors.ErrUnsupported.
func followError(err error) error {
	if status.Code(err) == codes.Unimplemented {
		return fmt.Errorf("follow consoles: %w: %w", errors.ErrUnsupported, fromStatus(err))
	}
	return fromStatus(err)
}

// FollowEndError is the error a FollowConsolesMessage's end carries, of
// the hypervisor classes (ErrUnknownVM for an unknown VM), or nil when
// the console simply ended.
func FollowEndError(m *pluginv1.FollowConsolesMessage) error {
	if m.GetCode() == 0 {
		return nil
	}
	return fromStatus(status.Error(codes.Code(m.GetCode()), m.GetError()))
}

// shimWatcher follows the consoles of a ShimDirs backend's VMs with one
// shim.Watcher.
type shimWatcher struct {
	dirs ShimDirs
	set  *followSet
	w    *shim.Watcher
}

func newShimWatcher(dirs ShimDirs, set *followSet) *shimWatcher {
	return &shimWatcher{dirs: dirs, set: set, w: shim.NewWatcher()}
}

func (w *shimWatcher) start(id string, sinceNs int64, packed bool) {
	f := &following{}
	w.set.register(id, f)
	dir, err := w.dirs.ShimDir(id)
	if err != nil {
		w.w.Stop(id) // a follow this one replaces
		w.set.end(id, f, err)
		return
	}
	var since time.Time
	if sinceNs != 0 {
		since = time.Unix(0, sinceNs)
	}
	w.w.Follow(id, dir, since, func(b shim.Batch) error {
		if packed {
			if p := packBatch(b); p != nil {
				return w.set.packed(id, p)
			}
			return nil
		}
		if m := batchMessage(b); m != nil {
			return w.set.lines(id, flatten(m))
		}
		return nil
	}, func(err error) {
		if errors.Is(err, shim.ErrShimLost) {
			// Its output is over, and was not saved (as ShimConsole).
			err = nil
		}
		w.set.end(id, f, err)
	})
}

func (w *shimWatcher) stop(id string) {
	w.set.unregister(id)
	w.w.Stop(id)
}

func (w *shimWatcher) close() { w.w.Close() }

// packBatch packs the lines of a shim's batch (whose texts hold no
// newline, the shim having split them there) into one message, nil when
// the batch holds nothing.
func packBatch(b shim.Batch) *pluginv1.PackedLines {
	if len(b.Lines) == 0 && b.Dropped == 0 {
		return nil
	}
	r := consolepack.Pack(b.Lines, func(l *shim.Line) (int64, string, bool) { return l.Time.UnixNano(), l.Text, l.Truncated })
	return &pluginv1.PackedLines{Count: r.Count, Dropped: b.Dropped, StartNs: r.StartNs, Deltas: r.Deltas, Text: r.Text, Truncated: r.Truncated}
}
