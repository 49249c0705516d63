package events

import (
	"testing"
	"time"
)

func TestPathFilter(t *testing.T) {
	b := New()
	all := b.Subscribe(":")
	ab := b.Subscribe("a:b")
	defer all.Close()
	defer ab.Close()
	b.Publish(Event{Type: Created, Name: "a:b:vm"})
	b.Publish(Event{Type: Created, Name: "a:bc"})
	b.Publish(Event{Type: PluginCrashed, Name: "hvt"})
	want := map[*Subscription][]string{all: {"a:b:vm", "a:bc", "hvt"}, ab: {"a:b:vm", "hvt"}}
	for s, names := range want {
		for _, n := range names {
			select {
			case e := <-s.C():
				if e.Name != n || e.Time.IsZero() {
					t.Fatalf("got %+v want %s", e, n)
				}
			case <-time.After(time.Second):
				t.Fatalf("missing %s", n)
			}
		}
		select {
		case e := <-s.C():
			t.Fatalf("unexpected %+v", e)
		default:
		}
	}
}

func TestSlowSubscriberToldOfDrops(t *testing.T) {
	b := New()
	s := b.Subscribe("")
	defer s.Close()
	for i := 0; i < 300; i++ {
		b.Publish(Event{Type: Started, Name: "vm"})
	}
	for i := 0; i < 256; i++ {
		<-s.C()
	}
	b.Publish(Event{Type: Exited, Name: "vm"})
	e := <-s.C()
	if e.Type != Dropped || e.Message != "44" {
		t.Fatalf("want dropped 44, got %+v", e)
	}
	if e := <-s.C(); e.Type != Exited {
		t.Fatalf("got %+v", e)
	}
}
