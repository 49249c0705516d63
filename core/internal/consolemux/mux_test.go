package consolemux

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/petrel-vmm/petrel/core/internal/console"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// fakeStream is a plugin's end of one stream, driven by the test.
type fakeStream struct {
	ctx  context.Context
	reqs chan *pluginv1.FollowConsolesRequest
	msgs chan *pluginv1.FollowConsolesMessage
	fail chan error
}

func (f *fakeStream) Send(r *pluginv1.FollowConsolesRequest) error {
	select {
	case f.reqs <- r:
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	}
}

func (f *fakeStream) Recv() (*pluginv1.FollowConsolesMessage, error) {
	select {
	case m := <-f.msgs:
		return m, nil
	case err := <-f.fail:
		return nil, err
	case <-f.ctx.Done():
		return nil, f.ctx.Err()
	}
}

// request waits for the next request on f.
func (f *fakeStream) request(t *testing.T) *pluginv1.FollowConsolesRequest {
	t.Helper()
	select {
	case r := <-f.reqs:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no request")
		return nil
	}
}

// fakePlugin opens fake streams and hands them to the test.
type fakePlugin struct {
	opened chan *fakeStream
}

func (p *fakePlugin) open(ctx context.Context) (hypervisor.ConsoleStream, error) {
	s := &fakeStream{ctx: ctx, reqs: make(chan *pluginv1.FollowConsolesRequest, 100),
		msgs: make(chan *pluginv1.FollowConsolesMessage, 100), fail: make(chan error, 1)}
	p.opened <- s
	return s, nil
}

func (p *fakePlugin) stream(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case s := <-p.opened:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no stream opened")
		return nil
	}
}

func newMux(t *testing.T, retries int) (*Mux, *fakePlugin) {
	p := &fakePlugin{opened: make(chan *fakeStream, 10)}
	m := New(p.open, Options{RetryDelay: 10 * time.Millisecond, Retries: retries})
	t.Cleanup(m.Close)
	return m, p
}

// follow runs Follow in the background and returns its outcome's
// channel.
func follow(ctx context.Context, m *Mux, id string, ring *console.Ring) chan bool {
	done := make(chan bool, 1)
	go func() { done <- m.Follow(ctx, id, ring) }()
	return done
}

func outcome(t *testing.T, done chan bool, what string) bool {
	t.Helper()
	select {
	case ok := <-done:
		return ok
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: Follow did not return", what)
		return false
	}
}

func line(ns int64, text string) *pluginv1.ConsoleLine {
	return &pluginv1.ConsoleLine{TimeNs: ns, Text: text}
}

func texts(r *console.Ring) []string {
	lines, _ := r.History(time.Time{}, 0)
	var out []string
	for _, l := range lines {
		out = append(out, l.Text)
	}
	return out
}

// TestFollowManyOverOneStream: two VMs on one stream get their own
// lines, and each Follow returns when its console ends.
func TestFollowManyOverOneStream(t *testing.T) {
	m, p := newMux(t, 3)
	ra, rb := console.NewRing(100, 1<<20, 4), console.NewRing(100, 1<<20, 4)
	da := follow(context.Background(), m, "a", ra)
	st := p.stream(t)
	db := follow(context.Background(), m, "b", rb)
	got := map[string]bool{}
	for len(got) < 2 {
		r := st.request(t)
		if r.GetStop() || r.GetSinceNs() != 0 {
			t.Errorf("request %v, want a follow from the start", r)
		}
		got[r.GetId()] = true
	}
	st.msgs <- &pluginv1.FollowConsolesMessage{Id: "a", Lines: []*pluginv1.ConsoleLine{line(1, "a1"), line(2, "a2")}}
	st.msgs <- &pluginv1.FollowConsolesMessage{Id: "b", Lines: []*pluginv1.ConsoleLine{line(1, "b1")}}
	st.msgs <- &pluginv1.FollowConsolesMessage{Id: "a", Lines: []*pluginv1.ConsoleLine{line(3, "a3")}, End: true}
	if !outcome(t, da, "a") {
		t.Error("a: Follow reported the plugin cannot follow consoles")
	}
	select {
	case <-db:
		t.Fatal("b ended with a")
	case <-time.After(50 * time.Millisecond):
	}
	st.msgs <- &pluginv1.FollowConsolesMessage{Id: "b", End: true}
	outcome(t, db, "b")
	if g := fmt.Sprint(texts(ra)); g != "[a1 a2 a3]" {
		t.Errorf("ring a: %s", g)
	}
	if g := fmt.Sprint(texts(rb)); g != "[b1]" {
		t.Errorf("ring b: %s", g)
	}
}

// TestStreamFailsResumeFromLastLine: after the stream fails (the plugin
// restarted), a new one follows the VM from its last line, and the
// line repeated there is not kept twice.
func TestStreamFailsResumeFromLastLine(t *testing.T) {
	m, p := newMux(t, 3)
	r := console.NewRing(100, 1<<20, 4)
	done := follow(context.Background(), m, "a", r)
	st := p.stream(t)
	st.request(t)
	st.msgs <- &pluginv1.FollowConsolesMessage{Id: "a", Lines: []*pluginv1.ConsoleLine{line(5, "one"), line(7, "two")}}
	time.Sleep(20 * time.Millisecond)
	st.fail <- fmt.Errorf("plugin died: %w", context.Canceled)
	st2 := p.stream(t)
	if req := st2.request(t); req.GetId() != "a" || req.GetSinceNs() != 7 {
		t.Errorf("after the failure: %v, want a from 7", req)
	}
	st2.msgs <- &pluginv1.FollowConsolesMessage{Id: "a", Lines: []*pluginv1.ConsoleLine{line(7, "two"), line(9, "three")}, End: true}
	outcome(t, done, "a")
	if g := fmt.Sprint(texts(r)); g != "[one two three]" {
		t.Errorf("ring: %s", g)
	}
}

// TestUnsupportedFollowAlone: a plugin that cannot follow consoles
// together sends Follow's callers to the old way, at once and later.
func TestUnsupportedFollowAlone(t *testing.T) {
	m := New(func(context.Context) (hypervisor.ConsoleStream, error) {
		return nil, fmt.Errorf("old plugin: %w", errors.ErrUnsupported)
	}, Options{RetryDelay: time.Millisecond, Retries: 3})
	defer m.Close()
	r := console.NewRing(100, 1<<20, 4)
	if outcome(t, follow(context.Background(), m, "a", r), "first") {
		t.Error("first Follow on an old plugin reported true")
	}
	if outcome(t, follow(context.Background(), m, "b", r), "later") {
		t.Error("later Follow on an old plugin reported true")
	}
}

// TestStopOnCancel: a Follow whose context ends tells the plugin to stop
// following the VM.
func TestStopOnCancel(t *testing.T) {
	m, p := newMux(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := follow(ctx, m, "a", console.NewRing(100, 1<<20, 4))
	st := p.stream(t)
	st.request(t)
	cancel()
	if !outcome(t, done, "cancelled") {
		t.Error("cancelled Follow reported false")
	}
	if r := st.request(t); r.GetId() != "a" || !r.GetStop() {
		t.Errorf("after cancel: %v, want a stop of a", r)
	}
}

// TestFailedFollowRetried: a follow the plugin ends with an error is
// asked for again, up to Retries times; an unknown VM is not.
func TestFailedFollowRetried(t *testing.T) {
	m, p := newMux(t, 3)
	done := follow(context.Background(), m, "a", console.NewRing(100, 1<<20, 4))
	st := p.stream(t)
	for i := 0; i < 3; i++ {
		st.request(t)
		st.msgs <- &pluginv1.FollowConsolesMessage{Id: "a", End: true, Code: int32(codes.Internal), Error: "shim said no"}
	}
	outcome(t, done, "after retries")
	select {
	case r := <-st.reqs:
		t.Errorf("request after the last retry: %v", r)
	case <-time.After(50 * time.Millisecond):
	}

	unknown := follow(context.Background(), m, "b", console.NewRing(100, 1<<20, 4))
	st.request(t)
	st.msgs <- &pluginv1.FollowConsolesMessage{Id: "b", End: true, Code: int32(codes.NotFound), Error: "unknown VM"}
	outcome(t, unknown, "unknown VM")
	select {
	case r := <-st.reqs:
		t.Errorf("unknown VM followed again: %v", r)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestMarkersReachFollowers: lines the plugin's side lost, counted in a
// marker, are told to the ring's followers at their place in the stream.
func TestMarkersReachFollowers(t *testing.T) {
	m, p := newMux(t, 3)
	r, fl := followedRing(t)
	done := follow(context.Background(), m, "a", r)
	st := p.stream(t)
	st.request(t)
	st.msgs <- &pluginv1.FollowConsolesMessage{Id: "a", Lines: []*pluginv1.ConsoleLine{line(1, "w"), {TimeNs: 2, Dropped: 4}, line(3, "x")}, End: true}
	outcome(t, done, "a")
	var got []string
	for _, l := range fl.Take(nil) {
		if l.Dropped > 0 {
			got = append(got, fmt.Sprintf("[%d missed]", l.Dropped))
		} else {
			got = append(got, l.Text)
		}
	}
	if g := fmt.Sprint(got); g != "[w [4 missed] x]" {
		t.Errorf("follower got %s", g)
	}
}

// TestPackedLines: the Mux asks for packed lines, and a packed message's
// lines reach the ring and its followers in order, with their times, the
// marker of lines lost before them and the cut lines marked.
func TestPackedLines(t *testing.T) {
	m, p := newMux(t, 3)
	r, fl := followedRing(t)
	done := follow(context.Background(), m, "a", r)
	st := p.stream(t)
	if req := st.request(t); !req.GetPacked() {
		t.Errorf("request %v, want packed lines", req)
	}
	st.msgs <- &pluginv1.FollowConsolesMessage{Id: "a", Packed: &pluginv1.PackedLines{Count: 3, Dropped: 2, StartNs: 10,
		Deltas: []int64{5, 1}, Text: "x\n\nzz", Truncated: []uint32{2}}}
	st.msgs <- &pluginv1.FollowConsolesMessage{Id: "a", End: true}
	outcome(t, done, "a")
	var got []string
	for _, l := range fl.Take(nil) {
		got = append(got, fmt.Sprintf("%d:%q:%t:%d", l.Time.UnixNano(), l.Text, l.Truncated, l.Dropped))
	}
	if g := fmt.Sprint(got); g != `[10:"":false:2 10:"x":false:0 15:"":false:0 16:"zz":true:0]` {
		t.Errorf("follower got %s", g)
	}
	if g := fmt.Sprintf("%q", texts(r)); g != `["x" "" "zz"]` {
		t.Errorf("ring: %s", g)
	}
}

// TestUnpackRefusesMalformed: packed lines whose parts disagree are
// refused rather than guessed at.
func TestUnpackRefusesMalformed(t *testing.T) {
	for _, p := range []*pluginv1.PackedLines{
		{Count: 2, Deltas: []int64{1}, Text: "one line"},
		{Count: 2, Text: "a\nb"},
		{Count: 1, Text: "a", Truncated: []uint32{1}},
		{Count: 0, Dropped: 1, Text: "x"},
	} {
		if _, err := unpack(nil, p); err == nil {
			t.Errorf("%v accepted", p)
		}
	}
	if got, err := unpack(nil, &pluginv1.PackedLines{Dropped: 3, StartNs: 7}); err != nil || len(got) != 1 || got[0].Dropped != 3 {
		t.Errorf("a marker alone: %v, %v", got, err)
	}
}

// followedRing returns a ring and a follower of it, closed when the test
// ends.
func followedRing(t *testing.T) (*console.Ring, *console.Follower) {
	t.Helper()
	r := console.NewRing(100, 1<<20, 4)
	_, fl, err := r.Follow(time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fl.Close() })
	return r, fl
}
