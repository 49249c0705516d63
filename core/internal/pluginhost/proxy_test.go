package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/network"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// These tests drive the proxies and the wait for a plugin's process with
// in-process services standing for processes: a generation here has a
// service and an exited channel, and no process.

// procHV is one process of a hypervisor plugin: Capabilities answers
// with its number, or fails with fail, after running hook.
type procHV struct {
	hypervisor.Hypervisor // methods not overridden are not called
	n                     int
	fail                  error
	hook                  func()
	mu                    sync.Mutex
	calls                 int
}

func (p *procHV) Capabilities(context.Context) (*pluginv1.HypervisorCapabilities, error) {
	p.mu.Lock()
	p.calls++
	p.mu.Unlock()
	if p.hook != nil {
		p.hook()
	}
	if p.fail != nil {
		return nil, p.fail
	}
	return &pluginv1.HypervisorCapabilities{Targets: []string{fmt.Sprint(p.n)}}, nil
}

func (p *procHV) Console(_ context.Context, _ *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	p.mu.Lock()
	p.calls++
	p.mu.Unlock()
	if p.hook != nil {
		p.hook()
	}
	if p.fail == nil {
		return fn(&pluginv1.ConsoleLine{Text: fmt.Sprint(p.n)})
	}
	return p.fail
}

// fakeHost is a Host with one plugin "fake" of kind, no process running.
func fakeHost(t *testing.T, kind Kind, callWait time.Duration) (*Host, *managed) {
	t.Helper()
	h := New(Options{CallWait: callWait})
	t.Cleanup(h.cancel)
	m := &managed{host: h, kind: kind, name: "fake", ready: make(chan struct{}), exited: make(chan struct{})}
	h.plugins["fake"] = m
	return h, m
}

// exits holds the exit channels of the generations serve made, which
// stand for their processes' exits.
var exits sync.Map // *generation -> chan struct{}

// serve makes svc m's current process and returns its generation.
func serve(m *managed, svc Common) *generation {
	exited := make(chan struct{})
	g := &generation{svc: svc, exited: exited, started: time.Now()}
	exits.Store(g, exited)
	m.mu.Lock()
	m.gen = g
	close(m.ready)
	m.mu.Unlock()
	return g
}

// crash ends g's process as the keeper does: out of service, with a new
// ready channel for the successor.
func crash(m *managed, g *generation) {
	exited, _ := exits.Load(g)
	close(exited.(chan struct{}))
	m.mu.Lock()
	if m.gen == g {
		m.gen = nil
		m.ready = make(chan struct{})
	}
	m.mu.Unlock()
}

// current returns m's serving generation.
func current(m *managed) *generation {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen
}

// diesUnderCall makes p's calls fail as a connection cut by the crash of
// its process, after which next comes up as its successor.
func diesUnderCall(m *managed, p *procHV, next *procHV) {
	p.fail = fmt.Errorf("plugin: %w", hypervisor.ErrUnreachable)
	p.hook = func() {
		crash(m, current(m))
		go func() {
			time.Sleep(10 * time.Millisecond)
			serve(m, next)
		}()
	}
}

func targets(c *pluginv1.HypervisorCapabilities) string { return strings.Join(c.GetTargets(), ",") }

// TestCallOnSuccessor: a call whose process dies under it is made again
// on the next process, and answered there.
func TestCallOnSuccessor(t *testing.T) {
	_, m := fakeHost(t, HypervisorKind, 5*time.Second)
	first, second := &procHV{n: 1}, &procHV{n: 2}
	serve(m, first)
	diesUnderCall(m, first, second)
	caps, err := (&proxy{m: m}).Capabilities(context.Background())
	if err != nil || targets(caps) != "2" {
		t.Fatalf("call through a crash: %v %v, want the answer of process 2", caps, err)
	}
	if first.calls != 1 || second.calls != 1 {
		t.Fatalf("calls: %d on the first process, %d on the second", first.calls, second.calls)
	}
}

// TestCallAttemptsBounded: a call that kills every process it reaches is
// made on maxAttempts processes, then fails with its error.
func TestCallAttemptsBounded(t *testing.T) {
	_, m := fakeHost(t, HypervisorKind, 5*time.Second)
	procs := make([]*procHV, maxAttempts+1)
	for i := range procs {
		procs[i] = &procHV{n: i + 1}
	}
	serve(m, procs[0])
	for i := 0; i < maxAttempts; i++ {
		diesUnderCall(m, procs[i], procs[i+1])
	}
	_, err := (&proxy{m: m}).Capabilities(context.Background())
	if !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Fatalf("call that crashes every process: %v", err)
	}
	for i, p := range procs[:maxAttempts] {
		if p.calls != 1 {
			t.Fatalf("process %d got %d calls, want 1", i+1, p.calls)
		}
	}
	if procs[maxAttempts].calls != 0 {
		t.Fatalf("the call was made on %d processes, want %d", maxAttempts+1, maxAttempts)
	}
}

// TestCallNotRepeated: an error that is not the process's death (the
// plugin refused the request), or a failed connection to a process that
// keeps running, is returned from the one call made.
func TestCallNotRepeated(t *testing.T) {
	_, m := fakeHost(t, HypervisorKind, 5*time.Second)
	p := &procHV{n: 1, fail: fmt.Errorf("%w: no such target", hypervisor.ErrInvalid)}
	serve(m, p)
	began := time.Now()
	if _, err := (&proxy{m: m}).Capabilities(context.Background()); !errors.Is(err, hypervisor.ErrInvalid) || p.calls != 1 {
		t.Fatalf("refused call: %v after %d calls", err, p.calls)
	}
	if took := time.Since(began); took >= exitGrace {
		t.Fatalf("a refusal was returned after %v, as if it might be a crash", took)
	}
	if testing.Short() {
		return
	}
	p.fail, p.calls = fmt.Errorf("plugin: %w", hypervisor.ErrUnreachable), 0
	began = time.Now()
	if _, err := (&proxy{m: m}).Capabilities(context.Background()); !errors.Is(err, hypervisor.ErrUnreachable) || p.calls != 1 {
		t.Fatalf("call on a live process whose connection failed: %v after %d calls", err, p.calls)
	}
	if took := time.Since(began); took < exitGrace {
		t.Fatalf("gave up after %v, before the %v a crash may take to show", took, exitGrace)
	}
}

// TestConsoleNotRepeatedAfterLines: a console stream that delivered lines
// before its process died ends with the error (the caller resumes it from
// its last line); one that delivered nothing is made again.
func TestConsoleNotRepeatedAfterLines(t *testing.T) {
	_, m := fakeHost(t, HypervisorKind, 5*time.Second)
	first, second := &procHV{n: 1}, &procHV{n: 2}
	serve(m, first)
	diesUnderCall(m, first, second)
	var got []string
	err := (&proxy{m: m}).Console(context.Background(), &pluginv1.ConsoleRequest{}, func(l *pluginv1.ConsoleLine) error {
		got = append(got, l.GetText())
		return nil
	})
	if err != nil || fmt.Sprint(got) != "[2]" {
		t.Fatalf("console through a crash before any line: %v %v", got, err)
	}

	_, m = fakeHost(t, HypervisorKind, 5*time.Second)
	third := &procHV{n: 3}
	cut := fmt.Errorf("plugin: %w", hypervisor.ErrUnreachable)
	serve(m, &deliverThenDie{m: m, next: third, err: cut})
	got = nil
	err = (&proxy{m: m}).Console(context.Background(), &pluginv1.ConsoleRequest{}, func(l *pluginv1.ConsoleLine) error {
		got = append(got, l.GetText())
		return nil
	})
	if !errors.Is(err, cut) || fmt.Sprint(got) != "[early]" || third.calls != 0 {
		t.Fatalf("console cut after a line: lines %v, error %v, %d calls on the successor", got, err, third.calls)
	}
}

// deliverThenDie sends one console line, then dies under the stream.
type deliverThenDie struct {
	hypervisor.Hypervisor
	m    *managed
	next *procHV
	err  error
}

func (d *deliverThenDie) Console(_ context.Context, _ *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	if err := fn(&pluginv1.ConsoleLine{Text: "early"}); err != nil {
		return err
	}
	crash(d.m, current(d.m))
	serve(d.m, d.next)
	return d.err
}

// TestWaitForRestart: a call made while the plugin is down waits for its
// next process; one that finds none within CallWait fails as both
// unavailable and unreachable, with the last launch error; one whose
// context ends stops waiting.
func TestWaitForRestart(t *testing.T) {
	_, m := fakeHost(t, HypervisorKind, 2*time.Second)
	go func() {
		time.Sleep(50 * time.Millisecond)
		serve(m, &procHV{n: 7})
	}()
	caps, err := (&proxy{m: m}).Capabilities(context.Background())
	if err != nil || targets(caps) != "7" {
		t.Fatalf("call while the plugin starts: %v %v", caps, err)
	}

	_, m = fakeHost(t, HypervisorKind, 100*time.Millisecond)
	m.lastErr = errors.New("plugin fake: exec format error")
	began := time.Now()
	_, err = (&proxy{m: m}).Capabilities(context.Background())
	if !errors.Is(err, hypervisor.ErrUnavailable) || !errors.Is(err, hypervisor.ErrUnreachable) || !strings.Contains(err.Error(), "exec format error") {
		t.Fatalf("call with no plugin: %v", err)
	}
	if took := time.Since(began); took < 100*time.Millisecond || took > 2*time.Second {
		t.Fatalf("call with no plugin failed after %v, want CallWait (100ms)", took)
	}

	_, m = fakeHost(t, HypervisorKind, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := (&proxy{m: m}).Capabilities(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call whose context ends while it waits: %v", err)
	}
}

// TestLookupByKind: a plugin is found under its kind only; a backend
// that is not a hypervisor plugin is not enabled, as far as creates go.
func TestLookupByKind(t *testing.T) {
	h, _ := fakeHost(t, NetworkKind, time.Second)
	h.plugins["hvt"] = &managed{host: h, kind: HypervisorKind, name: "hvt"}
	h.plugins["influx"] = &managed{host: h, kind: MetricsKind, name: "influx"}
	if _, err := h.Hypervisor("fake"); !errors.Is(err, hypervisor.ErrInvalid) || !strings.Contains(err.Error(), `no backend "fake"`) {
		t.Fatalf("a network plugin as a backend: %v", err)
	}
	if _, err := h.Hypervisor("hvt"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Network("hvt"); err == nil {
		t.Fatal("a hypervisor plugin served as a network plugin")
	}
	if _, err := h.Network("fake"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Sink("fake"); err == nil {
		t.Fatal("a network plugin served as a metrics sink")
	}
	if got := fmt.Sprint(h.Names(), h.NamesOf(pluginv1.Kind_KIND_NETWORK), h.NamesOf(pluginv1.Kind_KIND_METRICS)); got != "[hvt] [fake] [influx]" {
		t.Fatalf("names by kind: %s", got)
	}
}

// netOnly serves only the network service.
type netOnly struct{ network.Network }

// TestWrongService: a process that does not serve the service a proxy
// calls is unavailable, not a crash.
func TestWrongService(t *testing.T) {
	_, m := fakeHost(t, HypervisorKind, time.Second)
	serve(m, netOnly{})
	if _, err := (&proxy{m: m}).Capabilities(context.Background()); !errors.Is(err, hypervisor.ErrUnavailable) || !strings.Contains(err.Error(), "does not serve") {
		t.Fatalf("a hypervisor call on a network plugin: %v", err)
	}
}
