package shim

import (
	"io"
	"strconv"
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
	if r.histBytes != 12 || r.first != 5 {
		t.Errorf("bytes %d first %d, want 12 and 5", r.histBytes, r.first)
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

	_, cur := r.follow(time.Time{}, 0)
	got, dropped, more, changed, closed := r.read(cur)
	if len(got) != 0 || dropped != 0 || more || closed || cur.next != 6 {
		t.Errorf("read at 6 = %v %d %v %v, next %d", got, dropped, more, closed, cur.next)
	}
	r.add(base.Add(time.Hour), "g", false)
	select {
	case <-changed:
	default:
		t.Error("add did not signal followers")
	}
	got, _, _, changed, _ = r.read(cur)
	wantTexts(t, "read", got, "g")
	r.close()
	select {
	case <-changed:
	default:
		t.Error("close did not signal followers")
	}
	r.add(base.Add(2*time.Hour), "late", false)
	got, _, more, _, closed = r.read(cur)
	if len(got) != 0 || more || !closed {
		t.Errorf("read after close: %v more=%v closed=%v", texts(got), more, closed)
	}
	r.unfollow(cur)
}

// TestRingFollowSlack checks that a follower behind the history's bounds
// still gets every line within the follow slack, that one further behind
// is told exactly how many lines it lost, and that the history and the
// lines kept stay bounded.
func TestRingFollowSlack(t *testing.T) {
	r := newRing(2, 100)
	r.slackLines, r.slackBytes = 5, 1000
	_, cur := r.follow(time.Time{}, 0)
	for i := 1; i <= 6; i++ {
		r.add(time.Now(), strconv.Itoa(i), false)
	}
	wantTexts(t, "history", r.all(), "5", "6")
	got, dropped, more, _, _ := r.read(cur)
	wantTexts(t, "within slack", got, "1", "2", "3", "4", "5", "6")
	if dropped != 0 || more {
		t.Errorf("within slack: dropped %d more %v", dropped, more)
	}
	if len(r.lines) != 2 {
		t.Errorf("%d lines kept once the follower caught up, want the 2 of the history", len(r.lines))
	}
	for i := 7; i <= 20; i++ {
		r.add(time.Now(), strconv.Itoa(i), false)
	}
	if len(r.lines) != 7 {
		t.Errorf("%d lines kept for a lagging follower, want 2 + slack 5", len(r.lines))
	}
	got, dropped, _, _, _ = r.read(cur)
	if dropped+uint64(len(got)) != 14 || dropped != 7 {
		t.Errorf("behind the slack: %d dropped + %v, want 7 dropped and 7 lines", dropped, texts(got))
	}
	wantTexts(t, "after the gap", got, "14", "15", "16", "17", "18", "19", "20")
	r.unfollow(cur)

	// Without followers nothing beyond the history is kept.
	for i := 21; i <= 30; i++ {
		r.add(time.Now(), strconv.Itoa(i), false)
	}
	if len(r.lines) != 2 || r.extraBytes != 0 {
		t.Errorf("%d lines (%d extra bytes) kept without followers, want 2 (0)", len(r.lines), r.extraBytes)
	}
}

// TestRingReadBatches checks that a read hands out at most batchLines
// lines and reports that more are ready.
func TestRingReadBatches(t *testing.T) {
	r := newRing(10, 1<<20)
	_, cur := r.follow(time.Time{}, 0)
	defer r.unfollow(cur)
	lines := make([]Line, batchLines+10)
	for i := range lines {
		lines[i] = Line{Time: time.Now(), Text: strconv.Itoa(i)}
	}
	r.addLines(lines)
	got, _, more, _, _ := r.read(cur)
	if len(got) != batchLines || !more {
		t.Fatalf("first read: %d lines more=%v, want %d and more", len(got), more, batchLines)
	}
	got, _, more, _, _ = r.read(cur)
	if len(got) != 10 || more || got[9].Text != strconv.Itoa(batchLines+9) {
		t.Fatalf("second read: %d lines more=%v", len(got), more)
	}
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

// TestBatchRoundTrip checks that a batch survives encoding, and that
// batches whose parts disagree are refused rather than trusted.
func TestBatchRoundTrip(t *testing.T) {
	base := time.Unix(1700000000, 5).UTC()
	lines := []Line{{Time: base, Text: "a"}, {Time: base.Add(3), Text: "", Truncated: true}, {Time: base.Add(time.Second), Text: "c é"}}
	b, err := encodeBatch(lines, 7).decode()
	if err != nil || b.Dropped != 7 || len(b.Lines) != 3 {
		t.Fatalf("round trip: %+v, %v", b, err)
	}
	for i := range lines {
		if !b.Lines[i].Time.Equal(lines[i].Time) || b.Lines[i].Text != lines[i].Text || b.Lines[i].Truncated != lines[i].Truncated {
			t.Errorf("line %d: %+v, want %+v", i, b.Lines[i], lines[i])
		}
	}
	if b, err := encodeBatch(nil, 3).decode(); err != nil || b.Dropped != 3 || len(b.Lines) != 0 {
		t.Errorf("marker only: %+v, %v", b, err)
	}
	for _, bad := range []batch{
		{N: 2, Deltas: []int64{1}, Text: "no newline"},
		{N: 2, Text: "a\nb"},
		{N: -1},
		{N: 0, Text: "x"},
		{N: 1, Text: "x", Truncated: []int{1}},
		{N: 1, Text: "x", Truncated: []int{-1}},
	} {
		if _, err := bad.decode(); err == nil {
			t.Errorf("malformed batch %+v accepted", bad)
		}
	}
}
