package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestCreateConsoleKillRecoverDestroy is the core promise: a VM survives
// petreld being killed with SIGKILL, the new petreld reattaches (same pid,
// console history intact), and destroy leaves nothing behind.
func TestCreateConsoleKillRecoverDestroy(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("web.hvt", solo5.TargetHVT)
	out := e.mustPetrel("create", "team:web", img, "--mem", "16", "--arg", "lines=3", "--arg", "run=forever")
	if !strings.Contains(out, "created team:web") {
		t.Fatalf("create said %q", out)
	}
	waitFor(t, "console line 3", 10*time.Second, func() bool {
		return strings.Contains(e.petrel("console", "team:web").out, "line 3")
	})
	vm := e.info("team:web")
	if vm.State != "running" || vm.Backend != "hvt" || vm.Pid == 0 || vm.ExitCode != nil {
		t.Fatalf("info after create: %+v", vm)
	}
	wantCmd := []string{"--mem=16", "--", e.dataDir}
	if len(vm.Command) < 4 || vm.Command[1] != wantCmd[0] || vm.Command[2] != wantCmd[1] || !strings.HasPrefix(vm.Command[3], wantCmd[2]) {
		t.Fatalf("tender command line %q", vm.Command)
	}
	if !alive(vm.Pid) || !alive(vm.ShimPid) {
		t.Fatal("tender or shim not running")
	}

	// Only this petreld's plugins are watched: another petreld on the
	// host (the user's, another test's) runs the same binaries.
	plugins := children(e.pid(), "petrel-plugin-")
	if len(plugins) == 0 {
		t.Fatal("petreld has no plugin processes")
	}
	e.kill9()
	if !alive(vm.Pid) || !alive(vm.ShimPid) {
		t.Fatal("VM died with petreld")
	}
	waitFor(t, "plugins to exit with petreld", 10*time.Second, func() bool {
		for _, p := range plugins {
			if alive(p) {
				return false
			}
		}
		return true
	})
	e.start()
	again := e.info("team:web")
	if again.State != "running" || again.Pid != vm.Pid || again.ShimPid != vm.ShimPid {
		t.Fatalf("after restart of petreld: %+v (was pid %d)", again, vm.Pid)
	}
	hist := e.mustPetrel("console", "team:web", "--no-timestamps")
	for _, want := range []string{"line 1", "line 2", "line 3"} {
		if strings.Count(hist, want+"\n") != 1 {
			t.Fatalf("console history after recovery lacks or repeats %q:\n%s", want, hist)
		}
	}
	last := e.mustPetrel("console", "team:web", "--count", "1", "--no-timestamps")
	if strings.TrimSpace(last) != "line 3" {
		t.Fatalf("--count 1 gave %q", last)
	}

	e.mustPetrel("destroy", "team:web")
	waitFor(t, "tender and shim to exit", 10*time.Second, func() bool { return !alive(vm.Pid) && !alive(vm.ShimPid) })
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("left behind after destroy: %v", left)
	}
	if r := e.petrel("info", "team:web"); r.code != 4 {
		t.Fatalf("info of destroyed VM: exit %d (%s)", r.code, r.err)
	}
	recs, _ := filepath.Glob(filepath.Join(e.dataDir, "vms", "*"))
	if len(recs) != 0 {
		t.Fatalf("records left: %v", recs)
	}
	e.stop()
	if _, err := os.Stat(e.socket); !os.IsNotExist(err) {
		t.Fatal("socket left after petreld stopped")
	}
	if p := processesUnder(e.dir); len(p) != 0 {
		t.Fatalf("processes left: %v", p)
	}
}

// TestExitAndRestartPolicy covers exit recording and restart-on-failure.
func TestExitAndRestartPolicy(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("x.hvt", solo5.TargetHVT)

	e.mustPetrel("create", "once", img, "--arg", "exit=7")
	waitFor(t, "exit recorded", 10*time.Second, func() bool { return e.info("once").State == "exited" })
	if vm := e.info("once"); vm.ExitCode == nil || *vm.ExitCode != 7 || vm.Restarts != 0 {
		t.Fatalf("once: %+v", vm)
	}
	if !strings.Contains(e.mustPetrel("console", "once"), "solo5_exit(7)") {
		t.Fatal("console of exited VM lost")
	}

	e.mustPetrel("create", "flaky", img, "--arg", "exit=3", "--arg", "run=50ms", "--restart-on-fail")
	waitFor(t, "two restarts", 15*time.Second, func() bool { return e.info("flaky").Restarts >= 2 })

	e.mustPetrel("create", "fatal", img, "--arg", "exit=1", "--restart-on-fail")
	waitFor(t, "exit 1 recorded", 10*time.Second, func() bool { return e.info("fatal").State == "exited" })
	time.Sleep(500 * time.Millisecond)
	if vm := e.info("fatal"); vm.Restarts != 0 || vm.State != "exited" {
		t.Fatalf("exit 1 must not restart: %+v", vm)
	}

	e.mustPetrel("create", "picky", img, "--arg", "exit=5", "--exit-code", "4")
	waitFor(t, "exit 5 recorded", 10*time.Second, func() bool { return e.info("picky").State == "exited" })
	if vm := e.info("picky"); vm.Restarts != 0 {
		t.Fatalf("exit 5 not in the list must not restart: %+v", vm)
	}

	// Destroy works on a VM in a boot loop.
	e.mustPetrel("destroy", "flaky")
	for _, n := range []string{"once", "fatal", "picky"} {
		e.mustPetrel("destroy", n)
	}
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestRestartAndSignals covers restart with new arguments and a VM killed
// by a signal (never restarted).
func TestRestartAndSignals(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("r.hvt", solo5.TargetHVT)
	e.mustPetrel("create", "svc", img, "--arg", "run=forever", "--restart-on-fail")
	first := e.info("svc")
	// The guest handles SIGTERM once it has booted (printed its banner).
	waitFor(t, "guest booted", 10*time.Second, func() bool {
		return strings.Contains(e.petrel("console", "svc").out, "fake tender")
	})
	e.mustPetrel("restart", "svc", "--arg", "run=forever", "--arg", "lines=2")
	second := e.info("svc")
	if second.Pid == first.Pid || second.State != "running" || len(second.Args) != 2 {
		t.Fatalf("restart: %+v", second)
	}
	if alive(first.Pid) {
		t.Fatal("old tender still running after restart")
	}
	waitFor(t, "graceful stop message in console", 5*time.Second, func() bool {
		return strings.Contains(e.petrel("console", "svc").out, "Exiting on signal 15")
	})
	syscall.Kill(second.Pid, syscall.SIGKILL)
	waitFor(t, "signal exit recorded", 10*time.Second, func() bool { return e.info("svc").State == "exited" })
	if vm := e.info("svc"); vm.Restarts != 0 || !strings.Contains(vm.Message, "signal 9") {
		t.Fatalf("after SIGKILL: %+v", vm)
	}
	e.mustPetrel("destroy", "svc")
}

// TestLostShimHasNoExitCode: a VM whose shim is killed outright, leaving
// no exit record, is "lost", with no exit code (absent from info --json,
// "-" in the table), even when an earlier run left one; it is not
// restarted, even with --restart-on-fail, and it is destroyed like any
// other.
func TestLostShimHasNoExitCode(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("l.hvt", solo5.TargetHVT)
	e.mustPetrel("create", "gone", img, "--arg", "exit=3", "--arg", "run=3s", "--restart-on-fail")
	waitFor(t, "a restart after exit 3", 15*time.Second, func() bool {
		vm := e.info("gone")
		return vm.Restarts == 1 && vm.State == "running" && vm.ExitCode != nil && *vm.ExitCode == 3
	})
	vm := e.info("gone")
	syscall.Kill(vm.ShimPid, syscall.SIGKILL)
	waitFor(t, "lost recorded", 10*time.Second, func() bool { return e.info("gone").State == "lost" })
	got := e.info("gone")
	if got.ExitCode != nil || got.Pid != 0 || !strings.Contains(got.Message, "unknown") {
		t.Fatalf("lost VM: %+v", got)
	}
	if raw := e.mustPetrel("info", "gone", "--json"); strings.Contains(raw, "exit_code") {
		t.Fatalf("info --json of a lost VM has an exit code:\n%s", raw)
	}
	table := e.mustPetrel("info", "gone")
	if fields := strings.Fields(strings.Split(table, "\n")[1]); len(fields) < 7 || fields[1] != "lost" || fields[6] != "-" {
		t.Fatalf("info table of a lost VM:\n%s", table)
	}
	time.Sleep(500 * time.Millisecond)
	if again := e.info("gone"); again.State != "lost" || again.Restarts != 1 {
		t.Fatalf("a lost VM was restarted: %+v", again)
	}
	if alive(vm.Pid) {
		t.Fatalf("tender %d outlived its shim", vm.Pid)
	}
	e.mustPetrel("destroy", "gone")
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}
