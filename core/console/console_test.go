package console

import (
	"fmt"
	"strings"
	"testing"
	"time"
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
		case l := <-f.Lines():
			if l.Text != "after" {
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
	_, f, _ := r.Follow(time.Time{}, 0)
	defer f.Close()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ {
			r.Append(Line{Time: at(i), Text: "x"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a slow follower blocked the producer")
	}
	got, dropped := 0, uint64(0)
	for {
		select {
		case l := <-f.Lines():
			if l.Dropped > 0 {
				dropped += l.Dropped
			} else {
				got++
			}
			continue
		default:
		}
		break
	}
	r.Append(Line{Time: at(2000), Text: "y"})
	for l := range drain(f) {
		if l.Dropped > 0 {
			dropped += l.Dropped
		} else {
			got++
		}
	}
	if got+int(dropped) != 1001 {
		t.Fatalf("got %d + dropped %d != 1001", got, dropped)
	}
}

func drain(f *Follower) <-chan Line {
	out := make(chan Line, 1024)
	for {
		select {
		case l := <-f.Lines():
			out <- l
			continue
		default:
		}
		close(out)
		return out
	}
}
