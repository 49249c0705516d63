package shim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// envLauncher makes the test binary a process that launches one VM
// through a Launcher, prints the pids of its shim and of the spare, and
// waits to be killed (TestSpareEndsWithItsLauncher).
const envLauncher = "PETREL_SHIM_TEST_LAUNCHER"

// testLauncher returns a Launcher that refills its spare at once, closed
// at the end of the test.
func testLauncher(t *testing.T) *Launcher {
	t.Helper()
	l := NewLauncher()
	l.RefillDelay = time.Millisecond
	t.Cleanup(func() { l.Close() })
	return l
}

// launchVia launches cfg through l and makes sure the shim and its tender
// are gone at the end of the test.
func launchVia(t *testing.T, l *Launcher, cfg Config) *Process {
	t.Helper()
	p, err := l.Launch(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	t.Cleanup(func() {
		_ = unix.Kill(-p.ShimPID, unix.SIGKILL)
		select {
		case <-p.Done:
		case <-time.After(10 * time.Second):
		}
	})
	return p
}

// waitSpare waits until l has a spare other than not, and returns its pid.
func waitSpare(t *testing.T, l *Launcher, not int) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if pid := l.SparePID(); pid != 0 && pid != not {
			return pid
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no new spare shim (the last was %d)", not)
	return 0
}

// firstLine waits for the first console line of p's tender.
func firstLine(t *testing.T, p *Process) string {
	t.Helper()
	var got string
	stop := errors.New("stop")
	err := Dial(p.Dir).Console(testCtx(t), time.Time{}, 0, true, func(l Line) error {
		got = l.Text
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("console of %s: %v", p.Dir, err)
	}
	return got
}

// gone reports whether pid no longer exists (exited and reaped).
func gone(pid int) bool { return errors.Is(unix.Kill(pid, 0), unix.ESRCH) }

func TestLauncherTakesSpareAndReplacesIt(t *testing.T) {
	t.Parallel()
	l := testLauncher(t)
	if pid := l.SparePID(); pid != 0 {
		t.Fatalf("a spare (%d) before the first launch", pid)
	}
	first := launchVia(t, l, testConfig(t, "print:1", "hang"))
	spare := waitSpare(t, l, 0)
	if spare == first.ShimPID {
		t.Fatalf("the spare is the first VM's shim %d", spare)
	}

	p := launchVia(t, l, testConfig(t, "print:1", "env:GOMAXPROCS", "hang"))
	if p.ShimPID != spare {
		t.Fatalf("second launch ran shim %d, not the spare %d", p.ShimPID, spare)
	}
	if got := firstLine(t, p); got != "line 0" {
		t.Fatalf("first line through the spare: %q", got)
	}
	info, err := Dial(p.Dir).Info(testCtx(t))
	if err != nil || info.ShimPID != spare || info.TenderPID != p.TenderPID {
		t.Fatalf("info of the VM run by the spare: %+v, %v", info, err)
	}
	// The tender gets the caller's environment, without the GOMAXPROCS
	// the launcher gave the shim alone.
	lines := waitLines(t, Dial(p.Dir), 2)
	if lines[1].Text != "GOMAXPROCS unset" {
		t.Fatalf("tender's console: %+v", lines)
	}
	// Its command line names no VM; its working directory does. The
	// tender's is the launcher's, as with a shim started afresh.
	wd, _ := os.Getwd()
	for pid, want := range map[int]string{p.ShimPID: p.Dir, p.TenderPID: wd} {
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil {
			t.Skipf("no /proc/PID/cwd: %v", err)
		}
		if w, _ := filepath.EvalSymlinks(want); got != w {
			t.Fatalf("working directory of %d: %s, want %s", pid, got, w)
		}
	}
	if log, err := os.ReadFile(p.Dir + "/" + LogFile); err != nil || !strings.Contains(string(log), "tender "+strconv.Itoa(p.TenderPID)+" started") {
		t.Fatalf("the spare's log did not go to %s: %q, %v", LogFile, log, err)
	}
	next := waitSpare(t, l, spare)
	if next == first.ShimPID || next == p.ShimPID {
		t.Fatalf("new spare %d is a VM's shim", next)
	}

	// The shim it became is the VM's: killing the tender ends it with an
	// exit record, as for a shim started afresh.
	if err := Dial(p.Dir).Kill(testCtx(t), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	if ex, err := ReadExit(p.Dir); err != nil || ex == nil || ex.Signal != int(syscall.SIGKILL) {
		t.Fatalf("exit record of the spare's run: %+v, %v", ex, err)
	}
}

func TestLauncherCloseStopsSpare(t *testing.T) {
	t.Parallel()
	l := testLauncher(t)
	p := launchVia(t, l, testConfig(t, "print:1", "hang"))
	spare := waitSpare(t, l, 0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if !gone(spare) {
		t.Fatalf("spare %d still exists after Close", spare)
	}
	// Launched VMs are not the launcher's to stop.
	if _, err := Dial(p.Dir).Info(testCtx(t)); err != nil {
		t.Fatalf("VM after Close: %v", err)
	}
	if _, err := l.Launch(testCtx(t), testConfig(t, "hang")); !errors.Is(err, errLauncherClosed) {
		t.Fatalf("launch after Close: %v", err)
	}
}

func TestLauncherSurvivesSpareCrash(t *testing.T) {
	t.Parallel()
	l := testLauncher(t)
	launchVia(t, l, testConfig(t, "print:1", "hang"))
	spare := waitSpare(t, l, 0)

	// A spare that died while waiting is noticed and not used.
	if err := unix.Kill(spare, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); l.SparePID() == spare; {
		if time.Now().After(deadline) {
			t.Fatal("dead spare still offered")
		}
		time.Sleep(time.Millisecond)
	}
	p := launchVia(t, l, testConfig(t, "print:1", "hang"))
	if p.ShimPID == spare {
		t.Fatal("launch used the dead spare")
	}
	if got := firstLine(t, p); got != "line 0" {
		t.Fatalf("first line: %q", got)
	}

	// One killed just before it is handed the work: the launch still
	// succeeds, with a shim started afresh, whichever way the hand-over
	// fails.
	for i := 0; i < 5; i++ {
		spare = waitSpare(t, l, spare)
		if err := unix.Kill(spare, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p := launchVia(t, l, testConfig(t, "print:1", "hang"))
		if p.ShimPID == spare {
			t.Fatal("launch reported the killed spare as its shim")
		}
		if got := firstLine(t, p); got != "line 0" {
			t.Fatalf("first line after a killed spare: %q", got)
		}
	}
}

func TestLauncherSpareForOtherEnvironmentUnused(t *testing.T) {
	t.Parallel()
	l := testLauncher(t)
	launchVia(t, l, testConfig(t, "print:1", "hang"))
	spare := waitSpare(t, l, 0)
	cfg := testConfig(t, "env:PETREL_SHIM_TEST_OTHER", "hang")
	cfg.Env = append(cfg.Env, "PETREL_SHIM_TEST_OTHER=1")
	p := launchVia(t, l, cfg)
	if p.ShimPID == spare {
		t.Fatal("a spare started with another environment ran the VM")
	}
	if got := firstLine(t, p); got != "PETREL_SHIM_TEST_OTHER=1" {
		t.Fatalf("tender's environment: %q", got)
	}
	// The unfit spare is retired, and the next one fits the new launch.
	for deadline := time.Now().Add(10 * time.Second); !gone(spare); {
		if time.Now().After(deadline) {
			t.Fatalf("unfit spare %d still running", spare)
		}
		time.Sleep(time.Millisecond)
	}
	next := waitSpare(t, l, spare)
	cfg2 := testConfig(t, "hang")
	cfg2.Env = cfg.Env
	if p2 := launchVia(t, l, cfg2); p2.ShimPID != next {
		t.Fatalf("launch with the new environment ran %d, not the spare %d", p2.ShimPID, next)
	}
}

// TestSpareEndsWithItsLauncher kills a process that launched a VM through
// a Launcher: its spare must exit with it, while the VM keeps running.
func TestSpareEndsWithItsLauncher(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "hang")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envLauncher+"=1", "PETREL_SHIM_TEST_DIR="+cfg.Dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var shimPID, tenderPID, sparePID int
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("launcher process said nothing: %v", sc.Err())
	}
	if _, err := fmt.Sscanf(sc.Text(), "%d %d %d", &shimPID, &tenderPID, &sparePID); err != nil {
		t.Fatalf("launcher process: %q: %v", sc.Text(), err)
	}
	t.Cleanup(func() {
		reapOrphan(shimPID)
		reapOrphan(tenderPID)
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// The spare is re-parented to this test process (a subreaper), which
	// reaps it once it has exited.
	exited := make(chan error, 1)
	go func() {
		var ws unix.WaitStatus
		_, err := unix.Wait4(sparePID, &ws, 0, nil)
		exited <- err
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("wait for spare %d: %v", sparePID, err)
		}
	case <-time.After(10 * time.Second):
		reapOrphan(sparePID)
		t.Fatalf("spare %d outlived its launcher by 10 s", sparePID)
	}
	if _, err := Dial(cfg.Dir).Info(testCtx(t)); err != nil {
		t.Fatalf("the VM did not outlive its launcher: %v", err)
	}
}

// launcherProcess is the re-executed side of TestSpareEndsWithItsLauncher.
func launcherProcess() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	env := append(withoutVar(os.Environ(), envLauncher), envShim+"=1", envTender+"=1", "GORACE="+gorace)
	l := NewLauncher()
	l.RefillDelay = time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := l.Launch(ctx, Config{ShimPath: exe, Dir: os.Getenv("PETREL_SHIM_TEST_DIR"), Argv: []string{exe, "hang"}, Env: env})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for l.SparePID() == 0 {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "no spare")
			return 1
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("%d %d %d\n", p.ShimPID, p.TenderPID, l.SparePID())
	select {}
}
