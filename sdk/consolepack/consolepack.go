// Package consolepack packs a run of console lines into one object, the
// form in which both the plugin contract (PackedLines) and the daemon API
// (PackedConsoleLines) carry them, and unpacks it: a busy console sends
// one message per batch instead of one per line, and its texts travel as
// one string.
//
// A run holds Count lines: the first at StartNs, each other one Deltas
// nanoseconds after the one before; their texts joined with newlines
// (so a text holding a newline cannot be packed, and goes as a line of
// its own); the indexes of the lines cut at the length limit; and, when
// lines were lost just before them, their number (a marker). A run of
// no lines is a marker alone, at StartNs.
package consolepack

import (
	"errors"
	"fmt"
	"strings"
)

// Run is a packed run of lines, with the fields both messages carry.
type Run struct {
	Count     uint32
	Dropped   uint64
	StartNs   int64
	Deltas    []int64
	Text      string
	Truncated []uint32
}

// Pack packs lines, each of which get describes: its time in Unix
// nanoseconds, its text (holding no newline) and whether it was cut.
// Dropped is left for the caller to set, and StartNs when lines is empty.
func Pack[L any](lines []L, get func(*L) (timeNs int64, text string, truncated bool)) Run {
	n := len(lines)
	r := Run{Count: uint32(n)}
	if n == 0 {
		return r
	}
	size := n - 1
	for i := range lines {
		_, text, _ := get(&lines[i])
		size += len(text)
	}
	var b strings.Builder
	b.Grow(size)
	r.Deltas = make([]int64, n-1)
	var prev int64
	for i := range lines {
		t, text, truncated := get(&lines[i])
		if i == 0 {
			r.StartNs = t
		} else {
			r.Deltas[i-1] = t - prev
			b.WriteByte('\n')
		}
		prev = t
		b.WriteString(text)
		if truncated {
			r.Truncated = append(r.Truncated, uint32(i))
		}
	}
	r.Text = b.String()
	return r
}

// Unpack appends the lines of r to buf, made by line, after a marker made
// by marker when lines were lost before them; truncate marks a line as
// cut. The texts share r.Text. A run whose parts disagree is refused, and
// buf comes back as it was.
func Unpack[L any](buf []L, r Run, marker func(timeNs int64, dropped uint64) L, line func(timeNs int64, text string) L, truncate func(*L)) ([]L, error) {
	n := int(r.Count)
	text, deltas := r.Text, r.Deltas
	if n == 0 {
		if len(deltas) != 0 || text != "" || len(r.Truncated) != 0 {
			return buf, errors.New("malformed packed console lines: content without lines")
		}
	} else if len(deltas) != n-1 || strings.Count(text, "\n") != n-1 {
		return buf, fmt.Errorf("malformed packed console lines: %d lines, %d time deltas, %d texts", n, len(deltas), strings.Count(text, "\n")+1)
	}
	for _, i := range r.Truncated {
		if int(i) >= n {
			return buf, fmt.Errorf("malformed packed console lines: truncated line %d of %d", i, n)
		}
	}
	t := r.StartNs
	if r.Dropped > 0 {
		buf = append(buf, marker(t, r.Dropped))
	}
	first := len(buf)
	for i := 0; i < n; i++ {
		if i > 0 {
			t += deltas[i-1]
		}
		l, rest, _ := strings.Cut(text, "\n")
		buf = append(buf, line(t, l))
		text = rest
	}
	for _, i := range r.Truncated {
		truncate(&buf[first+int(i)])
	}
	return buf, nil
}
