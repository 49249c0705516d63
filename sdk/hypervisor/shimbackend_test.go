package hypervisor_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
	"github.com/petrel-vmm/petrel/sdk/shim"
)

func TestMain(m *testing.M) {
	sdktest.MaybeRunShim()
	os.Exit(m.Run())
}

// shimBackend returns a ShimBackend with a short run directory (socket
// paths are limited) and the shim to start its VMs with.
func shimBackend(t *testing.T) (*hypervisor.ShimBackend, string) {
	t.Helper()
	rd, err := os.MkdirTemp("/tmp", "sbt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(rd) })
	sh, err := sdktest.WriteShimWrapper(rd)
	if err != nil {
		t.Fatal(err)
	}
	var b hypervisor.ShimBackend
	if err := b.SetRunDir(filepath.Join(rd, "run")); err != nil {
		t.Fatal(err)
	}
	return &b, sh
}

// start runs script under a shim as VM id, and destroys it when the test
// ends.
func start(t *testing.T, b *hypervisor.ShimBackend, sh, id, script string, prepare func(string) error) *shim.Process {
	t.Helper()
	spec := &pluginv1.VMSpec{Id: id, Name: id, ConsoleLines: 100}
	dir, err := b.Dir(id)
	if err != nil {
		t.Fatal(err)
	}
	p, got, err := b.StartShim(context.Background(), spec, hypervisor.ShimLaunch{Shim: sh,
		Argv: []string{"/bin/sh", "-c", script, "vm", dir}, Prepare: prepare})
	if err != nil {
		t.Fatalf("StartShim: %v", err)
	}
	if got != dir || p.TenderPID == 0 {
		t.Fatalf("StartShim = %+v in %s; want a process in %s", p, got, dir)
	}
	t.Cleanup(func() { b.Destroy(context.Background(), id) })
	return p
}

// console returns the VM's console history as one string.
func console(t *testing.T, b *hypervisor.ShimBackend, id string) string {
	t.Helper()
	var lines []string
	err := b.Console(context.Background(), &pluginv1.ConsoleRequest{Id: id}, func(l *pluginv1.ConsoleLine) error {
		lines = append(lines, l.GetText())
		return nil
	})
	if err != nil {
		t.Fatalf("Console: %v", err)
	}
	return strings.Join(lines, "\n")
}

// TestShimBackendUnconfigured: before SetRunDir no VM can be named, and a
// run directory is required.
func TestShimBackendUnconfigured(t *testing.T) {
	var b hypervisor.ShimBackend
	ctx := context.Background()
	if _, err := b.Wait(ctx, "vm"); !errors.Is(err, hypervisor.ErrUnavailable) {
		t.Errorf("Wait before SetRunDir = %v; want ErrUnavailable", err)
	}
	if err := b.Destroy(ctx, "vm"); !errors.Is(err, hypervisor.ErrUnavailable) {
		t.Errorf("Destroy before SetRunDir = %v; want ErrUnavailable", err)
	}
	if err := b.SetRunDir(""); !errors.Is(err, hypervisor.ErrInvalid) {
		t.Errorf("SetRunDir(\"\") = %v; want ErrInvalid", err)
	}
}

// TestShimBackendUnknownVM: calls naming a VM that has no directory fail
// with ErrUnknownVM (ErrInvalid for an id that is not one), and Destroy
// finds it destroyed already.
func TestShimBackendUnknownVM(t *testing.T) {
	b, _ := shimBackend(t)
	ctx := context.Background()
	for id, want := range map[string]error{"nope": hypervisor.ErrUnknownVM, "Not/An-Id": hypervisor.ErrInvalid} {
		_, werr := b.Wait(ctx, id)
		_, serr := b.Stats(ctx, id)
		_, rerr := b.Recover(ctx, &pluginv1.Handle{Id: id})
		cerr := b.Console(ctx, &pluginv1.ConsoleRequest{Id: id}, func(*pluginv1.ConsoleLine) error { return nil })
		for what, err := range map[string]error{"Wait": werr, "Stats": serr, "Recover": rerr, "Console": cerr, "Stop": b.Stop(ctx, id, time.Second)} {
			if !errors.Is(err, want) {
				t.Errorf("%s(%q) = %v; want %v", what, id, err, want)
			}
		}
	}
	if err := b.Destroy(ctx, "nope"); err != nil {
		t.Errorf("Destroy of a VM with no directory = %v", err)
	}
}

// TestShimBackendLifecycle runs one VM through the calls the base
// serves: the file Prepare wrote is there when the VM starts, Recover
// finds it running, StatsBatch samples it and leaves the others out, Stop
// ends it with SIGTERM, and Wait, Recover and Console report the end.
func TestShimBackendLifecycle(t *testing.T) {
	b, sh := shimBackend(t)
	ctx := context.Background()
	prepare := func(dir string) error { return os.WriteFile(filepath.Join(dir, "note"), []byte("prepared\n"), 0o600) }
	p := start(t, b, sh, "vm-1", `cat "$1/note"; exec sleep 60`, prepare)
	if rec, err := b.Recover(ctx, &pluginv1.Handle{Id: "vm-1"}); err != nil || !rec.GetRunning() {
		t.Fatalf("Recover of a running VM = %v, %v", rec, err)
	}
	var batcher hypervisor.StatsBatcher = b
	stats, err := batcher.StatsBatch(ctx, []string{"vm-1", "nope", "Not/An-Id"})
	if err != nil || len(stats) != 1 || stats["vm-1"].GetRssBytes() <= 0 {
		t.Fatalf("StatsBatch = %v, %v; want vm-1 alone, sampled", stats, err)
	}
	if err := b.Stop(ctx, "vm-1", 10*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st, err := b.Wait(ctx, "vm-1")
	if err != nil || st.GetSignal() != int32(syscall.SIGTERM) {
		t.Fatalf("Wait after Stop = %v, %v; want SIGTERM", st, err)
	}
	if syscall.Kill(p.TenderPID, 0) == nil {
		t.Error("VM process alive after Stop and Wait")
	}
	if rec, err := b.Recover(ctx, &pluginv1.Handle{Id: "vm-1"}); err != nil || rec.GetRunning() || rec.GetLost() {
		t.Errorf("Recover of a VM that exited = %v, %v; want neither running nor lost", rec, err)
	}
	if c := console(t, b, "vm-1"); !strings.Contains(c, "prepared") {
		t.Errorf("console %q lacks what Prepare wrote", c)
	}
	if stats, err := b.StatsBatch(ctx, []string{"vm-1"}); err != nil || len(stats) != 0 {
		t.Errorf("StatsBatch of an exited VM = %v, %v; want nothing", stats, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.StatsBatch(cctx, []string{"vm-1"}); !errors.Is(err, context.Canceled) {
		t.Errorf("StatsBatch with an ended context = %v", err)
	}
}

// TestShimBackendStopWith: a StopFunc that does not stop the VM is
// followed by SIGKILL once the timeout has passed; one that reports the
// VM over makes Stop return at once.
func TestShimBackendStopWith(t *testing.T) {
	b, sh := shimBackend(t)
	ctx := context.Background()
	start(t, b, sh, "stubborn", `exec sleep 60`, nil)
	asked := 0
	ignore := func(context.Context, string, *shim.Client) error { asked++; return nil }
	t0 := time.Now()
	if err := b.StopWith(ctx, "stubborn", 300*time.Millisecond, ignore); err != nil {
		t.Fatalf("StopWith: %v", err)
	}
	if asked != 1 || time.Since(t0) < 300*time.Millisecond {
		t.Fatalf("StopWith asked %d times and returned after %v; want once, after the timeout", asked, time.Since(t0))
	}
	if st, err := b.Wait(ctx, "stubborn"); err != nil || st.GetSignal() != int32(syscall.SIGKILL) {
		t.Fatalf("Wait = %v, %v; want SIGKILL", st, err)
	}

	start(t, b, sh, "over", `exec sleep 60`, nil)
	over := func(context.Context, string, *shim.Client) error { return shim.ErrExited }
	t0 = time.Now()
	if err := b.StopWith(ctx, "over", time.Minute, over); err != nil || time.Since(t0) > 10*time.Second {
		t.Fatalf("StopWith a VM reported over = %v after %v; want nil at once", err, time.Since(t0))
	}
	failed := func(context.Context, string, *shim.Client) error { return errors.New("no answer") }
	if err := b.StopWith(ctx, "over", time.Minute, failed); err == nil || !strings.Contains(err.Error(), "stop over: no answer") {
		t.Fatalf("StopWith a failing StopFunc = %v", err)
	}
}

// TestStartShimPrepareFails: a Prepare error fails the start and leaves
// no directory, so that the next Start begins afresh.
func TestStartShimPrepareFails(t *testing.T) {
	b, sh := shimBackend(t)
	spec := &pluginv1.VMSpec{Id: "vm-1", Name: "web"}
	_, _, err := b.StartShim(context.Background(), spec, hypervisor.ShimLaunch{Shim: sh, Argv: []string{"/bin/true"},
		Prepare: func(string) error { return errors.New("disk full") }})
	if err == nil || !strings.Contains(err.Error(), "start web: disk full") {
		t.Fatalf("StartShim = %v; want the Prepare error", err)
	}
	dir, _ := b.Dir("vm-1")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("run directory left after a failed Prepare: %v", err)
	}
}
