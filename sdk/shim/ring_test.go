package shim

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestRingBounds(t *testing.T) {
	r := newRing(3, 10)
	base := time.Unix(1000, 0)
	for i, s := range []string{"a", "bb", "ccc", "dddd"} {
		r.add(base.Add(time.Duration(i)*time.Second), s, false)
	}
	// Four lines exceed the line bound: "a" goes.
	wantTexts(t, "line bound", r.all(), "bb", "ccc", "dddd")
	r.add(base.Add(10*time.Second), "eeeee", false)
	// The byte bound then drops "bb" and "ccc".
	wantTexts(t, "byte bound", r.all(), "dddd", "eeeee")
	// A line larger than the byte bound alone is still kept.
	r.add(base.Add(11*time.Second), "ffffffffffff", false)
	wantTexts(t, "oversized line", r.all(), "ffffffffffff")
	if r.bytes != 12 || r.first != 5 {
		t.Errorf("bytes %d first %d, want 12 and 5", r.bytes, r.first)
	}
}

func TestRingQueries(t *testing.T) {
	r := newRing(100, 1000)
	base := time.Unix(1000, 0)
	for i := 0; i < 5; i++ {
		r.add(base.Add(time.Duration(i)*time.Second), string(rune('a'+i)), false)
	}
	// Equal and earlier timestamps are pushed forward by a nanosecond.
	r.add(base, "f", false)
	lines := r.all()
	if want := base.Add(4*time.Second + time.Nanosecond); !lines[5].Time.Equal(want) {
		t.Errorf("non-increasing time became %v, want %v", lines[5].Time, want)
	}

	h, next := r.history(base.Add(2*time.Second), 0)
	wantTexts(t, "since inclusive", h, "c", "d", "e", "f")
	h, _ = r.history(base.Add(2*time.Second), 2)
	wantTexts(t, "since+count", h, "e", "f")
	h, _ = r.history(time.Time{}, 10)
	wantTexts(t, "count above size", h, "a", "b", "c", "d", "e", "f")
	h, _ = r.history(base.Add(time.Hour), 0)
	wantTexts(t, "since after all", h)
	if next != 6 {
		t.Errorf("next = %d, want 6", next)
	}

	got, n, changed, closed := r.after(next)
	if len(got) != 0 || n != 6 || closed {
		t.Errorf("after(6) = %v %d %v", got, n, closed)
	}
	r.add(base.Add(time.Hour), "g", false)
	select {
	case <-changed:
	default:
		t.Error("add did not signal followers")
	}
	got, n, changed, _ = r.after(n)
	wantTexts(t, "after", got, "g")
	r.close()
	select {
	case <-changed:
	default:
		t.Error("close did not signal followers")
	}
	r.add(base.Add(2*time.Hour), "late", false)
	got, _, _, closed = r.after(n)
	if len(got) != 0 || !closed {
		t.Errorf("after close: %v closed=%v", texts(got), closed)
	}

	// A follower that fell behind the ring skips what was dropped.
	small := newRing(2, 100)
	for _, s := range []string{"1", "2", "3", "4"} {
		small.add(time.Now(), s, false)
	}
	got, _, _, _ = small.after(0)
	wantTexts(t, "slow follower", got, "3", "4")
}

// chunkReader returns its chunks one per Read, as a pipe might.
type chunkReader struct{ chunks []string }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func TestReadConsole(t *testing.T) {
	r := newRing(100, 1<<20)
	src := &chunkReader{chunks: []string{
		"hello\r\nwor", "ld\n", "\n",
		"0123456789", "abcdef\n", // 16 bytes, cut at 8
		"1234567é tail\n", // the cut falls inside "é"
		"short\n", "partial",
	}}
	readConsole(src, r, 8)
	lines := r.all()
	wantTexts(t, "lines", lines, "hello", "world", "", "01234567", "1234567", "short", "partial")
	for i, l := range lines {
		if want := i == 3 || i == 4; l.Truncated != want {
			t.Errorf("line %d (%q) truncated = %v, want %v", i, l.Text, l.Truncated, want)
		}
	}
	if strings.Contains(lines[4].Text, "\xc3") {
		t.Errorf("cut left a partial rune: %q", lines[4].Text)
	}
}
