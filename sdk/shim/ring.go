package shim

import (
	"bytes"
	"io"
	"sort"
	"sync"
	"time"
	"unicode/utf8"
)

// Bounds of what the ring keeps for followers beyond its history. A
// follower that reads more slowly than the tender writes may fall behind
// the history's bounds by this much before it loses lines; the reader of
// the tender's pipe never waits for it. The lines are kept only while a
// follower needs them, so an idle shim's memory does not grow.
const (
	// followSlackLines is the most lines kept for lagging followers.
	followSlackLines = 1 << 16
	// followSlackBytes is the most text kept for lagging followers.
	followSlackBytes = 4 << 20
	// batchLines and batchBytes bound the lines handed to a follower at
	// once, so that one response stays well below what clients accept
	// (maxResponse) while a burst still costs few responses.
	batchLines = 4096
	batchBytes = 256 << 10
)

// ring is the console history of one tender: timestamped lines bounded by
// count and total text bytes, oldest dropped first. Followers read it
// through cursors and are woken through a broadcast channel, so a slow
// follower never holds up the reader of the tender's pipe; lines a cursor
// has not read yet are kept past the history's bounds up to the follow
// slack, and a cursor that falls further behind is told how many lines it
// lost. It is safe for concurrent use.
type ring struct {
	mu         sync.Mutex
	lines      []Line // oldest first: lines kept for followers, then the history
	first      uint64 // sequence number of lines[0]
	hist       int    // the newest hist lines form the history
	histBytes  int    // text bytes of the history
	extraBytes int    // text bytes of the lines before the history
	maxLines   int
	maxBytes   int
	slackLines int
	slackBytes int
	cursors    map[*cursor]struct{}
	last       time.Time
	notify     chan struct{} // closed and replaced on every change
	closed     bool
	now        func() time.Time
}

// cursor is a follower's position in a ring: the sequence number of the
// next line it reads. Its fields are guarded by the ring's lock.
type cursor struct {
	next uint64
}

func newRing(maxLines, maxBytes int) *ring {
	return &ring{
		maxLines: maxLines, maxBytes: maxBytes,
		slackLines: followSlackLines, slackBytes: followSlackBytes,
		cursors: map[*cursor]struct{}{}, notify: make(chan struct{}), now: time.Now,
	}
}

// add appends a line stamped t; see addLines.
func (r *ring) add(t time.Time, text string, truncated bool) {
	r.addLines([]Line{{Time: t, Text: text, Truncated: truncated}})
}

// addLines appends lines (their times are adjusted in place), forcing
// timestamps to increase strictly so that since-queries can resume
// without ambiguity, and wakes followers once for all of them.
func (r *ring) addLines(lines []Line) {
	if len(lines) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	for i := range lines {
		l := &lines[i]
		t := l.Time.Round(0).UTC()
		if !t.After(r.last) {
			t = r.last.Add(time.Nanosecond)
		}
		r.last, l.Time = t, t
		r.lines = append(r.lines, *l)
		r.hist++
		r.histBytes += len(l.Text)
		for r.hist > 1 && (r.hist > r.maxLines || r.histBytes > r.maxBytes) {
			n := len(r.lines[len(r.lines)-r.hist].Text)
			r.hist--
			r.histBytes -= n
			r.extraBytes += n
		}
	}
	r.trim()
	close(r.notify)
	r.notify = make(chan struct{})
}

// trim drops the lines before the history that no cursor still needs, and
// those beyond the follow slack. Caller holds r.mu.
func (r *ring) trim() {
	need := r.first + uint64(len(r.lines)) // no cursor: nothing is needed
	for c := range r.cursors {
		need = min(need, c.next)
	}
	for len(r.lines) > r.hist {
		extra := len(r.lines) - r.hist
		if r.first >= need && extra <= r.slackLines && r.extraBytes <= r.slackBytes {
			return
		}
		r.extraBytes -= len(r.lines[0].Text)
		r.lines[0] = Line{}
		r.lines = r.lines[1:]
		r.first++
	}
}

// close marks the end of the console: no line will be added any more and
// followers end once they have caught up.
func (r *ring) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		close(r.notify)
	}
}

// historyLocked returns a copy of the history's lines at or after since
// (zero: no bound), the newest count of them (0: all). Caller holds r.mu.
func (r *ring) historyLocked(since time.Time, count int) []Line {
	h := r.lines[len(r.lines)-r.hist:]
	start := 0
	if !since.IsZero() {
		start = sort.Search(len(h), func(i int) bool { return !h[i].Time.Before(since) })
	}
	if count > 0 && len(h)-start > count {
		start = len(h) - count
	}
	return append([]Line(nil), h[start:]...)
}

// history returns a copy of the lines at or after since (zero: no bound),
// the newest count of them (0: all), and the sequence number that follows
// the newest line in the ring.
func (r *ring) history(since time.Time, count int) ([]Line, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.historyLocked(since, count), r.first + uint64(len(r.lines))
}

// follow returns the selected history, as history does, and a cursor
// placed just after the newest line, so that the follower misses no line
// between the two. The cursor must be released with unfollow.
func (r *ring) follow(since time.Time, count int) ([]Line, *cursor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &cursor{next: r.first + uint64(len(r.lines))}
	r.cursors[c] = struct{}{}
	return r.historyLocked(since, count), c
}

// unfollow releases a cursor, so that the lines kept for it can go.
func (r *ring) unfollow(c *cursor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.cursors, c)
	r.trim()
}

// read returns a copy of the next lines for c (at most batchLines and
// about batchBytes of them) and advances c past them. It also returns how
// many lines c lost because it fell behind the follow slack, whether more
// lines are ready at once, a channel closed on the next change and whether
// the ring is closed (then, once more is false, c has read every line).
func (r *ring) read(c *cursor) (lines []Line, dropped uint64, more bool, changed <-chan struct{}, closed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.next < r.first {
		dropped = r.first - c.next
		c.next = r.first
	}
	end := r.first + uint64(len(r.lines))
	if c.next < end {
		rest := r.lines[c.next-r.first:]
		lines = append([]Line(nil), rest[:chunkLen(rest)]...)
	}
	c.next += uint64(len(lines))
	r.trim()
	return lines, dropped, c.next < end, r.notify, r.closed
}

// seq returns the sequence number the next line will get, which counts
// every line ever added.
func (r *ring) seq() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first + uint64(len(r.lines))
}

// all returns a copy of every line in the history.
func (r *ring) all() []Line {
	lines, _ := r.history(time.Time{}, 0)
	return lines
}

// readConsole splits what src produces into lines and adds them to r until
// src reports an error or EOF, all the lines completed by one read at
// once. Lines longer than lineMax bytes are cut (at a rune boundary) and
// marked truncated; a final line without a newline is still added. A
// line's time is that of the read that brought its first byte.
func readConsole(src io.Reader, r *ring, lineMax int) {
	buf := make([]byte, 64<<10)
	cur := make([]byte, 0, 256)
	var (
		batch  []Line
		inLine bool
		cut    bool
		start  time.Time
	)
	emit := func() {
		text := cur
		if cut {
			text = trimPartialRune(text)
		} else {
			text = bytes.TrimSuffix(text, []byte{'\r'})
		}
		batch = append(batch, Line{Time: start, Text: string(text), Truncated: cut})
		cur, inLine, cut = cur[:0], false, false
	}
	for {
		n, err := src.Read(buf)
		data := buf[:n]
		var now time.Time
		if n > 0 {
			now = r.now()
		}
		for len(data) > 0 {
			if !inLine {
				inLine, start = true, now
			}
			seg := data
			nl := bytes.IndexByte(data, '\n')
			if nl >= 0 {
				seg, data = data[:nl], data[nl+1:]
			} else {
				data = nil
			}
			if room := lineMax - len(cur); len(seg) > room {
				seg, cut = seg[:room], true
			}
			cur = append(cur, seg...)
			if nl >= 0 {
				emit()
			}
		}
		if err != nil && inLine {
			emit()
		}
		r.addLines(batch)
		clear(batch)
		batch = batch[:0]
		if err != nil {
			return
		}
	}
}

// trimPartialRune drops an incomplete UTF-8 sequence that a cut left at the
// end of b.
func trimPartialRune(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			return b
		}
	}
	return b
}
