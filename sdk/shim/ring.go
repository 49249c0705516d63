package shim

import (
	"bytes"
	"io"
	"sort"
	"sync"
	"time"
	"unicode/utf8"
)

// ring is the console history of one tender: timestamped lines bounded by
// count and total text bytes, oldest dropped first. Followers poll it by
// sequence number and are woken through a broadcast channel, so a slow
// follower never holds up the reader of the tender's pipe. It is safe for
// concurrent use.
type ring struct {
	mu       sync.Mutex
	lines    []Line // oldest first
	first    uint64 // sequence number of lines[0]
	bytes    int
	maxLines int
	maxBytes int
	last     time.Time
	notify   chan struct{} // closed and replaced on every change
	closed   bool
	now      func() time.Time
}

func newRing(maxLines, maxBytes int) *ring {
	return &ring{maxLines: maxLines, maxBytes: maxBytes, notify: make(chan struct{}), now: time.Now}
}

// add appends a line stamped t, forcing timestamps to increase strictly so
// that since-queries can resume without ambiguity.
func (r *ring) add(t time.Time, text string, truncated bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	t = t.Round(0).UTC()
	if !t.After(r.last) {
		t = r.last.Add(time.Nanosecond)
	}
	r.last = t
	r.lines = append(r.lines, Line{Time: t, Text: text, Truncated: truncated})
	r.bytes += len(text)
	for len(r.lines) > 1 && (len(r.lines) > r.maxLines || r.bytes > r.maxBytes) {
		r.bytes -= len(r.lines[0].Text)
		r.lines[0] = Line{}
		r.lines = r.lines[1:]
		r.first++
	}
	close(r.notify)
	r.notify = make(chan struct{})
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

// history returns a copy of the lines at or after since (zero: no bound),
// the newest count of them (0: all), and the sequence number that follows
// the newest line in the ring.
func (r *ring) history(since time.Time, count int) ([]Line, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := 0
	if !since.IsZero() {
		start = sort.Search(len(r.lines), func(i int) bool { return !r.lines[i].Time.Before(since) })
	}
	if count > 0 && len(r.lines)-start > count {
		start = len(r.lines) - count
	}
	return append([]Line(nil), r.lines[start:]...), r.first + uint64(len(r.lines))
}

// after returns a copy of the lines from sequence number next on (skipping
// those already dropped), the sequence number after them, a channel closed
// on the next change and whether the ring is closed (then the copy holds
// every remaining line).
func (r *ring) after(next uint64) ([]Line, uint64, <-chan struct{}, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if next < r.first {
		next = r.first
	}
	end := r.first + uint64(len(r.lines))
	var out []Line
	if next < end {
		out = append(out, r.lines[next-r.first:]...)
	}
	return out, end, r.notify, r.closed
}

// seq returns the sequence number the next line will get, which counts
// every line ever added.
func (r *ring) seq() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first + uint64(len(r.lines))
}

// all returns a copy of every line in the ring.
func (r *ring) all() []Line {
	lines, _ := r.history(time.Time{}, 0)
	return lines
}

// readConsole splits what src produces into lines and adds them to r until
// src reports an error or EOF. Lines longer than lineMax bytes are cut (at
// a rune boundary) and marked truncated; a final line without a newline is
// still added.
func readConsole(src io.Reader, r *ring, lineMax int) {
	buf := make([]byte, 16<<10)
	cur := make([]byte, 0, 256)
	var (
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
		r.add(start, string(text), cut)
		cur, inLine, cut = cur[:0], false, false
	}
	for {
		n, err := src.Read(buf)
		data := buf[:n]
		for len(data) > 0 {
			if !inLine {
				inLine, start = true, r.now()
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
		if err != nil {
			if inLine {
				emit()
			}
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
