package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultShimName is the program Launch looks up in PATH when
// Config.ShimPath is empty.
const DefaultShimName = "petrel-shim"

// Launch timeouts.
const (
	// defaultReadyTimeout bounds the wait for the readiness report when
	// ctx has no deadline of its own.
	defaultReadyTimeout = 30 * time.Second
	// failedExitTimeout is how long a shim that reported a failure gets to
	// exit on its own before Launch kills it.
	failedExitTimeout = 5 * time.Second
)

// Config describes one tender to run under a new shim.
type Config struct {
	// ShimPath is the petrel-shim binary; empty means DefaultShimName
	// looked up in PATH.
	ShimPath string
	// Dir is the VM's runtime directory; it must exist (create it 0700).
	// Its socket path must not exceed MaxSocketPath bytes.
	Dir string
	// CPUs pins the tender to these CPU ids; empty leaves it unpinned.
	CPUs []int
	// ConsoleLines, ConsoleBytes and LineMax bound the console ring;
	// zero means the shim's default.
	ConsoleLines, ConsoleBytes, LineMax int
	// Argv is the tender's command line, Argv[0] being its path.
	Argv []string
	// Env is the environment of the shim and hence of the tender; nil
	// means the caller's environment.
	Env []string
}

// Process is a shim started by Launch.
type Process struct {
	// ShimPID is the shim, leader of its own session and process group.
	ShimPID int
	// TenderPID is the tender, the shim's child.
	TenderPID int
	// StartedAt is when the shim started the tender, by the shim's clock
	// (zero from a shim too old to report it). Exit.StartedAt is the same
	// instant, so a run's start and exit are always ordered.
	StartedAt time.Time
	// Dir is the runtime directory, for Dial, ReadExit and ReadConsole.
	Dir string
	// Done is closed when the shim process exits. Only the launcher sees
	// it: a plugin that reconnects after a restart uses Client.Wait.
	Done <-chan struct{}
}

// Launch starts a shim for cfg in a session of its own (so that it and its
// tender outlive the caller), waits for the shim's readiness report and
// returns once the tender runs. The caller's process reaps the shim when it
// exits, so no zombie is left; if the caller dies first, init adopts the
// shim.
//
// Launch holds DIR's lock (LockFile) and hands it to the shim, which keeps
// it while it runs; a launch into a directory whose lock is held fails
// with ErrBusy, so that one directory never has two shims. A launcher
// that dies mid-launch is followed with Resume, which finds what it
// started.
//
// A tender that cannot be started (missing, not executable, bad CPU list)
// is reported as an error, and then nothing is left behind: the shim has
// exited and its socket is removed (DIR and shim.log stay for the caller).
// If ctx ends before the shim reports, the shim and anything it started
// are killed. Without a deadline in ctx, the shim gets 30 s to report.
func Launch(ctx context.Context, cfg Config) (*Process, error) {
	env, own := shimEnv(cfg.Env)
	args, err := shimArgs(cfg, own)
	if err != nil {
		return nil, err
	}
	shimPath := cfg.ShimPath
	if shimPath == "" {
		shimPath = DefaultShimName
	}
	return launchWith(ctx, cfg, shimPath, env, args, nil)
}

// launchWith is Launch of shimPath with env and args, handing the work to
// sp when it is not nil (see Launcher) and starting the shim afresh
// otherwise, or when sp turns out to be gone.
func launchWith(ctx context.Context, cfg Config, shimPath string, env, args []string, sp *spare) (*Process, error) {
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultReadyTimeout)
		defer cancel()
	}

	// The directory's lock passes to the shim, which holds it while it
	// runs: from here on, the directory is never without a holder until
	// the run is over or its launch has failed.
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("launch shim: %w", err)
	}
	logPath := filepath.Join(cfg.Dir, LogFile)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("launch shim: open log: %w", err)
	}
	var pr *os.File
	var r *shimReaper
	if sp != nil {
		if err := sp.handOver(args, logf, lock); err != nil {
			// The spare died before it got the work: nothing was started,
			// and the launch goes on without it.
			sp.kill()
			sp = nil
		} else {
			pr, r = sp.conn, sp.r
		}
	}
	if r == nil {
		if pr, r, err = startShim(shimPath, env, args, logf, lock); err != nil {
			_ = logf.Close()
			_ = lock.Close()
			return nil, err
		}
	}
	_ = logf.Close()
	_ = lock.Close()

	rep, err := readReady(ctx, pr)
	_ = pr.Close()
	if err == nil && rep.Error != "" {
		err = fmt.Errorf("launch %s: %s", cfg.Argv[0], rep.Error)
		r.abandon(failedExitTimeout)
	} else if err == nil && rep.TenderPID <= 0 {
		err = fmt.Errorf("launch %s: shim reported no tender pid", cfg.Argv[0])
		r.abandon(0)
	} else if err != nil {
		r.abandon(0)
		err = fmt.Errorf("launch %s: %w (see %s)", cfg.Argv[0], err, logPath)
	}
	if err != nil {
		// A shim that failed removes its socket itself; one that had to be
		// killed may leave it stale. A socket that still answers belongs
		// to another shim serving the same directory and is left alone.
		if !Alive(cfg.Dir) {
			if rerr := removeIfExists(filepath.Join(cfg.Dir, SocketName)); rerr != nil {
				err = fmt.Errorf("%w; %w", err, rerr)
			}
		}
		if sp != nil && errors.Is(err, errNoReadiness) {
			// The spare died under the hand-over (it was killed, or had
			// crashed unnoticed). It has been killed with anything it
			// started, and its lock is free: start a shim afresh.
			return launchWith(ctx, cfg, shimPath, env, args, nil)
		}
		return nil, err
	}
	return &Process{ShimPID: r.pid, TenderPID: rep.TenderPID, StartedAt: rep.StartedAt, Dir: cfg.Dir, Done: r.done}, nil
}

// startShim starts shimPath with env and args, the log file as its
// stdout and stderr, and lock on lockFD; it returns the read end of the
// readiness pipe and the shim's reaper.
func startShim(shimPath string, env, args []string, logf, lock *os.File) (*os.File, *shimReaper, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("launch shim: create readiness pipe: %w", err)
	}
	cmd := exec.Command(shimPath, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw, lock} // fd 3 (readyFD) and fd 4 (lockFD) in the shim
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	_ = pw.Close()
	if err != nil {
		_ = pr.Close()
		return nil, nil, fmt.Errorf("launch shim %s: %w", shimPath, err)
	}
	return pr, newShimReaper(cmd.Process), nil
}

// flagOwnGOMAXPROCS tells the shim that GOMAXPROCS in its environment was
// set by the launcher for the shim alone, and is to be left out of the
// tender's environment.
const flagOwnGOMAXPROCS = "--own-gomaxprocs"

// shimEnv returns the shim's environment for a launch with env (nil: the
// caller's). When env does not set GOMAXPROCS, it adds GOMAXPROCS=1 and
// reports so: the shim would limit itself to one processor anyway, and
// doing it from the environment spares the Go runtime setting up the
// others at start-up, which is on the path from create to a running
// guest. The tender must not inherit it, hence the report.
func shimEnv(env []string) ([]string, bool) {
	if env == nil {
		env = os.Environ()
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			return env, false
		}
	}
	return append(env[:len(env):len(env)], "GOMAXPROCS=1"), true
}

// shimArgs checks cfg and builds the shim's command line; ownGOMAXPROCS
// adds flagOwnGOMAXPROCS.
func shimArgs(cfg Config, ownGOMAXPROCS bool) ([]string, error) {
	if cfg.Dir == "" {
		return nil, errors.New("launch shim: no directory")
	}
	if len(cfg.Argv) == 0 || cfg.Argv[0] == "" {
		return nil, errors.New("launch shim: no tender command")
	}
	if err := checkSocketPath(cfg.Dir); err != nil {
		return nil, fmt.Errorf("launch shim: %w", err)
	}
	if fi, err := os.Stat(cfg.Dir); err != nil {
		return nil, fmt.Errorf("launch shim: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("launch shim: %s is not a directory", cfg.Dir)
	}
	for _, n := range []int{cfg.ConsoleLines, cfg.ConsoleBytes, cfg.LineMax} {
		if n < 0 {
			return nil, fmt.Errorf("launch shim: negative console bound %d", n)
		}
	}
	args := []string{"--dir", cfg.Dir}
	if len(cfg.CPUs) > 0 {
		ids := make([]string, len(cfg.CPUs))
		for i, c := range cfg.CPUs {
			ids[i] = strconv.Itoa(c)
		}
		args = append(args, "--cpus", strings.Join(ids, ","))
	}
	if cfg.ConsoleLines > 0 {
		args = append(args, "--console-lines", strconv.Itoa(cfg.ConsoleLines))
	}
	if cfg.ConsoleBytes > 0 {
		args = append(args, "--console-bytes", strconv.Itoa(cfg.ConsoleBytes))
	}
	if cfg.LineMax > 0 {
		args = append(args, "--line-max", strconv.Itoa(cfg.LineMax))
	}
	if ownGOMAXPROCS {
		args = append(args, flagOwnGOMAXPROCS)
	}
	args = append(args, "--")
	return append(args, cfg.Argv...), nil
}

// errNoReadiness reports a shim that exited (or closed its end) without
// a readiness report.
var errNoReadiness = errors.New("shim exited without reporting readiness")

// readReady reads the shim's readiness line, giving up when ctx ends.
func readReady(ctx context.Context, pr *os.File) (readyReport, error) {
	var rep readyReport
	stop := context.AfterFunc(ctx, func() { _ = pr.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	data, err := io.ReadAll(io.LimitReader(pr, 64<<10))
	if ctx.Err() != nil {
		return rep, fmt.Errorf("waiting for shim readiness: %w", ctx.Err())
	}
	if len(data) == 0 && (err == nil || errors.Is(err, unix.ECONNRESET)) {
		// End of file, or (from a spare's socket) a reset: the shim died
		// without a word.
		return rep, errNoReadiness
	}
	if err != nil {
		return rep, fmt.Errorf("read shim readiness: %w", err)
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		return rep, fmt.Errorf("parse shim readiness %q: %w", data, err)
	}
	return rep, nil
}

// shimReaper owns a launched shim process: it reaps the shim once it
// exits, and abandon can kill it without risking a recycled pid, because
// the pid is only reaped after the exit has been noted under mu. It keeps
// only the pid, not the whole command (with its copy of the environment),
// since a shim runs for as long as its VM.
type shimReaper struct {
	pid    int
	mu     sync.Mutex
	exited bool
	done   chan struct{}
}

// newShimReaper takes over the shim process p: from then on the shim is
// waited for and reaped by its pid alone, so p (and the runtime's handle
// on it) need not be kept for the life of the VM.
func newShimReaper(p *os.Process) *shimReaper {
	r := &shimReaper{pid: p.Pid, done: make(chan struct{})}
	onExit(r.pid, func() {
		r.mu.Lock()
		r.exited = true
		r.mu.Unlock()
		// The shim has exited, so this returns at once. Its output went
		// to a file and its pipe ends are closed: nothing else of the
		// command needs releasing.
		var ws unix.WaitStatus
		err := error(unix.EINTR)
		for err == unix.EINTR {
			_, err = unix.Wait4(r.pid, &ws, 0, nil)
		}
		close(r.done)
	})
	// The runtime's handle on the process (a pidfd on Linux) would stay
	// open until the garbage collector found it, one descriptor per shim
	// launched; the process is waited for by pid from here on.
	_ = p.Release()
	return r
}

// abandon waits up to grace for the shim to exit, then kills its process
// group (the shim and any tender it started) and waits for it.
func (r *shimReaper) abandon(grace time.Duration) {
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-r.done:
			return
		case <-t.C:
		}
	}
	r.mu.Lock()
	if !r.exited && r.pid > 0 {
		// The shim leads its own session, so its pid is its process
		// group id, shared with the tender.
		_ = unix.Kill(-r.pid, unix.SIGKILL)
	}
	r.mu.Unlock()
	<-r.done
}

// Find locates the petrel-shim binary for a plugin: in pluginDir (where
// petreld found the plugin), beside the running binary, then on PATH.
func Find(pluginDir string) (string, error) {
	var dirs []string
	if pluginDir != "" {
		dirs = append(dirs, pluginDir)
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	for _, d := range dirs {
		p := filepath.Join(d, DefaultShimName)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(DefaultShimName)
	if err != nil {
		return "", fmt.Errorf("%s not found beside the plugin or on PATH", DefaultShimName)
	}
	return p, nil
}
