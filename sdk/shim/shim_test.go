package shim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as shim and as tender, so the tests need no
// prebuilt programs: Launch re-executes it with these variables set.
const (
	envShim   = "PETREL_SHIM_TEST_SHIM"
	envTender = "PETREL_SHIM_TEST_TENDER"
)

func TestMain(m *testing.M) {
	// The shim passes its environment to the tender, so the shim role is
	// recognised by its command line (Launch always starts with --dir, a
	// spare with --spare).
	if os.Getenv(envShim) == "1" && len(os.Args) > 1 && (os.Args[1] == "--dir" || os.Args[1] == flagSpare) {
		os.Exit(Main(os.Args[1:]))
	}
	if os.Getenv(envTender) == "1" {
		os.Exit(testTender(os.Args[1:]))
	}
	if os.Getenv(envLauncher) == "1" {
		os.Exit(launcherProcess())
	}
	// Orphaned processes that some tests create on purpose are
	// re-parented to the test process, which reaps them, rather than to
	// an init that may not.
	_ = becomeSubreaper()
	os.Exit(m.Run())
}

// reapOrphan kills and reaps a process that was re-parented to the test
// process.
func reapOrphan(pid int) {
	_ = unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, 0, nil)
}

// testTender imitates a tender. Its arguments are actions run in order:
//
//	print:N      print N lines "line 0", "line 1", ...
//	stderr:TEXT  print TEXT and a newline on stderr
//	long:N       print a line of N 'x'
//	raw:TEXT     print TEXT without a newline
//	sleep:DUR    sleep
//	exit:CODE    exit with CODE
//	hang         block until a signal arrives
//	env:NAME     print "NAME=VALUE", or "NAME unset"
//
// On SIGTERM it prints what solo5-hvt prints and exits 1.
func testTender(args []string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Println("solo5-hvt: Exiting on signal 15")
		os.Exit(1)
	}()
	n := 0
	for _, a := range args {
		verb, val, _ := strings.Cut(a, ":")
		switch verb {
		case "print":
			k, _ := strconv.Atoi(val)
			for i := 0; i < k; i++ {
				fmt.Printf("line %d\n", n)
				n++
			}
		case "stderr":
			fmt.Fprintln(os.Stderr, val)
		case "long":
			k, _ := strconv.Atoi(val)
			fmt.Println(strings.Repeat("x", k))
		case "raw":
			fmt.Print(val)
		case "sleep":
			d, _ := time.ParseDuration(val)
			time.Sleep(d)
		case "exit":
			code, _ := strconv.Atoi(val)
			return code
		case "hang":
			select {}
		case "env":
			if v, ok := os.LookupEnv(val); ok {
				fmt.Printf("%s=%s\n", val, v)
			} else {
				fmt.Printf("%s unset\n", val)
			}
		default:
			fmt.Fprintf(os.Stderr, "test tender: unknown action %q\n", a)
			return 99
		}
	}
	return 0
}

// testConfig returns a launch configuration running the test binary as
// shim and as tender with the given actions.
func testConfig(t testing.TB, actions ...string) Config {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("find test binary: %v", err)
	}
	// Under -race, a process sleeps a second at exit unless told not to;
	// the re-executed shims and tenders need not.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return Config{
		ShimPath: exe,
		Dir:      t.TempDir(),
		Argv:     append([]string{exe}, actions...),
		Env:      append(os.Environ(), envShim+"=1", envTender+"=1", "GORACE="+gorace),
	}
}

// launch starts cfg and makes sure the shim and its tender are gone at
// the end of the test.
func launch(t testing.TB, cfg Config) *Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Launch(ctx, cfg)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	t.Cleanup(func() {
		select {
		case <-p.Done:
			return
		default:
		}
		// Let the shim kill and reap its tender; kill both only if the
		// shim does not manage to.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := Dial(p.Dir).Kill(ctx, syscall.SIGKILL); err == nil {
			select {
			case <-p.Done:
				return
			case <-time.After(10 * time.Second):
			}
		}
		_ = unix.Kill(-p.ShimPID, unix.SIGKILL)
		<-p.Done
		reapOrphan(p.TenderPID)
	})
	return p
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// history returns the console lines selected by since and count.
func history(t testing.TB, c *Client, since time.Time, count int) []Line {
	t.Helper()
	var out []Line
	if err := c.Console(testCtx(t), since, count, false, func(l Line) error {
		out = append(out, l)
		return nil
	}); err != nil {
		t.Fatalf("Console: %v", err)
	}
	return out
}

// waitLines polls the console until it holds at least n lines.
func waitLines(t testing.TB, c *Client, n int) []Line {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		lines := history(t, c, time.Time{}, 0)
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("console has %d lines after 15s, want %d: %v", len(lines), n, texts(lines))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func texts(lines []Line) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Text
	}
	return out
}

func wantTexts(t *testing.T, what string, got []Line, want ...string) {
	t.Helper()
	if g := strings.Join(texts(got), "|"); g != strings.Join(want, "|") {
		t.Errorf("%s: got %q, want %q", what, texts(got), want)
	}
}

func waitDone(t testing.TB, p *Process) {
	t.Helper()
	select {
	case <-p.Done:
	case <-time.After(15 * time.Second):
		t.Fatalf("shim %d still running", p.ShimPID)
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "print:3", "sleep:500ms", "print:2", "exit:3")
	p := launch(t, cfg)
	c := Dial(p.Dir)
	ctx := testCtx(t)

	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.ShimPID != p.ShimPID || info.TenderPID != p.TenderPID || info.Exited || info.StartedAt.IsZero() {
		t.Errorf("Info = %+v, process %+v", info, p)
	}

	lines := waitLines(t, c, 3)
	wantTexts(t, "history", lines[:3], "line 0", "line 1", "line 2")
	wantTexts(t, "count=2", history(t, c, time.Time{}, 2)[:2], "line 1", "line 2")
	wantTexts(t, "since line 1", history(t, c, lines[1].Time, 0)[:2], "line 1", "line 2")
	wantTexts(t, "since line 0, count=1", history(t, c, lines[0].Time, 1), lines[len(lines)-1].Text)

	// Follow from the start: history plus the lines printed after the
	// sleep, ending when the tender exits.
	var followed []Line
	if err := c.Console(ctx, time.Time{}, 0, true, func(l Line) error {
		followed = append(followed, l)
		return nil
	}); err != nil {
		t.Fatalf("follow: %v", err)
	}
	wantTexts(t, "follow", followed, "line 0", "line 1", "line 2", "line 3", "line 4")
	for i := 1; i < len(followed); i++ {
		if !followed[i].Time.After(followed[i-1].Time) {
			t.Errorf("line %d time %v not after %v", i, followed[i].Time, followed[i-1].Time)
		}
	}

	ex, err := c.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if ex.Code != 3 || ex.Signal != 0 || ex.TenderPID != p.TenderPID {
		t.Errorf("exit = %+v, want code 3 of pid %d", ex, p.TenderPID)
	}
	if !ex.ExitedAt.After(ex.StartedAt) || ex.Rusage.MaxRSSBytes <= 0 {
		t.Errorf("exit times or rusage implausible: %+v", ex)
	}
	// The launcher learns the start from the shim: the instant its exit
	// record and Info carry.
	if !p.StartedAt.Equal(ex.StartedAt) || !info.StartedAt.Equal(ex.StartedAt) {
		t.Errorf("started at %v (launch), %v (info), %v (exit record): one instant expected", p.StartedAt, info.StartedAt, ex.StartedAt)
	}
	waitDone(t, p)
	if _, err := os.Stat(filepath.Join(p.Dir, SocketName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still present after the shim exited: %v", err)
	}
}

func TestKill(t *testing.T) {
	t.Parallel()
	t.Run("SIGKILL", func(t *testing.T) {
		t.Parallel()
		p := launch(t, testConfig(t, "print:1", "hang"))
		c := Dial(p.Dir)
		waitLines(t, c, 1)
		if err := c.Kill(testCtx(t), syscall.SIGKILL); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		ex, err := c.Wait(testCtx(t))
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if ex.Signal != 9 || ex.Code != -1 {
			t.Errorf("exit = %+v, want signal 9, code -1", ex)
		}
		waitDone(t, p)
		if err := c.Kill(testCtx(t), syscall.SIGKILL); !errors.Is(err, ErrExited) {
			t.Errorf("Kill after exit = %v, want ErrExited", err)
		}
	})
	t.Run("SIGTERM", func(t *testing.T) {
		t.Parallel()
		p := launch(t, testConfig(t, "print:1", "hang"))
		c := Dial(p.Dir)
		waitLines(t, c, 1) // the tender handles SIGTERM before printing
		if err := c.Kill(testCtx(t), syscall.SIGUSR1); err == nil || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("Kill(SIGUSR1) = %v, want refusal", err)
		}
		if err := c.Kill(testCtx(t), syscall.SIGTERM); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		ex, err := c.Wait(testCtx(t))
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if ex.Code != 1 || ex.Signal != 0 {
			t.Errorf("exit = %+v, want code 1", ex)
		}
		wantTexts(t, "console", history(t, c, time.Time{}, 0), "line 0", "solo5-hvt: Exiting on signal 15")
	})
}

func TestShimForwardsSignals(t *testing.T) {
	t.Parallel()
	p := launch(t, testConfig(t, "print:1", "hang"))
	c := Dial(p.Dir)
	waitLines(t, c, 1)
	if err := unix.Kill(p.ShimPID, unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if !Alive(p.Dir) {
		t.Fatal("shim died of SIGHUP")
	}
	if err := unix.Kill(p.ShimPID, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ex, err := c.Wait(testCtx(t))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if ex.Code != 1 {
		t.Errorf("exit = %+v, want code 1 from the forwarded SIGTERM", ex)
	}
	waitDone(t, p)
}

func TestRecordsAfterExit(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "print:2", "stderr:oops", "raw:tail", "exit:7")
	p := launch(t, cfg)
	waitDone(t, p)

	ex, err := ReadExit(p.Dir)
	if err != nil {
		t.Fatalf("ReadExit: %v", err)
	}
	if ex.Code != 7 || ex.TenderPID != p.TenderPID || ex.StartedAt.IsZero() || ex.ExitedAt.IsZero() {
		t.Errorf("exit.json = %+v", ex)
	}
	lines, err := ReadConsole(p.Dir)
	if err != nil {
		t.Fatalf("ReadConsole: %v", err)
	}
	wantTexts(t, "console.jsonl", lines, "line 0", "line 1", "oops", "tail")
	rec, err := readShimRecord(p.Dir)
	if err != nil {
		t.Fatalf("shim.json: %v", err)
	}
	if rec.ShimPID != p.ShimPID || rec.TenderPID != p.TenderPID || len(rec.Argv) != len(cfg.Argv) {
		t.Errorf("shim.json = %+v", rec)
	}
	entries, _ := os.ReadDir(p.Dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") || e.Name() == SocketName {
			t.Errorf("leftover %s in %s", e.Name(), p.Dir)
		}
	}

	// With the shim gone the client serves from the files.
	c := Dial(p.Dir)
	ctx := testCtx(t)
	if Alive(p.Dir) {
		t.Error("Alive after the shim exited")
	}
	got, err := c.Wait(ctx)
	if err != nil || got.Code != 7 || !got.ExitedAt.Equal(ex.ExitedAt) {
		t.Errorf("Wait fallback = %+v, %v", got, err)
	}
	wantTexts(t, "Console fallback count=2", history(t, c, time.Time{}, 2), "oops", "tail")
	wantTexts(t, "Console fallback since", history(t, c, lines[1].Time, 0), "line 1", "oops", "tail")
	var followed []Line
	if err := c.Console(ctx, time.Time{}, 0, true, func(l Line) error { followed = append(followed, l); return nil }); err != nil {
		t.Errorf("follow fallback: %v", err)
	}
	wantTexts(t, "follow fallback", followed, "line 0", "line 1", "oops", "tail")
	info, err := c.Info(ctx)
	if err != nil || !info.Exited || info.ShimPID != p.ShimPID || info.TenderPID != p.TenderPID {
		t.Errorf("Info fallback = %+v, %v", info, err)
	}
	if _, err := c.Stats(ctx); !errors.Is(err, ErrExited) {
		t.Errorf("Stats after exit = %v, want ErrExited", err)
	}
}

func TestConsoleBounds(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "print:5", "long:20", "raw:end")
	cfg.ConsoleLines = 3
	cfg.LineMax = 8
	p := launch(t, cfg)
	waitDone(t, p)
	lines, err := ReadConsole(p.Dir)
	if err != nil {
		t.Fatalf("ReadConsole: %v", err)
	}
	wantTexts(t, "bounded console", lines, "line 4", "xxxxxxxx", "end")
	if len(lines) == 3 && (!lines[1].Truncated || lines[0].Truncated || lines[2].Truncated) {
		t.Errorf("truncation flags wrong: %+v", lines)
	}
}

func TestCPUPinning(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "print:1", "hang")
	cfg.CPUs = []int{0}
	p := launch(t, cfg)
	c := Dial(p.Dir)
	waitLines(t, c, 1)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.TenderPID))
	if err != nil {
		t.Fatal(err)
	}
	var allowed string
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			allowed = strings.TrimSpace(v)
		}
	}
	if allowed != "0" {
		t.Errorf("tender Cpus_allowed_list = %q, want \"0\"", allowed)
	}
	if err := c.Kill(testCtx(t), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
}

// processesMentioning returns the pids whose command line contains s.
func processesMentioning(t *testing.T, s string) []string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, d := range dirs {
		data, err := os.ReadFile(d)
		if err == nil && strings.Contains(string(data), s) {
			pids = append(pids, filepath.Base(filepath.Dir(d)))
		}
	}
	return pids
}

func TestLaunchFailure(t *testing.T) {
	t.Parallel()
	notExec := filepath.Join(t.TempDir(), "tender")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, want string
		mod        func(*Config)
	}{
		{"missing tender", "no such file", func(c *Config) { c.Argv = []string{"/nonexistent/solo5-hvt"} }},
		{"not executable", "permission denied", func(c *Config) { c.Argv = []string{notExec} }},
		{"unavailable cpu", "CPU 1023 is not available", func(c *Config) { c.CPUs = []int{1023} }},
		{"bad line max", "--line-max", func(c *Config) { c.ConsoleBytes, c.LineMax = 10, 20 }},
		{"missing shim", "no such file", func(c *Config) { c.ShimPath = "/nonexistent/petrel-shim" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t, "hang")
			tc.mod(&cfg)
			p, err := Launch(testCtx(t), cfg)
			if err == nil {
				_ = unix.Kill(-p.ShimPID, unix.SIGKILL)
				<-p.Done
				t.Fatal("Launch succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(cfg.Dir, SocketName)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("socket left behind: %v", err)
			}
			if pids := processesMentioning(t, cfg.Dir); len(pids) > 0 {
				t.Errorf("processes left behind: %v", pids)
			}
		})
	}
	t.Run("long socket path", func(t *testing.T) {
		cfg := testConfig(t, "hang")
		cfg.Dir = filepath.Join(cfg.Dir, strings.Repeat("d", 100))
		if err := os.Mkdir(cfg.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := Launch(testCtx(t), cfg); err == nil || !strings.Contains(err.Error(), "socket path") {
			t.Errorf("Launch = %v, want socket path error", err)
		}
	})
}

func TestSecondShimRefused(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "print:1", "hang")
	p := launch(t, cfg)
	if _, err := Launch(testCtx(t), cfg); !errors.Is(err, ErrBusy) {
		t.Errorf("second Launch = %v, want ErrBusy", err)
	}
	if !Alive(p.Dir) {
		t.Error("first shim no longer answers")
	}
}

func TestOwnSession(t *testing.T) {
	t.Parallel()
	p := launch(t, testConfig(t, "print:1", "hang"))
	waitLines(t, Dial(p.Dir), 1)
	sid, err := unix.Getsid(p.ShimPID)
	if err != nil {
		t.Fatal(err)
	}
	if sid != p.ShimPID {
		t.Errorf("shim sid = %d, want its pid %d", sid, p.ShimPID)
	}
	if own, _ := unix.Getsid(0); own == sid {
		t.Errorf("shim shares the launcher's session %d", own)
	}
	if tsid, err := unix.Getsid(p.TenderPID); err != nil || tsid != p.ShimPID {
		t.Errorf("tender sid = %d (%v), want %d", tsid, err, p.ShimPID)
	}
}

// TestShimGOMAXPROCS checks that Launch starts the shim with GOMAXPROCS=1
// when the caller's environment does not set it, and that the tender
// gets the caller's environment without it; a caller's own GOMAXPROCS
// reaches both.
func TestShimGOMAXPROCS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, set, shim, tender string
	}{
		{name: "unset", shim: "1", tender: "GOMAXPROCS unset"},
		{name: "set by caller", set: "2", shim: "2", tender: "GOMAXPROCS=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "env:GOMAXPROCS", "hang")
			cfg.Env = withoutVar(cfg.Env, "GOMAXPROCS")
			if tc.set != "" {
				cfg.Env = append(cfg.Env, "GOMAXPROCS="+tc.set)
			}
			p := launch(t, cfg)
			wantTexts(t, "tender environment", waitLines(t, Dial(p.Dir), 1)[:1], tc.tender)
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.ShimPID))
			if err != nil {
				t.Skipf("no /proc to read the shim's environment: %v", err)
			}
			var got []string
			for _, kv := range strings.Split(string(data), "\x00") {
				if v, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok {
					got = append(got, v)
				}
			}
			if len(got) != 1 || got[0] != tc.shim {
				t.Errorf("shim GOMAXPROCS = %q, want [%s]", got, tc.shim)
			}
		})
	}
}

func TestShimKilled(t *testing.T) {
	p := launch(t, testConfig(t, "print:1", "hang"))
	c := Dial(p.Dir)
	waitLines(t, c, 1)
	t.Cleanup(func() { reapOrphan(p.TenderPID) })

	pending := make(chan error, 1)
	go func() {
		_, err := c.Wait(testCtx(t))
		pending <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the Wait reach the shim
	if err := unix.Kill(p.ShimPID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)

	if err := <-pending; !errors.Is(err, ErrShimLost) {
		t.Errorf("pending Wait = %v, want ErrShimLost", err)
	}
	ctx := testCtx(t)
	if _, err := c.Wait(ctx); !errors.Is(err, ErrShimLost) {
		t.Errorf("Wait = %v, want ErrShimLost", err)
	}
	if _, err := c.Info(ctx); !errors.Is(err, ErrShimLost) {
		t.Errorf("Info = %v, want ErrShimLost", err)
	}
	if err := c.Kill(ctx, syscall.SIGTERM); !errors.Is(err, ErrShimLost) {
		t.Errorf("Kill = %v, want ErrShimLost", err)
	}
	if err := c.Console(ctx, time.Time{}, 0, false, func(Line) error { return nil }); !errors.Is(err, ErrShimLost) {
		t.Errorf("Console = %v, want ErrShimLost", err)
	}
	if Alive(p.Dir) {
		t.Error("Alive after kill -9")
	}
	// The orphaned tender keeps running, unsupervised.
	if err := unix.Kill(p.TenderPID, 0); err != nil {
		t.Errorf("orphaned tender gone: %v", err)
	}
}

func TestFollowCancel(t *testing.T) {
	t.Parallel()
	p := launch(t, testConfig(t, "print:1", "hang"))
	c := Dial(p.Dir)
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	got := make(chan Line, 10)
	go func() {
		errc <- c.Console(ctx, time.Time{}, 0, true, func(l Line) error { got <- l; return nil })
	}()
	select {
	case <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("no line followed")
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Console after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Console did not return after cancel")
	}
	// An error from the callback ends the stream too.
	stop := errors.New("stop")
	if err := c.Console(testCtx(t), time.Time{}, 0, true, func(Line) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Console with failing callback = %v", err)
	}
	if !Alive(p.Dir) {
		t.Error("shim gone after a follower left")
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	p := launch(t, testConfig(t, "print:1", "hang"))
	c := Dial(p.Dir)
	waitLines(t, c, 1)
	st, err := c.Stats(testCtx(t))
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.TenderPID != p.TenderPID || st.RSSBytes <= 0 || st.VSizeBytes <= 0 || st.Threads < 1 || st.ShimRSSBytes <= 0 || st.Minflt <= 0 {
		t.Errorf("Stats = %+v", st)
	}
	if d := time.Since(st.StartedAt); d < -2*time.Second || d > time.Minute {
		t.Errorf("Stats.StartedAt = %v, %v ago", st.StartedAt, d)
	}
}

func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	p := launch(t, testConfig(t, "print:1", "hang"))
	for _, req := range []string{`nonsense`, `{"op":"dance"}`, `{"op":"console","since":"yesterday"}`, `{"op":"console","count":-1}`, `{"op":"kill","signal":19}`} {
		conn, err := dialUnix(testCtx(t), filepath.Join(p.Dir, SocketName))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte(req + "\n")); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		n, _ := conn.Read(buf)
		_ = conn.Close()
		if !strings.Contains(string(buf[:n]), `"error_code":"bad_request"`) {
			t.Errorf("request %s: answer %q, want bad_request", req, buf[:n])
		}
	}
	if !Alive(p.Dir) {
		t.Error("shim gone after bad requests")
	}
}

// buildShim compiles cmd/petrel-shim, the binary whose footprint matters
// (the test binary is larger and, under -race, much larger).
func buildShim(t testing.TB) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, serr := os.Stat(gobin); serr != nil {
			t.Skipf("go toolchain not found to build petrel-shim: %v", err)
		}
	}
	out := filepath.Join(t.TempDir(), "petrel-shim")
	cmd := exec.Command(gobin, "build", "-o", out, "../../cmd/petrel-shim")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build petrel-shim: %v\n%s", err, msg)
	}
	return out
}

func TestShimRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds petrel-shim; skipped with -short")
	}
	cfg := testConfig(t, "print:200", "hang")
	cfg.ShimPath = buildShim(t)
	p := launch(t, cfg)
	c := Dial(p.Dir)
	waitLines(t, c, 200)
	ctx := testCtx(t)
	for i := 0; i < 20; i++ {
		if _, err := c.Stats(ctx); err != nil {
			t.Fatal(err)
		}
		history(t, c, time.Time{}, 0)
	}
	rss := func() int64 {
		status, err := readStatus(fmt.Sprintf("/proc/%d/status", p.ShimPID))
		if err != nil {
			t.Fatal(err)
		}
		return status["VmRSS"]
	}
	burst := rss()
	// The shim hands memory freed by a burst back to the kernel within
	// trimInterval; the budget applies to that settled figure.
	time.Sleep(trimInterval + 500*time.Millisecond)
	settled := rss()
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("petrel-shim VmRSS with a running tender and 200 console lines: %d kB right after 40 requests, %d kB settled; Stats.ShimRSSBytes %d kB",
		burst/1024, settled/1024, st.ShimRSSBytes/1024)
	if settled > 5<<20 {
		t.Errorf("petrel-shim settled VmRSS = %d kB, budget 5120 kB", settled/1024)
	}
	if err := c.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
}

// BenchmarkLaunch measures launching a shim and tender until the first
// console line can be read, plus tearing them down.
func BenchmarkLaunch(b *testing.B) {
	cfg := testConfig(b, "print:1", "hang")
	for b.Loop() {
		p := launch(b, cfg)
		c := Dial(p.Dir)
		first := errors.New("first line")
		if err := c.Console(testCtx(b), time.Time{}, 0, true, func(Line) error { return first }); !errors.Is(err, first) {
			b.Fatalf("Console: %v", err)
		}
		b.StopTimer()
		if err := c.Kill(testCtx(b), syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		<-p.Done
		b.StartTimer()
	}
}

func TestDescendantHoldsConsole(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("no sh to spawn a background process: %v", err)
	}
	// The tender exits at once but leaves a child holding the console
	// pipe; the shim must still record the exit after drainTimeout.
	cfg := testConfig(t)
	cfg.Argv = []string{sh, "-c", "sleep 30 & echo $!; exit 4"}
	p := launch(t, cfg)
	waitDone(t, p)
	lines, err := ReadConsole(p.Dir)
	if err != nil || len(lines) != 1 {
		t.Fatalf("console = %v, %v", lines, err)
	}
	if pid, err := strconv.Atoi(lines[0].Text); err == nil && pid > 0 {
		reapOrphan(pid)
	}
	ex, err := ReadExit(p.Dir)
	if err != nil || ex.Code != 4 {
		t.Errorf("exit = %+v, %v", ex, err)
	}
	if d := ex.ExitedAt.Sub(ex.StartedAt); d > drainTimeout {
		t.Errorf("exit recorded %v after start, the drain delay leaked into it", d)
	}
}

// TestStatsIncludeTheTendersChildren runs a tender that keeps a child
// process, as the built-in spt tender keeps its guest: the VM's figures
// are the sums over both processes.
func TestStatsIncludeTheTendersChildren(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("no sh to spawn a child process: %v", err)
	}
	cfg := testConfig(t)
	cfg.Argv = []string{sh, "-c", "sleep 30 & echo $!; wait"}
	p := launch(t, cfg)
	lines := waitLines(t, Dial(p.Dir), 1)
	child, err := strconv.Atoi(lines[0].Text)
	if err != nil {
		t.Fatalf("child pid %q: %v", lines[0].Text, err)
	}
	rss := func(pid int) int64 {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
		if err != nil {
			t.Fatal(err)
		}
		pages, _ := strconv.ParseInt(strings.Fields(string(data))[1], 10, 64)
		return pages * int64(os.Getpagesize())
	}
	// The shell may still be touching pages after its echo, so compare
	// only while both processes' RSS holds still around the read.
	var st Stats
	var want int64
	for deadline := time.Now().Add(5 * time.Second); ; {
		before := rss(p.TenderPID) + rss(child)
		if st, err = ReadStats(p.Dir); err != nil {
			t.Fatalf("ReadStats: %v", err)
		}
		if want = rss(p.TenderPID) + rss(child); want == before || time.Now().After(deadline) {
			break
		}
	}
	if st.Threads != 2 || st.RSSBytes != want {
		t.Errorf("ReadStats: %d threads, RSS %d; want 2 threads (shell and child) and RSS %d", st.Threads, st.RSSBytes, want)
	}
	if st.TenderPID != p.TenderPID {
		t.Errorf("TenderPID = %d, want %d", st.TenderPID, p.TenderPID)
	}
}

// TestResume: Resume finds the run a launch into a directory started
// (running, or over), waits while the directory is held by a launch in
// progress, and reports ErrNoRun where nothing runs or ran.
func TestResume(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	running := launch(t, testConfig(t, "print:1", "hang"))
	p, err := Resume(ctx, running.Dir)
	if err != nil || p.ShimPID != running.ShimPID || p.TenderPID != running.TenderPID {
		t.Fatalf("Resume(running) = %+v, %v; want shim %d, tender %d", p, err, running.ShimPID, running.TenderPID)
	}

	over := launch(t, testConfig(t, "exit:3"))
	<-over.Done
	p, err = Resume(ctx, over.Dir)
	if err != nil || p.TenderPID != over.TenderPID || !p.StartedAt.Equal(over.StartedAt) {
		t.Fatalf("Resume(exited) = %+v, %v; want tender %d started at %v", p, err, over.TenderPID, over.StartedAt)
	}

	empty := t.TempDir()
	if _, err := Resume(ctx, empty); !errors.Is(err, ErrNoRun) {
		t.Fatalf("Resume(empty) = %v, want ErrNoRun", err)
	}

	// A launcher holding the directory (it died before the shim
	// answered, or is still starting it): Resume waits for the holder.
	held := t.TempDir()
	lock, err := lockDir(held)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Resume(ctx, held)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Resume returned %v while the directory was held", err)
	case <-time.After(100 * time.Millisecond):
	}
	lock.Close()
	if err := <-done; !errors.Is(err, ErrNoRun) {
		t.Fatalf("Resume after the holder left = %v, want ErrNoRun", err)
	}
}

// TestLockHeldByShimOnly: the shim holds its directory's lock for as long
// as it runs, and its tender does not inherit it.
func TestLockHeldByShimOnly(t *testing.T) {
	t.Parallel()
	p := launch(t, testConfig(t, "print:1", "hang"))
	if _, err := lockDir(p.Dir); !errors.Is(err, ErrBusy) {
		t.Fatalf("lock of a running shim's directory: %v, want ErrBusy", err)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.TenderPID))
	if err != nil {
		t.Skip("no /proc:", err)
	}
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p.TenderPID, fd.Name())); strings.HasSuffix(target, LockFile) {
			t.Fatalf("the tender holds the lock on fd %s", fd.Name())
		}
	}
	if err := Dial(p.Dir).Kill(testCtx(t), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done
	lock, err := lockDir(p.Dir)
	if err != nil {
		t.Fatalf("lock after the shim exited: %v", err)
	}
	lock.Close()
}
