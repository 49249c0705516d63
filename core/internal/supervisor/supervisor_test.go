package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/internal/events"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// fakeHV is an in-memory backend: VMs run until Stop/Destroy or exit(id).
type fakeHV struct {
	mu        sync.Mutex
	running   map[string]chan *pluginv1.ExitStatus
	started   []string // names, in start order
	destroyed []string // run ids
	block     map[string]chan struct{}
	// unreachable is how many of the next Starts fail as a plugin that
	// is not there does.
	unreachable int
	// specs holds the last spec started for each VM name.
	specs map[string]*pluginv1.VMSpec
	// noConfine makes the backend say it cannot confine VMs to CPUs.
	noConfine bool
	// startedAt, when set, is the start time handles report, as a shim
	// records it.
	startedAt time.Time
}

func newFake() *fakeHV {
	return &fakeHV{running: map[string]chan *pluginv1.ExitStatus{}, block: map[string]chan struct{}{}, specs: map[string]*pluginv1.VMSpec{}}
}

func (f *fakeHV) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_HYPERVISOR, Name: "fake"}, nil
}
func (f *fakeHV) Configure(context.Context, *pluginv1.ConfigureRequest) error { return nil }
func (f *fakeHV) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY}, nil
}
func (f *fakeHV) Capabilities(context.Context) (*pluginv1.HypervisorCapabilities, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &pluginv1.HypervisorCapabilities{ConfinesCpus: !f.noConfine}, nil
}
func (f *fakeHV) Validate(_ context.Context, s *pluginv1.VMSpec) (*pluginv1.ValidateResponse, error) {
	if s.GetMemoryMb() > 4096 {
		return &pluginv1.ValidateResponse{Reason: "too much memory"}, nil
	}
	return &pluginv1.ValidateResponse{Ok: true}, nil
}
func (f *fakeHV) Start(ctx context.Context, s *pluginv1.VMSpec) (*pluginv1.Handle, error) {
	if res, _ := f.Validate(ctx, s); !res.GetOk() {
		return nil, fmt.Errorf("%w: %s", hypervisor.ErrInvalid, res.GetReason())
	}
	f.mu.Lock()
	b := f.block[s.GetName()]
	if f.unreachable > 0 {
		f.unreachable--
		f.mu.Unlock()
		return nil, fmt.Errorf("hypervisor plugin: %w", hypervisor.ErrUnreachable)
	}
	f.mu.Unlock()
	if b != nil {
		select {
		case <-b:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[s.GetId()] = make(chan *pluginv1.ExitStatus, 1)
	f.started = append(f.started, s.GetName())
	f.specs[s.GetName()] = s
	h := &pluginv1.Handle{Id: s.GetId(), Pid: 4242}
	if !f.startedAt.IsZero() {
		h.StartedAtNs = f.startedAt.UnixNano()
	}
	return h, nil
}
func (f *fakeHV) Recover(_ context.Context, h *pluginv1.Handle) (*pluginv1.RecoverResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.running[h.GetId()]
	return &pluginv1.RecoverResponse{Running: ok, Lost: !ok}, nil
}
func (f *fakeHV) Wait(ctx context.Context, id string) (*pluginv1.ExitStatus, error) {
	f.mu.Lock()
	ch, ok := f.running[id]
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", hypervisor.ErrUnknownVM, id)
	}
	select {
	case st := <-ch:
		ch <- st
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (f *fakeHV) exit(id string, code, sig int32) {
	f.mu.Lock()
	ch := f.running[id]
	f.mu.Unlock()
	ch <- &pluginv1.ExitStatus{Code: code, Signal: sig, ExitedAtNs: time.Now().UnixNano()}
}

// exitWith ends run id with st.
func (f *fakeHV) exitWith(id string, st *pluginv1.ExitStatus) {
	f.mu.Lock()
	ch := f.running[id]
	f.mu.Unlock()
	ch <- st
}
func (f *fakeHV) Stop(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	ch, ok := f.running[id]
	f.mu.Unlock()
	if ok {
		select {
		case ch <- &pluginv1.ExitStatus{Code: 1}:
		default:
		}
	}
	return nil
}
func (f *fakeHV) Destroy(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.running, id)
	f.destroyed = append(f.destroyed, id)
	return nil
}
func (f *fakeHV) Stats(context.Context, string) (*pluginv1.VMStats, error) {
	return &pluginv1.VMStats{}, nil
}
func (f *fakeHV) Console(ctx context.Context, r *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	return nil
}

// backends offers hv as backend "fake", unless disabled.
type backends struct {
	hv       hypervisor.Hypervisor
	disabled bool
}

func (b backends) Names() []string {
	if b.disabled {
		return nil
	}
	return []string{"fake"}
}

func (b backends) Hypervisor(name string) (hypervisor.Hypervisor, error) {
	if name != "fake" || b.disabled {
		return nil, fmt.Errorf("%w: no backend %q", hypervisor.ErrInvalid, name)
	}
	return b.hv, nil
}

type fixture struct {
	t   *testing.T
	dir string
	st  *store.Store
	hv  *fakeHV
	sha string
	sup *Supervisor
	// disabled opens the supervisor with backend "fake" not enabled.
	disabled bool
	// removed lists the runs RemoveRun was called for, as backend/run.
	removed []string
	// blocks and net, when set, are the supervisor's block devices and
	// network.
	blocks BlockDevices
	net    Network
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, dir: t.TempDir(), hv: newFake()}
	f.open("boot-1", nil)
	sha, _, err := f.st.PutImage(bytes.NewReader([]byte("image")), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	f.sha = sha
	return f
}

func (f *fixture) open(boot string, runIDs []string) {
	st, err := store.Open(f.dir)
	if err != nil {
		f.t.Fatal(err)
	}
	f.st = st
	f.sup = New(Options{Store: st, Backends: backends{hv: f.hv, disabled: f.disabled}, Events: events.New(), DefaultBackend: "fake",
		ConsoleLines: 100, ConsoleBytes: 1 << 16, StopTimeout: time.Second, BackoffMin: 10 * time.Millisecond,
		BackoffMax: 40 * time.Millisecond, ResetAfter: time.Minute, BootID: boot, HostCPUs: 2,
		Blocks: f.blocks, Network: f.net,
		RunIDs: func(string) []string { return runIDs },
		RemoveRun: func(_ context.Context, backend, runID string) error {
			f.removed = append(f.removed, backend+"/"+runID)
			return nil
		}})
	f.t.Cleanup(f.close)
}

func (f *fixture) close() {
	if f.sup != nil {
		f.sup.Close()
		f.st.Close()
		f.sup = nil
	}
}

func (f *fixture) create(name string, startup int32, restart bool) Record {
	f.t.Helper()
	r, err := f.sup.Create(context.Background(), CreateParams{Name: name, ImageSHA256: f.sha, MemoryMB: 16, Startup: startup, Restart: RestartPolicy{OnFailure: restart}})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) state(name string) Record {
	recs, err := f.sup.Info(name)
	if err != nil || len(recs) != 1 {
		f.t.Fatalf("info %s: %v %v", name, recs, err)
	}
	return recs[0]
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestShouldRestart(t *testing.T) {
	on := RestartPolicy{OnFailure: true}
	cases := []struct {
		p          RestartPolicy
		code, sig  int32
		lost, want bool
	}{
		{RestartPolicy{}, 3, 0, false, false},
		{on, 0, 0, false, true},
		{on, 3, 0, false, true},
		{on, 1, 0, false, false},
		{on, 60, 0, false, false},
		{on, 64, 0, false, false},
		{on, 65, 0, false, true},
		{on, 0, 9, false, false},
		{on, 3, 0, true, false},
		{RestartPolicy{OnFailure: true, ExitCodes: []int32{4}}, 4, 0, false, true},
		{RestartPolicy{OnFailure: true, ExitCodes: []int32{4}}, 3, 0, false, false},
		{RestartPolicy{OnFailure: true, ExitCodes: []int32{1}}, 1, 0, false, false},
	}
	for _, c := range cases {
		if got := ShouldRestart(c.p, c.code, c.sig, c.lost); got != c.want {
			t.Errorf("ShouldRestart(%+v, code %d, sig %d, lost %v) = %v", c.p, c.code, c.sig, c.lost, got)
		}
	}
}

// TestIndependentVMs: a create stuck at the backend blocks neither info
// nor operations on other VMs.
func TestIndependentVMs(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	f.hv.mu.Lock()
	f.hv.block["slow"] = release
	f.hv.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := f.sup.Create(context.Background(), CreateParams{Name: "slow", ImageSHA256: f.sha, MemoryMB: 16})
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	fast := make(chan struct{})
	go func() {
		f.create("fast", 0, false)
		f.sup.Info("")
		if err := f.sup.Destroy(context.Background(), "fast"); err != nil {
			t.Error(err)
		}
		close(fast)
	}()
	select {
	case <-fast:
	case <-time.After(3 * time.Second):
		t.Fatal("operations on another VM waited for a slow create")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f.state("slow").State != StateRunning {
		t.Fatal("slow VM not running")
	}
}

func TestRestartBackoffAndDestroyInLoop(t *testing.T) {
	f := newFixture(t)
	r := f.create("loop", 0, true)
	run := r.RunID
	for i := 0; i < 3; i++ {
		f.hv.exit(run, 3, 0)
		eventually(t, "restart", func() bool { s := f.state("loop"); return s.RunID != run && s.State == StateRunning })
		run = f.state("loop").RunID
	}
	if got := f.state("loop").Restarts; got != 3 {
		t.Fatalf("restarts = %d", got)
	}
	if err := f.sup.Destroy(context.Background(), "loop"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sup.Info("loop"); err == nil {
		t.Fatal("destroyed VM still listed")
	}
}

// TestPluginAbsenceNeverFails: a VM that restarts on failure and whose
// plugin is not there when it is to be started again (after an exit, or
// on a restart request) stays restarting and is started once the plugin
// is back; it is never recorded as failed. A VM without restart on
// failure is failed by a restart request its plugin could not serve.
func TestPluginAbsenceNeverFails(t *testing.T) {
	f := newFixture(t)
	sub := f.sup.opts.Events.Subscribe("")
	defer sub.Close()
	r := f.create("keeper", 0, true)
	f.hv.mu.Lock()
	f.hv.unreachable = 3
	f.hv.mu.Unlock()
	f.hv.exit(r.RunID, 3, 0)
	eventually(t, "started once the plugin is back", func() bool {
		s := f.state("keeper")
		return s.State == StateRunning && s.RunID != r.RunID
	})
	if s := f.state("keeper"); s.Restarts != 1 {
		t.Fatalf("restarts = %d after one restart", s.Restarts)
	}

	f.hv.mu.Lock()
	f.hv.unreachable = 2
	f.hv.mu.Unlock()
	if _, err := f.sup.Restart(context.Background(), "keeper", nil); !errors.Is(err, hypervisor.ErrUnreachable) {
		t.Fatalf("restart without a plugin = %v", err)
	}
	if s := f.state("keeper"); s.State != StateRestarting {
		t.Fatalf("after a restart without a plugin: %+v", s)
	}
	eventually(t, "started once the plugin is back", func() bool { return f.state("keeper").State == StateRunning })

	plain := f.create("plain", 0, false)
	f.hv.mu.Lock()
	f.hv.unreachable = 1
	f.hv.mu.Unlock()
	if _, err := f.sup.Restart(context.Background(), "plain", nil); err == nil {
		t.Fatal("restart without a plugin succeeded")
	}
	if s := f.state("plain"); s.State != StateFailed || s.RunID == plain.RunID {
		t.Fatalf("plain VM after a restart without a plugin: %+v", s)
	}
	for {
		select {
		case e := <-sub.C():
			if e.Type == events.Failed && e.Name == "keeper" {
				t.Fatalf("keeper was failed: %+v", e)
			}
			continue
		default:
		}
		break
	}
}

// TestConfinement: a VM pinned to no CPU is started confined to the CPUs
// its policies allow, a pinned one pinned, one under no CPU policy
// unconfined; a backend that cannot confine VMs gets none to start.
func TestConfinement(t *testing.T) {
	f := newFixture(t)
	tree, err := policy.NewTree(policy.Policy{VMs: 10, CPUs: []int{0, 1}, MemoryMB: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Set(name.MustParse("team"), policy.Policy{VMs: 5, CPUs: []int{1}, MemoryMB: 512}, nil); err != nil {
		t.Fatal(err)
	}
	f.sup.opts.Policies = tree
	ctx := context.Background()
	for _, c := range []struct {
		name         string
		pin, allowed string
	}{
		{"team:free", "[]", "[1]"},
		{"team:pinned", "[1]", "[]"},
		{"other", "[]", "[]"},
	} {
		p := CreateParams{Name: c.name, ImageSHA256: f.sha, MemoryMB: 16}
		if c.pin != "[]" {
			p.CPUs = []uint32{1}
		}
		if _, err := f.sup.Create(ctx, p); err != nil {
			t.Fatalf("create %s: %v", c.name, err)
		}
		f.hv.mu.Lock()
		spec := f.hv.specs[c.name]
		f.hv.mu.Unlock()
		if got := fmt.Sprint(spec.GetCpus()); got != c.pin {
			t.Errorf("%s pinned to %s, want %s", c.name, got, c.pin)
		}
		if got := fmt.Sprint(spec.GetAllowedCpus()); got != c.allowed {
			t.Errorf("%s confined to %s, want %s", c.name, got, c.allowed)
		}
	}
	f.hv.mu.Lock()
	f.hv.noConfine = true
	f.hv.mu.Unlock()
	_, err = f.sup.Create(ctx, CreateParams{Name: "team:other", ImageSHA256: f.sha, MemoryMB: 16})
	if !errors.Is(err, hypervisor.ErrUnavailable) || !strings.Contains(err.Error(), "cannot confine") {
		t.Fatalf("create on a backend that cannot confine: %v", err)
	}
	if _, err := f.sup.Restart(ctx, "team:free", nil); !errors.Is(err, hypervisor.ErrUnavailable) {
		t.Fatalf("restart on a backend that cannot confine: %v", err)
	}
	if s := f.state("team:free"); s.State != StateRunning {
		t.Fatalf("a refused restart touched the VM: %+v", s)
	}
}

// TestRecoverAfterReboot: VMs recorded under another boot are started
// again in startup order; orphaned runs are removed; exited VMs stay
// exited.
func TestRecoverAfterReboot(t *testing.T) {
	f := newFixture(t)
	f.create("late", 5, false)
	f.create("early", -1, false)
	f.create("mid", 0, false)
	done := f.create("done", 0, false)
	f.hv.exit(done.RunID, 0, 0)
	eventually(t, "exit", func() bool { return f.state("done").State == StateExited })
	f.close()

	f.hv = newFake() // the reboot: nothing runs
	f.open("boot-2", []string{"orphan1"})
	if _, started, err := f.sup.Recover(context.Background()); err != nil || started != 3 {
		t.Fatalf("Recover started %d: %v", started, err)
	}
	if got := fmt.Sprint(f.hv.started); got != "[early mid late]" {
		t.Fatalf("start order %s", got)
	}
	if f.state("done").State != StateExited {
		t.Fatal("exited VM was started again")
	}
	found := false
	for _, id := range f.hv.destroyed {
		found = found || id == "orphan1"
	}
	if !found {
		t.Fatalf("orphan not removed: %v", f.hv.destroyed)
	}
}

// TestRecoverSameBoot: a running VM is reattached, not restarted; one
// whose run vanished is recorded as lost, with no exit code.
func TestRecoverSameBoot(t *testing.T) {
	f := newFixture(t)
	keep := f.create("keep", 0, false)
	lost := f.create("lost", 0, true)
	f.close()
	f.hv.mu.Lock()
	delete(f.hv.running, lost.RunID)
	f.hv.started = nil
	f.hv.mu.Unlock()
	f.open("boot-1", nil)
	reattached, started, err := f.sup.Recover(context.Background())
	if err != nil || reattached != 1 || started != 0 {
		t.Fatalf("Recover: %d reattached, %d started, %v", reattached, started, err)
	}
	if s := f.state("keep"); s.State != StateRunning || s.RunID != keep.RunID {
		t.Fatalf("keep: %+v", s)
	}
	eventually(t, "lost VM recorded", func() bool { return f.state("lost").State == StateLost })
	if s := f.state("lost"); s.HasExit || s.ExitCode != 0 || s.Pid != 0 {
		t.Fatalf("a lost VM has no exit: %+v", s)
	}
	if len(f.hv.started) != 0 {
		t.Fatalf("VMs restarted: %v", f.hv.started)
	}
}

func TestCreateErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bad := []CreateParams{
		{Name: "UPPER_case", ImageSHA256: f.sha},
		{Name: "vm", ImageSHA256: f.sha, Backend: "nope"},
		{Name: "vm", ImageSHA256: "00"},
		{Name: "vm", ImageSHA256: f.sha, MemoryMB: 5000},
		{Name: "vm", ImageSHA256: f.sha, CPUs: []uint32{7}},
		{Name: "vm", ImageSHA256: f.sha, CPUs: []uint32{1, 1}},
		{Name: "vm", ImageSHA256: f.sha, Restart: RestartPolicy{ExitCodes: []int32{300}}},
	}
	for _, p := range bad {
		if _, err := f.sup.Create(ctx, p); err == nil {
			t.Errorf("accepted %+v", p)
		}
	}
	if recs, _ := f.sup.Info(""); len(recs) != 0 {
		t.Fatalf("failed creates left records: %v", recs)
	}
	keys, _ := f.st.List(RecordsCollection)
	if len(keys) != 0 {
		t.Fatalf("failed creates left stored records: %v", keys)
	}
}

// TestRunTimesOrdered: a guest that exits before Start returns shows a
// start before its exit. The shim's record of the start wins over the
// daemon's clock; from a backend that reports no start, the start is
// never put after the exit either.
func TestRunTimesOrdered(t *testing.T) {
	f := newFixture(t)
	shimStart := time.Now().Add(-10 * time.Second).UTC().Round(0)
	f.hv.mu.Lock()
	f.hv.startedAt = shimStart
	f.hv.mu.Unlock()
	r := f.create("quick", 0, false)
	if !r.StartedAt.Equal(shimStart) {
		t.Fatalf("started_at %v, want the shim's %v", r.StartedAt, shimStart)
	}
	exited := shimStart.Add(time.Millisecond)
	f.hv.exitWith(r.RunID, &pluginv1.ExitStatus{ExitedAtNs: exited.UnixNano(), StartedAtNs: shimStart.UnixNano(), Message: "guest powered off"})
	eventually(t, "exit", func() bool { return f.state("quick").State == StateExited })
	got := f.state("quick")
	if !got.StartedAt.Equal(shimStart) || !got.ExitedAt.Equal(exited) {
		t.Fatalf("started %v exited %v, want %v and %v", got.StartedAt, got.ExitedAt, shimStart, exited)
	}
	if got.Message != "exited with code 0: guest powered off" {
		t.Fatalf("message %q: the backend's account is kept", got.Message)
	}

	// A backend that reports neither: the exit it reports, taken before
	// Start returned, bounds the start.
	f.hv.mu.Lock()
	f.hv.startedAt = time.Time{}
	f.hv.mu.Unlock()
	before := time.Now().UTC()
	r = f.create("old", 0, false)
	early := before.Add(-time.Microsecond)
	f.hv.exitWith(r.RunID, &pluginv1.ExitStatus{ExitedAtNs: early.UnixNano()})
	eventually(t, "exit", func() bool { return f.state("old").State == StateExited })
	got = f.state("old")
	if got.StartedAt.After(got.ExitedAt) || !got.ExitedAt.Equal(early) {
		t.Fatalf("started %v after exited %v", got.StartedAt, got.ExitedAt)
	}
}

// TestBackendDisabled: a petreld started without the backend its VMs ran
// on keeps exited VMs exited, with their exit code; running ones become
// unsupervised (still counted against policies, destroyed through
// RemoveRun), ones that restart on failure wait for the backend, and once
// it is enabled again an unsupervised VM is reattached.
func TestBackendDisabled(t *testing.T) {
	f := newFixture(t)
	done := f.create("done", 0, false)
	f.hv.exit(done.RunID, 3, 0)
	eventually(t, "exit", func() bool { return f.state("done").State == StateExited })
	up := f.create("up", 0, false)
	gone := f.create("gone", 0, false)
	later := f.create("later", 0, true)
	f.hv.mu.Lock()
	f.hv.unreachable = 1 << 20
	f.hv.mu.Unlock()
	f.hv.exit(later.RunID, 3, 0)
	eventually(t, "restarting", func() bool { return f.state("later").State == StateRestarting })
	f.close()
	f.hv.mu.Lock()
	f.hv.unreachable = 0
	f.hv.mu.Unlock()

	f.disabled = true
	f.open("boot-1", nil)
	if _, _, err := f.sup.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := f.state("done"); s.State != StateExited || !s.HasExit || s.ExitCode != 3 {
		t.Fatalf("an exited VM changed with its backend disabled: %+v", s)
	}
	for _, n := range []string{"up", "gone"} {
		if s := f.state(n); s.State != StateUnsupervised || !strings.Contains(s.Message, "backend fake is not enabled") {
			t.Fatalf("%s, running when its backend was disabled: %+v", n, s)
		}
	}
	if s := f.state("later"); s.State != StateRestarting || !strings.Contains(s.Message, "once backend fake is enabled") {
		t.Fatalf("restarting VM with its backend disabled: %+v", s)
	}
	if u := f.sup.UsageUnder(name.Root, ""); u.VMs != 3 {
		t.Fatalf("%d VMs counted against policies, want the unsupervised and restarting ones (3)", u.VMs)
	}
	if err := f.sup.Destroy(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(f.removed) != "[fake/"+gone.RunID+"]" {
		t.Fatalf("destroy of an unsupervised VM removed %v, want its run %s", f.removed, gone.RunID)
	}
	f.close()

	f.disabled = false
	f.open("boot-1", nil)
	if reattached, _, err := f.sup.Recover(context.Background()); err != nil || reattached != 1 {
		t.Fatalf("Recover with the backend back: %d reattached, %v", reattached, err)
	}
	if s := f.state("up"); s.State != StateRunning || s.RunID != up.RunID || s.Message != "" {
		t.Fatalf("an unsupervised VM whose backend is back: %+v", s)
	}
	eventually(t, "the restarting VM started again", func() bool { return f.state("later").State == StateRunning })
}

// TestReplaceRecordedBeforeOldRunGoes: a forced create (petrel update,
// create --force) records the new configuration, starting, before the old
// run is stopped, so a daemon killed while the new run starts finds the
// new image recorded and starts it, never the old record of a run that is
// gone. When the old run cannot be stopped, the old record stays.
func TestReplaceRecordedBeforeOldRunGoes(t *testing.T) {
	f := newFixture(t)
	old := f.create("web", 0, false)
	sha2, _, err := f.st.PutImage(bytes.NewReader([]byte("image 2")), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	f.hv.mu.Lock()
	f.hv.block["web"] = release
	f.hv.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := f.sup.Create(context.Background(), CreateParams{Name: "web", ImageSHA256: sha2, MemoryMB: 16, Force: true,
			ImageRef: "registry.example.org/web:2", ImageDigest: "sha256:feed"})
		done <- err
	}()
	eventually(t, "the old run to be stopped", func() bool {
		f.hv.mu.Lock()
		defer f.hv.mu.Unlock()
		return slices.Contains(f.hv.destroyed, old.RunID)
	})
	var stored Record
	if err := f.st.Get(RecordsCollection, recordKey("web"), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.ImageSHA256 != sha2 || stored.State != StateStarting || stored.RunID == old.RunID || stored.ImageRef != "registry.example.org/web:2" {
		t.Fatalf("while the new run starts, the store holds %+v", stored)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := f.state("web"); s.ImageSHA256 != sha2 || s.State != StateRunning || s.ImageDigest != "sha256:feed" {
		t.Fatalf("after the replace: %+v", s)
	}
}

// TestReplaceDownVMStartsFirst: a forced create of a VM that has exited
// starts the new run before it removes the old one, and writes nothing to
// the store before the new run is up: while the new run starts, the store
// still holds the old VM as it was (a daemon killed then finds it, and
// removes the new run as an orphan). Once the create has returned, the old
// run goes. A replacement that fails to start leaves neither run.
func TestReplaceDownVMStartsFirst(t *testing.T) {
	f := newFixture(t)
	old := f.create("web", 0, false)
	f.hv.exit(old.RunID, 0, 0)
	eventually(t, "the old run recorded as exited", func() bool { return f.state("web").State == StateExited })
	sha2, _, err := f.st.PutImage(bytes.NewReader([]byte("image 2")), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	f.hv.mu.Lock()
	f.hv.block["web"] = release
	f.hv.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := f.sup.Create(context.Background(), CreateParams{Name: "web", ImageSHA256: sha2, MemoryMB: 16, Force: true})
		done <- err
	}()
	// Start is blocked: the old run must still be there, and its record
	// unchanged.
	time.Sleep(50 * time.Millisecond)
	f.hv.mu.Lock()
	destroyedEarly := slices.Contains(f.hv.destroyed, old.RunID)
	f.hv.mu.Unlock()
	if destroyedEarly {
		t.Fatal("the old run was removed before the new one started")
	}
	var stored Record
	if err := f.st.Get(RecordsCollection, recordKey("web"), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.RunID != old.RunID || stored.State != StateExited || stored.ImageSHA256 != f.sha {
		t.Fatalf("while the new run starts, the store holds %+v", stored)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := f.state("web")
	if s.ImageSHA256 != sha2 || s.State != StateRunning || s.RunID == old.RunID {
		t.Fatalf("after the replace: %+v", s)
	}
	eventually(t, "the old run removed once its replacement ran", func() bool {
		f.hv.mu.Lock()
		defer f.hv.mu.Unlock()
		return slices.Contains(f.hv.destroyed, old.RunID)
	})
	if err := f.st.Get(RecordsCollection, recordKey("web"), &stored); err != nil || stored.RunID != s.RunID {
		t.Fatalf("stored after the replace: %+v, %v", stored, err)
	}

	// A replacement that fails: the VM is gone, and so are both runs.
	f.hv.exit(s.RunID, 0, 0)
	eventually(t, "the second run recorded as exited", func() bool { return f.state("web").State == StateExited })
	f.hv.mu.Lock()
	f.hv.unreachable = 1
	f.hv.mu.Unlock()
	if _, err := f.sup.Create(context.Background(), CreateParams{Name: "web", ImageSHA256: sha2, MemoryMB: 16, Force: true}); err == nil {
		t.Fatal("a create whose start failed succeeded")
	}
	if _, err := f.sup.Info("web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a failed replacement: %v", err)
	}
	f.hv.mu.Lock()
	destroyed := slices.Contains(f.hv.destroyed, s.RunID)
	f.hv.mu.Unlock()
	if !destroyed {
		t.Fatal("the replaced run stayed after a failed replacement")
	}
}
