package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Watcher follows the consoles of many shims at once, as a plugin does
// for petreld with every VM it runs. On Linux one goroutine reads every
// shim's socket (epoll), so that a console that prints nothing costs a
// socket and a few hundred bytes rather than a goroutine, its stack and
// a read buffer; elsewhere each follow has a goroutine of its own. What
// a follow delivers is what ConsoleBatches with follow delivers, and a
// lagging follow loses lines in the shim, counted, without slowing the
// tender.
type Watcher struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // goroutines of the follows served without the loop

	mu     sync.Mutex
	cmds   []watchCmd // for the loop, in order
	closed bool
	loop   *watchLoop // nil where there is no loop (or it could not start)
	// solo are the follows served without the loop, each by a goroutine
	// of its own, by key.
	solo map[string]*soloFollow
}

// soloFollow is a follow served without the loop.
type soloFollow struct {
	cancel  context.CancelFunc
	stopped bool // guarded by Watcher.mu: Stop or a replacement ended it
}

// watchCmd asks the loop to take over a watch (w set) or to stop the
// watch of a key.
type watchCmd struct {
	key string
	w   *watch
}

// watch is one followed console.
type watch struct {
	key   string
	c     *Client
	since time.Time
	last  time.Time // time of the last line delivered, zero if none
	fn    func(Batch) error
	end   func(error)
	fd    int
	// partial holds the start of a response line not yet complete; nil
	// between responses, so an idle watch holds no buffer.
	partial []byte
}

// NewWatcher returns a Watcher; Close stops it.
func NewWatcher() *Watcher { return newWatcher(true) }

// newWatcher returns a Watcher with its loop where loop is true and the
// system has one, else one that serves every follow with a goroutine.
func newWatcher(loop bool) *Watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{ctx: ctx, cancel: cancel, solo: map[string]*soloFollow{}}
	if loop {
		w.loop = startLoop(w)
	}
	return w
}

// Follow calls fn, one call at a time, with the console lines of the shim
// serving dir: those at or after since (zero: all it keeps), then new ones
// until the tender exits and every line was delivered. It then calls end
// once, with nil, or with the error that ended the follow (an error of
// fn's included; ErrShimLost as ConsoleBatches returns it). A follow of a
// key already followed replaces that follow; Stop ends it without a call
// of end. fn and end are called from the Watcher's goroutines and must
// not call the Watcher.
func (w *Watcher) Follow(key, dir string, since time.Time, fn func(Batch) error, end func(error)) {
	wt := &watch{key: key, c: Dial(dir), since: since, fn: fn, end: end, fd: -1}
	if w.loop != nil {
		if fd, err := wt.c.openConsole(w.ctx, since); err == nil {
			wt.fd = fd
			if w.command(watchCmd{key: key, w: wt}) {
				return
			}
			closeFD(fd)
			return
		}
	}
	// The shim did not answer (gone, perhaps with its files left) or
	// there is no loop: ConsoleBatches serves it.
	w.Stop(key) // a follow it replaces stops
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	ctx, cancel := context.WithCancel(w.ctx)
	sf := &soloFollow{cancel: cancel}
	w.solo[key] = sf
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		err := wt.c.ConsoleBatches(ctx, since, 0, true, fn)
		cancel()
		w.mu.Lock()
		if w.solo[key] == sf {
			delete(w.solo, key)
		}
		stopped := sf.stopped
		w.mu.Unlock()
		if !stopped {
			end(err)
		}
	}()
}

// Stop ends the follow of key, if there is one; end is not called for it.
func (w *Watcher) Stop(key string) {
	w.command(watchCmd{key: key})
	w.mu.Lock()
	defer w.mu.Unlock()
	if sf := w.solo[key]; sf != nil {
		sf.stopped = true
		sf.cancel()
		delete(w.solo, key)
	}
}

// command queues c for the loop; it reports false when nothing takes it
// (no loop, or the Watcher is closed).
func (w *Watcher) command(c watchCmd) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.loop == nil {
		return false
	}
	w.cmds = append(w.cmds, c)
	w.loop.wake()
	return true
}

// takeCommands returns the queued commands.
func (w *Watcher) takeCommands() []watchCmd {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.cmds
	w.cmds = nil
	return c
}

// Close stops every follow and returns once no fn or end runs any more.
func (w *Watcher) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	if w.loop != nil {
		w.loop.stop()
	}
	w.wg.Wait()
}

// openConsole connects to the shim and asks for its console from since,
// followed, in batches; it returns the non-blocking socket.
func (c *Client) openConsole(ctx context.Context, since time.Time) (int, error) {
	req := request{Op: "console", Follow: true, Batch: true}
	if !since.IsZero() {
		req.Since = since.Format(time.RFC3339Nano)
	}
	data, err := json.Marshal(req)
	if err != nil {
		return -1, fmt.Errorf("encode request: %w", err)
	}
	fd, err := dialRaw(ctx, c.socket())
	if err != nil {
		return -1, err
	}
	// A fresh connection's send buffer takes a short request whole.
	if err := writeAll(fd, append(data, '\n')); err != nil {
		closeFD(fd)
		return -1, fmt.Errorf("send console request to %s: %w", c.socket(), err)
	}
	return fd, nil
}

// errResponseTooLong is a response line longer than any the shim sends.
var errResponseTooLong = errors.New("response line too long")

// consume takes bytes read from wt's socket; it returns done once the
// follow is over, with its outcome.
func (wt *watch) consume(data []byte) (done bool, err error) {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if len(wt.partial)+len(data) > maxResponse {
				return true, fmt.Errorf("read console response from %s: %w", wt.c.socket(), errResponseTooLong)
			}
			wt.partial = append(wt.partial, data...)
			return false, nil
		}
		line := data[:i]
		if len(wt.partial) > 0 {
			line = append(wt.partial, line...)
		}
		data = data[i+1:]
		done, err := wt.response(line)
		wt.partial = nil
		if done || err != nil {
			return true, err
		}
	}
	return false, nil
}

// response handles one response line.
func (wt *watch) response(line []byte) (bool, error) {
	var r response
	if err := decodeResponse(line, &r); err != nil {
		return true, fmt.Errorf("parse console response from %s: %w", wt.c.socket(), err)
	}
	if r.Error != "" {
		if r.ErrorCode == codeExited {
			return true, ErrExited
		}
		return true, fmt.Errorf("shim %s: console: %s", wt.c.dir, r.Error)
	}
	return wt.c.consoleResponse(r, &wt.last, wt.fn)
}

// broken finishes a follow whose connection ended before the console
// did, as ConsoleBatches does: from the files the shim left.
func (wt *watch) broken(cause error) error {
	connErr := fmt.Errorf("read console response from %s: %w: %w", wt.c.socket(), errGone, cause)
	return wt.c.consoleFromFile(connErr, wt.since, 0, wt.last, wt.fn)
}

// writeAll writes data to the non-blocking socket fd, which must take it
// without waiting.
func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// closeFD closes a socket the Watcher owns.
func closeFD(fd int) { _ = unix.Close(fd) }
