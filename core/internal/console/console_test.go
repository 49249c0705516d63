package console

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"
)

func at(s int) time.Time { return time.Unix(1700000000, 0).Add(time.Duration(s) * time.Second) }

func TestBoundsAndHistory(t *testing.T) {
	r := NewRing(5, 1<<20, 2)
	for i := 0; i < 8; i++ {
		r.Append(Line{Time: at(i), Text: fmt.Sprint("line", i)})
	}
	all, _ := r.History(time.Time{}, 0)
	if len(all) != 5 || all[0].Text != "line3" || all[4].Text != "line7" {
		t.Fatalf("ring kept %v", all)
	}
	last2, _ := r.History(time.Time{}, 2)
	if len(last2) != 2 || last2[0].Text != "line6" {
		t.Fatalf("count: %v", last2)
	}
	since, _ := r.History(at(6), 0)
	if len(since) != 2 || since[0].Text != "line6" {
		t.Fatalf("since: %v", since)
	}
	both, _ := r.History(at(4), 1)
	if len(both) != 1 || both[0].Text != "line7" {
		t.Fatalf("since+count: %v", both)
	}
	if _, err := r.History(time.Time{}, -1); err == nil {
		t.Fatal("negative count accepted")
	}
}

func TestByteBound(t *testing.T) {
	r := NewRing(100, 10, 1)
	r.Append(Line{Time: at(0), Text: "aaaaaa"})
	r.Append(Line{Time: at(1), Text: "bbbbbb"})
	all, _ := r.History(time.Time{}, 0)
	if len(all) != 1 || all[0].Text != "bbbbbb" {
		t.Fatalf("byte bound: %v", all)
	}
}

func TestDuplicatesSkipped(t *testing.T) {
	r := NewRing(10, 1000, 1)
	if !r.Append(Line{Time: at(1), Text: "a"}) || !r.Append(Line{Time: at(1), Text: "b"}) {
		t.Fatal("distinct lines refused")
	}
	if r.Append(Line{Time: at(1), Text: "a"}) || r.Append(Line{Time: at(0), Text: "old"}) {
		t.Fatal("replayed line appended twice")
	}
	if all, _ := r.History(time.Time{}, 0); len(all) != 2 {
		t.Fatalf("%v", all)
	}
}

func TestFollowersAndCap(t *testing.T) {
	r := NewRing(10, 1000, 2)
	r.Append(Line{Time: at(0), Text: "before"})
	hist, f1, err := r.Follow(time.Time{}, 0)
	if err != nil || len(hist) != 1 {
		t.Fatal(err, hist)
	}
	_, f2, err := r.Follow(time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Follow(time.Time{}, 0); err == nil || !strings.Contains(err.Error(), "too many") {
		t.Fatalf("cap not enforced: %v", err)
	}
	r.Append(Line{Time: at(1), Text: "after"})
	for _, f := range []*Follower{f1, f2} {
		select {
		case <-f.Ready():
			if l := f.Take(nil); len(l) != 1 || l[0].Text != "after" {
				t.Fatal(l)
			}
		case <-time.After(time.Second):
			t.Fatal("no live line")
		}
	}
	f2.Close()
	if _, f3, err := r.Follow(time.Time{}, 0); err != nil {
		t.Fatal("slot not freed:", err)
	} else {
		f3.Close()
	}
	r.SetClosed(true)
	select {
	case <-f1.Done():
	case <-time.After(time.Second):
		t.Fatal("follower not ended")
	}
	_, f4, err := r.Follow(time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-f4.Done():
	default:
		t.Fatal("follower of a closed ring should end at once")
	}
}

func TestSlowFollowerDropsNotBlocks(t *testing.T) {
	r := NewRing(10000, 1<<30, 1)
	r.followLines = 100
	_, f, _ := r.Follow(time.Time{}, 0)
	defer f.Close()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ {
			r.Append(Line{Time: at(i), Text: fmt.Sprint(i)})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a slow follower blocked the producer")
	}
	lines := f.Take(nil)
	r.Append(Line{Time: at(2000), Text: "y"})
	lines = append(lines, f.Take(nil)...)
	checkSequence(t, lines, 1001)
	if lines[len(lines)-2].Dropped != 1000-99 {
		t.Errorf("marker %+v, want %d lines lost after the first 99", lines[len(lines)-2], 1000-99)
	}
}

// checkSequence checks that lines hold markers and lines whose counts add
// up to total, and that every line is in order (as its text says).
func checkSequence(t *testing.T, lines []Line, total int) {
	t.Helper()
	got, dropped := 0, uint64(0)
	for _, l := range lines {
		if l.Dropped > 0 {
			dropped += l.Dropped
			continue
		}
		if want := fmt.Sprint(got + int(dropped)); l.Text != want && l.Text != "y" {
			t.Fatalf("line %q where %q was due (%d lines, %d lost before)", l.Text, want, got, dropped)
		}
		got++
	}
	if got+int(dropped) != total {
		t.Fatalf("got %d + dropped %d != %d", got, dropped, total)
	}
}

// TestBatchGapsReachFollowers checks that a marker in an appended batch
// (lines lost upstream) is passed on to followers at its place, is not
// kept in the history, and that a lagging follower's queue is bounded in
// lines and bytes while the ring's own bounds are unchanged.
func TestBatchGapsReachFollowers(t *testing.T) {
	r := NewRing(5, 1<<20, 1)
	r.followLines, r.followBytes = 1000, 20
	_, f, _ := r.Follow(time.Time{}, 0)
	defer f.Close()
	r.AppendBatch([]Line{{Time: at(0), Text: "0"}, {Time: at(1), Text: "1"}, {Dropped: 3}, {Time: at(5), Text: "5"}})
	<-f.Ready()
	lines := f.Take(nil)
	if len(lines) != 4 || lines[2].Dropped != 3 || lines[3].Text != "5" {
		t.Fatalf("follower got %+v", lines)
	}
	if h, _ := r.History(time.Time{}, 0); len(h) != 3 {
		t.Fatalf("history holds %+v, want the 3 lines without the marker", h)
	}
	for i := 6; i < 100; i++ {
		r.Append(Line{Time: at(i), Text: fmt.Sprint(i)})
	}
	lines = f.Take(lines)
	// 20 bytes hold "6" to "9" and "10" to "17": 12 lines, then a marker.
	if len(lines) != 13 || lines[11].Text != "17" || lines[12].Dropped != 100-18 {
		t.Fatalf("lagging follower got %+v", lines)
	}
	if h, _ := r.History(time.Time{}, 0); len(h) != 5 || h[4].Text != "99" {
		t.Fatalf("history %+v", h)
	}
}

// TestBatchKeepsWhatLinesWould: a batch longer than the ring's bounds
// leaves the history that appending its lines one at a time would, and
// the followers get every line of it with the markers in place.
func TestBatchKeepsWhatLinesWould(t *testing.T) {
	var batch []Line
	for i := 0; i < 12; i++ {
		batch = append(batch, Line{Time: at(i), Text: strings.Repeat("x", i%4)})
		if i == 5 {
			batch = append(batch, Line{Time: at(i), Dropped: 9})
		}
	}
	for _, bound := range []struct{ lines, bytes int }{{4, 1 << 20}, {100, 7}, {5, 6}, {3, 1}} {
		one, all := NewRing(bound.lines, bound.bytes, 1), NewRing(bound.lines, bound.bytes, 1)
		_, fl, _ := all.Follow(time.Time{}, 0)
		one.Append(Line{Time: at(-1), Text: "before"})
		all.Append(Line{Time: at(-1), Text: "before"})
		for _, l := range batch {
			if l.Dropped == 0 {
				one.Append(l)
			}
		}
		if n := all.AppendBatch(batch); n != 12 {
			t.Errorf("bounds %v: %d lines new, want 12", bound, n)
		}
		want, _ := one.History(time.Time{}, 0)
		got, _ := all.History(time.Time{}, 0)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("bounds %v: history %v, want %v", bound, got, want)
		}
		if taken := fl.Take(nil); len(taken) != 14 || taken[7].Dropped != 9 || taken[13].Text != "xxx" {
			t.Errorf("bounds %v: follower took %v", bound, taken)
		}
	}
}

// TestHistoryOwnsItsTexts: the history keeps copies of the texts it
// keeps, never the caller's (which may be cut from a far larger
// message), so that the rest of that message can go.
func TestHistoryOwnsItsTexts(t *testing.T) {
	big := strings.Repeat("y", 1000) + "\nlast"
	r := NewRing(1, 1<<20, 1)
	r.AppendBatch([]Line{{Time: at(0), Text: big[:1000]}, {Time: at(1), Text: big[1001:]}})
	got, _ := r.History(time.Time{}, 0)
	if len(got) != 1 || got[0].Text != "last" {
		t.Fatalf("history %v", got)
	}
	if strings.Contains(big, got[0].Text) && unsafe.StringData(got[0].Text) == unsafe.StringData(big[1001:]) {
		t.Error("the history holds on to the caller's text")
	}
	if r.Append(Line{Time: at(1), Text: "last"}) {
		t.Error("a repeated line after a batch was kept twice")
	}
}

// TestBatchDuplicatesLeftOut: lines of a batch already appended (a
// replay after a resubscription) reach neither the history nor the
// followers a second time.
func TestBatchDuplicatesLeftOut(t *testing.T) {
	r := NewRing(10, 1000, 1)
	r.AppendBatch([]Line{{Time: at(0), Text: "a"}, {Time: at(1), Text: "b"}})
	_, fl, _ := r.Follow(time.Time{}, 0)
	if n := r.AppendBatch([]Line{{Time: at(0), Text: "a"}, {Time: at(1), Text: "b"}, {Time: at(1), Dropped: 2}, {Time: at(2), Text: "c"}}); n != 1 {
		t.Errorf("%d lines new, want 1", n)
	}
	var got []string
	for _, l := range fl.Take(nil) {
		got = append(got, fmt.Sprintf("%s/%d", l.Text, l.Dropped))
	}
	if g := fmt.Sprint(got); g != "[/2 c/0]" {
		t.Errorf("follower got %s", g)
	}
	if all, _ := r.History(time.Time{}, 0); len(all) != 3 {
		t.Errorf("history %v", all)
	}
}
