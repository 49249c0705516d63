// Package events is petreld's event bus: lifecycle changes of VMs and
// plugins, fanned out to subscribers (the CLI's `petrel events`, and later
// the metrics and endpoint layers). Publishing never blocks; a subscriber
// that does not keep up loses events and is told how many.
package events

import (
	"strconv"
	"strings"
	"sync"
	"time"
)

// Event types.
const (
	Created   = "created"
	Started   = "started"
	Exited    = "exited"
	Restarted = "restarted"
	Destroyed = "destroyed"
	Failed    = "failed"
	// Lost: the VM's shim vanished without recording the guest's exit,
	// so no exit code is known (the event carries none).
	Lost            = "lost"
	PluginCrashed   = "plugin-crashed"
	PluginRestarted = "plugin-restarted"
	// Dropped is delivered to a subscriber that lost events; Message holds
	// the count.
	Dropped = "dropped"
)

// Event is one thing that happened.
type Event struct {
	Time time.Time
	Type string
	// Name is the VM name, or the plugin name for plugin events.
	Name       string
	ExitCode   int32
	ExitSignal int32
	Message    string
}

// Bus fans events out. The zero value is not usable; use New.
type Bus struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

// New returns an empty bus.
func New() *Bus { return &Bus{subs: map[*Subscription]struct{}{}} }

// Publish delivers e to every matching subscriber without blocking.
func (b *Bus) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if s.matches(e) {
			s.offer(e)
		}
	}
}

// Subscribe returns a subscription to events about VMs under path (""
// or ":" for everything; plugin events are always delivered).
func (b *Bus) Subscribe(path string) *Subscription {
	path = strings.TrimPrefix(path, ":")
	s := &Subscription{bus: b, path: path, ch: make(chan Event, 256)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// Subscription receives events from a Bus until closed.
type Subscription struct {
	bus     *Bus
	path    string
	ch      chan Event
	dropped int // guarded by bus.mu
}

// C delivers events.
func (s *Subscription) C() <-chan Event { return s.ch }

// Close stops delivery.
func (s *Subscription) Close() {
	s.bus.mu.Lock()
	delete(s.bus.subs, s)
	s.bus.mu.Unlock()
}

func (s *Subscription) matches(e Event) bool {
	if s.path == "" || e.Type == PluginCrashed || e.Type == PluginRestarted {
		return true
	}
	return e.Name == s.path || strings.HasPrefix(e.Name, s.path+":")
}

func (s *Subscription) offer(e Event) {
	if s.dropped > 0 {
		select {
		case s.ch <- Event{Time: e.Time, Type: Dropped, Message: strconv.Itoa(s.dropped)}:
			s.dropped = 0
		default:
			s.dropped++
			return
		}
	}
	select {
	case s.ch <- e:
	default:
		s.dropped++
	}
}
