// Package console keeps petreld's copy of each VM's console: a bounded ring
// of timestamped lines that outlives the VM (so an exited VM's last words
// can still be read), history queries by time or count, and live fan-out
// to a capped number of followers, none of which can slow the VM down.
package console

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Line is one console line.
type Line struct {
	Time      time.Time
	Text      string
	Truncated bool
	// Dropped is set on a marker line (without text) telling a follower
	// how many lines it missed, at this point of the stream, because it
	// or the path from the VM read too slowly.
	Dropped uint64
}

// ErrTooManyFollowers is returned when a VM already has the maximum number
// of live followers.
var ErrTooManyFollowers = errors.New("too many console followers for this VM")

// Ring is a VM's console history plus its live followers. It is safe for
// concurrent use.
type Ring struct {
	mu        sync.Mutex
	lines     []Line // oldest first
	bytes     int
	maxLines  int
	maxBytes  int
	maxSubs   int
	subs      map[*Follower]struct{}
	closed    bool
	lastTime  time.Time
	lastTexts []string // texts of the trailing lines that share lastTime
	scratch   []Line   // AppendBatch's buffer, kept between calls
	// followLines and followBytes bound each follower's queue.
	followLines int
	followBytes int
}

// Bounds of one follower's queue of lines not yet taken: how far a
// follower may fall behind the VM's output before it loses lines. The
// queue holds lines only while the follower lags.
const (
	// FollowLines is the most lines queued for one follower.
	FollowLines = 1 << 16
	// FollowBytes is the most text queued for one follower.
	FollowBytes = 8 << 20
	// reuseLines is the largest queue buffer Take keeps for reuse.
	reuseLines = 4096
)

// NewRing returns a ring bounded by maxLines and maxBytes of text, with at
// most maxFollowers live followers.
func NewRing(maxLines, maxBytes, maxFollowers int) *Ring {
	return &Ring{maxLines: maxLines, maxBytes: maxBytes, maxSubs: maxFollowers, subs: map[*Follower]struct{}{},
		followLines: FollowLines, followBytes: FollowBytes}
}

// Capacity is the most lines the ring can hold, the upper bound of a count
// query.
func (r *Ring) Capacity() int { return r.maxLines }

// Append adds a line, unless it is a duplicate of one already appended (a
// re-subscription to the shim replays lines at or after the last seen
// timestamp; duplicates are recognised by timestamp and text). It returns
// whether the line was new.
func (r *Ring) Append(l Line) bool {
	return r.AppendBatch([]Line{l}) == 1
}

// AppendBatch adds lines in order, as Append does, under one lock and with
// one wake-up per follower, which is what keeps a busy console cheap. A
// line with Dropped set is not kept: it tells followers that lines were
// lost before the ones after it (upstream fell behind the VM's output).
// It returns how many lines were new.
func (r *Ring) AppendBatch(lines []Line) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	// The new lines (and markers) in order, for the followers: lines
	// itself unless some are duplicates, which are left out of a copy.
	fresh, copied := lines, false
	added := 0
	for i, l := range lines {
		if l.Dropped == 0 {
			if !r.isNew(l) {
				if !copied {
					fresh, copied = append(r.scratch[:0], lines[:i]...), true
				}
				continue
			}
			added++
		}
		if copied {
			fresh = append(fresh, l)
		}
	}
	r.keep(fresh, added)
	for f := range r.subs {
		f.offerAll(fresh, added)
		f.wake()
	}
	if copied {
		clear(fresh)
		if cap(fresh) <= reuseLines {
			r.scratch = fresh[:0]
		} else {
			r.scratch = nil
		}
	}
	return added
}

// keep adds to the history those of the n lines in fresh (markers aside)
// that its bounds let it keep: only the newest that fit are copied in.
// Caller holds r.mu.
func (r *Ring) keep(fresh []Line, n int) {
	// Find the oldest of the new lines the bounds keep: at most maxLines
	// of them, and no more than maxBytes of text unless a line alone.
	start, count, size := len(fresh), 0, 0
	for start > 0 {
		l := &fresh[start-1]
		if l.Dropped == 0 {
			if count == r.maxLines || (count > 0 && size+len(l.Text) > r.maxBytes) {
				break
			}
			count++
			size += len(l.Text)
		}
		start--
	}
	kept := 0
	for i := start; i < len(fresh); i++ {
		if fresh[i].Dropped == 0 {
			r.lines = append(r.lines, fresh[i])
			r.bytes += len(fresh[i].Text)
			kept++
		}
	}
	for len(r.lines) > r.maxLines || (r.bytes > r.maxBytes && len(r.lines) > 1) {
		r.bytes -= len(r.lines[0].Text)
		r.lines[0] = Line{}
		r.lines = r.lines[1:]
	}
	r.own(kept)
}

// isNew reports whether l is not a duplicate of a line already appended,
// and notes it for the next. Caller holds r.mu.
func (r *Ring) isNew(l Line) bool {
	if l.Time.Before(r.lastTime) {
		return false
	}
	if l.Time.Equal(r.lastTime) {
		for _, t := range r.lastTexts {
			if t == l.Text {
				return false
			}
		}
		r.lastTexts = append(r.lastTexts, l.Text)
	} else {
		r.lastTime = l.Time
		r.lastTexts = append(r.lastTexts[:0], l.Text)
	}
	return true
}

// own gives the newest n lines of the history that are still kept (those
// one AppendBatch added) texts of their own, copied into one string: the
// caller's texts may be cut from a much larger buffer (a whole message of
// the plugin's), which the history would otherwise hold on to after all
// but a few of its lines are gone. Caller holds r.mu.
func (r *Ring) own(n int) {
	n = min(n, len(r.lines))
	if n == 0 {
		return
	}
	tail := r.lines[len(r.lines)-n:]
	size := 0
	for i := range tail {
		size += len(tail[i].Text)
	}
	var b strings.Builder
	b.Grow(size)
	for i := range tail {
		b.WriteString(tail[i].Text)
	}
	text := b.String()
	for i := range tail {
		k := len(tail[i].Text)
		tail[i].Text, text = text[:k], text[k:]
	}
	// The texts kept to recognise duplicates are those of the newest
	// lines, which share the newest time.
	k := 0
	for k < len(r.lastTexts) && k < len(r.lines) && r.lines[len(r.lines)-1-k].Time.Equal(r.lastTime) {
		k++
	}
	if k == len(r.lastTexts) {
		for j := range r.lastTexts {
			r.lastTexts[j] = r.lines[len(r.lines)-k+j].Text
		}
	}
}

// LastTime is the timestamp of the newest line, zero when empty; the point
// from which to resume a subscription to the shim.
func (r *Ring) LastTime() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastTime
}

// History returns the lines at or after since (zero: no bound), at most
// the last count of them (0: all). A negative count is refused.
func (r *Ring) History(since time.Time, count int) ([]Line, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.historyLocked(since, count)
}

func (r *Ring) historyLocked(since time.Time, count int) ([]Line, error) {
	if count < 0 {
		return nil, fmt.Errorf("console line count must not be negative, got %d", count)
	}
	start := 0
	if !since.IsZero() {
		for start < len(r.lines) && r.lines[start].Time.Before(since) {
			start++
		}
	}
	sel := r.lines[start:]
	if count > 0 && len(sel) > count {
		sel = sel[len(sel)-count:]
	}
	return append([]Line(nil), sel...), nil
}

// Follow returns the selected history and a follower that receives every
// later line, atomically (no line is missed or repeated between them).
// The follower must be closed by the caller.
func (r *Ring) Follow(since time.Time, count int) ([]Line, *Follower, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hist, err := r.historyLocked(since, count)
	if err != nil {
		return nil, nil, err
	}
	if len(r.subs) >= r.maxSubs {
		return nil, nil, fmt.Errorf("%w (at most %d)", ErrTooManyFollowers, r.maxSubs)
	}
	f := &Follower{ring: r, maxLines: r.followLines, maxBytes: r.followBytes, ready: make(chan struct{}, 1), done: make(chan struct{})}
	if r.closed {
		close(f.done)
	} else {
		r.subs[f] = struct{}{}
	}
	return hist, f, nil
}

// CloseFollowers ends every live follower (the VM exited or was
// destroyed); the history stays readable.
func (r *Ring) CloseFollowers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for f := range r.subs {
		delete(r.subs, f)
		close(f.done)
	}
}

// SetClosed marks whether new followers should end at once (no VM is
// producing output) and, when closing, ends current followers.
func (r *Ring) SetClosed(closed bool) {
	r.mu.Lock()
	r.closed = closed
	r.mu.Unlock()
	if closed {
		r.CloseFollowers()
	}
}

// Follower receives live lines from a Ring. Lines wait in a queue of its
// own until the follower takes them; when the queue is full, further lines
// are lost for this follower only (the VM and other followers never wait
// for it) and a marker line (Dropped set) takes their place in the queue,
// counting them.
type Follower struct {
	ring     *Ring
	ready    chan struct{} // holds a token while lines wait
	done     chan struct{}
	maxLines int
	maxBytes int
	// Guarded by ring.mu:
	pending []Line // waiting lines and markers, oldest first
	bytes   int    // text bytes of pending
	lost    uint64 // lines lost since the last marker queued
}

// offer queues l, or counts it lost when the queue is full. Caller holds
// ring.mu.
func (f *Follower) offer(l Line) {
	// One slot stays free for the marker Take may add.
	if len(f.pending)+1 >= f.maxLines || (len(f.pending) > 0 && f.bytes+len(l.Text) > f.maxBytes) {
		f.lost++
		return
	}
	if f.lost > 0 {
		f.pending = append(f.pending, Line{Time: l.Time, Dropped: f.lost})
		f.lost = 0
	}
	f.pending = append(f.pending, l)
	f.bytes += len(l.Text)
}

// offerAll offers the lines of fresh in order, n of which are lines
// rather than markers (whose counts it records as lost). Caller holds
// ring.mu.
func (f *Follower) offerAll(fresh []Line, n int) {
	if room := f.maxLines - len(f.pending); n > 0 && room > 1 {
		// Room for them all, and for a marker each, at once.
		f.pending = slices.Grow(f.pending, min(len(fresh), room))
	}
	for _, l := range fresh {
		if l.Dropped > 0 {
			f.lose(l.Dropped)
		} else {
			f.offer(l)
		}
	}
}

// lose records n lines lost before the next one queued. Caller holds
// ring.mu.
func (f *Follower) lose(n uint64) { f.lost += n }

// wake tells the follower lines wait. Caller holds ring.mu.
func (f *Follower) wake() {
	if len(f.pending) == 0 && f.lost == 0 {
		return
	}
	select {
	case f.ready <- struct{}{}:
	default:
	}
}

// Ready receives a value when lines wait to be taken.
func (f *Follower) Ready() <-chan struct{} { return f.ready }

// Take returns the waiting lines, oldest first, ending with a marker when
// lines were lost after them, and empties the queue; nil when nothing
// waits. buf, when it has room, is reused for the result (pass the
// previous result once done with it).
func (f *Follower) Take(buf []Line) []Line {
	f.ring.mu.Lock()
	defer f.ring.mu.Unlock()
	if len(f.pending) == 0 && f.lost == 0 {
		return nil
	}
	out := f.pending
	if f.lost > 0 {
		out = append(out, Line{Dropped: f.lost})
		f.lost = 0
	}
	if cap(buf) > reuseLines {
		buf = nil // let a burst's large queue go once it is drained
	}
	clear(buf)
	f.pending, f.bytes = buf[:0], 0
	return out
}

// Done is closed when no more lines will come; lines may still wait to
// be taken.
func (f *Follower) Done() <-chan struct{} { return f.done }

// Close detaches the follower.
func (f *Follower) Close() {
	f.ring.mu.Lock()
	defer f.ring.mu.Unlock()
	if _, ok := f.ring.subs[f]; ok {
		delete(f.ring.subs, f)
		close(f.done)
	}
}
