// Package console keeps petreld's copy of each VM's console: a bounded ring
// of timestamped lines that outlives the VM (so an exited VM's last words
// can still be read), history queries by time or count, and live fan-out
// to a capped number of followers, none of which can slow the VM down.
package console

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Line is one console line.
type Line struct {
	Time      time.Time
	Text      string
	Truncated bool
	// Dropped is set on a marker line telling a follower how many lines it
	// missed because it read too slowly.
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
}

// NewRing returns a ring bounded by maxLines and maxBytes of text, with at
// most maxFollowers live followers.
func NewRing(maxLines, maxBytes, maxFollowers int) *Ring {
	return &Ring{maxLines: maxLines, maxBytes: maxBytes, maxSubs: maxFollowers, subs: map[*Follower]struct{}{}}
}

// Capacity is the most lines the ring can hold, the upper bound of a count
// query.
func (r *Ring) Capacity() int { return r.maxLines }

// Append adds a line, unless it is a duplicate of one already appended (a
// re-subscription to the shim replays lines at or after the last seen
// timestamp; duplicates are recognised by timestamp and text). It returns
// whether the line was new.
func (r *Ring) Append(l Line) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
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
	r.lines = append(r.lines, l)
	r.bytes += len(l.Text)
	for len(r.lines) > r.maxLines || (r.bytes > r.maxBytes && len(r.lines) > 1) {
		r.bytes -= len(r.lines[0].Text)
		r.lines[0] = Line{}
		r.lines = r.lines[1:]
	}
	for f := range r.subs {
		f.offer(l)
	}
	return true
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
	f := &Follower{ring: r, ch: make(chan Line, 256), done: make(chan struct{})}
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

// Follower receives live lines from a Ring.
type Follower struct {
	ring    *Ring
	ch      chan Line
	done    chan struct{}
	dropped uint64 // guarded by ring.mu
}

// offer delivers l without blocking; a follower that is full loses the
// line and is told how many it lost with its next delivered line.
func (f *Follower) offer(l Line) {
	if f.dropped > 0 {
		select {
		case f.ch <- Line{Time: l.Time, Dropped: f.dropped}:
			f.dropped = 0
		default:
			f.dropped++
			return
		}
	}
	select {
	case f.ch <- l:
	default:
		f.dropped++
	}
}

// Lines delivers live lines.
func (f *Follower) Lines() <-chan Line { return f.ch }

// Done is closed when no more lines will come.
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
