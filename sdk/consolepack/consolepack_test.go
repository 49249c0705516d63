package consolepack

import (
	"reflect"
	"strings"
	"testing"
)

// line is a console line of the tests.
type line struct {
	t       int64
	text    string
	cut     bool
	dropped uint64
}

func get(l *line) (int64, string, bool) { return l.t, l.text, l.cut }

func unpack(buf []line, r Run) ([]line, error) {
	return Unpack(buf, r,
		func(t int64, d uint64) line { return line{t: t, dropped: d} },
		func(t int64, text string) line { return line{t: t, text: text} },
		func(l *line) { l.cut = true })
}

// TestRoundTrip: lines packed and unpacked come back as they were, after
// the marker of a run that says lines were lost before them.
func TestRoundTrip(t *testing.T) {
	lines := []line{{t: 1000, text: "first"}, {t: 1000, text: ""}, {t: 1500, text: "cut", cut: true}, {t: 900, text: "clock went back"}}
	r := Pack(lines, get)
	if r.Count != 4 || r.StartNs != 1000 || !reflect.DeepEqual(r.Deltas, []int64{0, 500, -600}) ||
		r.Text != "first\n\ncut\nclock went back" || !reflect.DeepEqual(r.Truncated, []uint32{2}) {
		t.Fatalf("packed %+v", r)
	}
	r.Dropped = 7
	got, err := unpack([]line{{t: 1, text: "before"}}, r)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]line{{t: 1, text: "before"}, {t: 1000, dropped: 7}}, lines...)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("unpacked %+v\nwant %+v", got, want)
	}
}

// TestMarkerAlone: a run of no lines is a marker at its time.
func TestMarkerAlone(t *testing.T) {
	r := Pack([]line(nil), get)
	if !reflect.DeepEqual(r, Run{}) {
		t.Fatalf("packed nothing: %+v", r)
	}
	r.Dropped, r.StartNs = 3, 42
	got, err := unpack(nil, r)
	if err != nil || !reflect.DeepEqual(got, []line{{t: 42, dropped: 3}}) {
		t.Fatalf("marker alone: %+v, %v", got, err)
	}
}

// TestMalformed: a run whose parts disagree is refused and adds nothing.
func TestMalformed(t *testing.T) {
	for _, c := range []struct {
		what string
		r    Run
	}{
		{"text without lines", Run{Text: "x"}},
		{"deltas without lines", Run{Deltas: []int64{1}}},
		{"truncation without lines", Run{Truncated: []uint32{0}}},
		{"too few deltas", Run{Count: 2, Text: "a\nb"}},
		{"too many texts", Run{Count: 2, Deltas: []int64{1}, Text: "a\nb\nc"}},
		{"truncated line out of range", Run{Count: 1, Text: "a", Truncated: []uint32{1}, Dropped: 2}},
	} {
		before := []line{{text: "kept"}}
		got, err := unpack(before, c.r)
		if err == nil || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("%s: %v, want a refusal", c.what, err)
		}
		if len(got) != 1 {
			t.Errorf("%s: the refusal added %d lines", c.what, len(got)-1)
		}
	}
}
