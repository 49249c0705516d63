package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/shim"
)

// ShimBackend is the part of a Hypervisor that is the same for every
// backend whose VMs each run under a petrel-shim in a directory of their
// own, <run_dir>/<id>: where the VMs live, and how they are waited for,
// stopped, removed, sampled and read from. Because the shim holds a VM's
// process, console and exit record, any plugin instance serves any VM by
// its id, and a crashed or upgraded plugin loses nothing.
//
// A backend embeds it by value, calls SetRunDir from its Configure, and
// starts VMs with StartShim from its Start. It writes Info, Configure,
// Fingerprint, Capabilities, Validate and Start itself, and inherits
// Recover, Wait, Stop, Destroy, Stats, StatsBatch and Console. Where its
// hypervisor needs more (a gentler Stop, an exit status to decode), it
// defines the method on its own type and calls the embedded one for the
// common part. Go's embedding is not virtual: ShimBackend's methods never
// call such an override (StatsBatch samples with ShimBackend's Stats).
//
// The zero value is ready for use; until SetRunDir, every call that names
// a VM fails with ErrUnavailable.
type ShimBackend struct {
	mu     sync.Mutex
	runDir string
}

// DefaultStopTimeout is how long Stop waits for a VM it asked to stop
// before it kills it, when the caller gives no timeout.
const DefaultStopTimeout = 5 * time.Second

// SetRunDir makes dir, created if need be, the directory of the
// backend's VMs. Configure calls it once it has accepted the settings;
// an empty dir is petreld's mistake and ErrInvalid.
func (s *ShimBackend) SetRunDir(dir string) error {
	if dir == "" {
		return fmt.Errorf("%w: configure: run_dir is required", ErrInvalid)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runDir = dir
	return nil
}

// RunDir returns the directory SetRunDir set, or "" before it.
func (s *ShimBackend) RunDir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runDir
}

// Dir returns the runtime directory of VM id, whether or not it exists
// (see RunDir, the function).
func (s *ShimBackend) Dir(id string) (string, error) {
	return RunDir(s.RunDir(), id)
}

// ExistingDir is Dir for a VM that must exist: a missing directory is
// ErrUnknownVM.
func (s *ShimBackend) ExistingDir(id string) (string, error) {
	return ExistingRunDir(s.RunDir(), id)
}

// ShimLaunch is what StartShim needs from a backend besides the spec: the
// shim to use and the command line it runs.
type ShimLaunch struct {
	// Shim is the petrel-shim binary (see FindShim).
	Shim string
	// Argv is the hypervisor's command line, Argv[0] being its path.
	Argv []string
	// Env is its environment; nil means the plugin's own.
	Env []string
	// Prepare, when not nil, is called with the new, empty run directory
	// before the shim starts there, to write the files the backend keeps
	// beside the VM. Its error fails the start and removes the directory.
	Prepare func(dir string) error
	// Launch starts the shim; nil means shim.Launch. A backend that keeps
	// a spare shim waiting passes its shim.Launcher's Launch, which hands
	// the VM to the spare and saves the shim's start on every create.
	Launch func(context.Context, shim.Config) (*shim.Process, error)
}

// StartShim runs l.Argv for spec under a new shim in the VM's run
// directory, created 0700, and returns the shim's process and the
// directory. It is idempotent by spec.Id, as Start must be: when the
// directory exists, an earlier Start of the same id, cut short by a crash
// of the plugin, got that far, and StartShim adopts the run it made
// (waiting for its shim to answer) rather than start another; it starts
// one only when nothing runs or ran there. The shim confines the VM to
// the CPUs of spec (CPUSet) and bounds its console as spec says.
func (s *ShimBackend) StartShim(ctx context.Context, spec *pluginv1.VMSpec, l ShimLaunch) (*shim.Process, string, error) {
	dir, err := s.Dir(spec.GetId())
	if err != nil {
		return nil, "", err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return nil, "", fmt.Errorf("VM directory: %w", err)
		}
		p, err := shim.Resume(ctx, dir)
		if err == nil {
			return p, dir, nil
		}
		if !errors.Is(err, shim.ErrNoRun) {
			return nil, "", fmt.Errorf("start %s: %w", spec.GetName(), err)
		}
	}
	if l.Prepare != nil {
		if err := l.Prepare(dir); err != nil {
			_ = os.RemoveAll(dir)
			return nil, "", fmt.Errorf("start %s: %w", spec.GetName(), err)
		}
	}
	launch := l.Launch
	if launch == nil {
		launch = shim.Launch
	}
	p, err := launch(ctx, shim.Config{
		ShimPath: l.Shim, Dir: dir, CPUs: CPUSet(spec), ConsoleLines: int(spec.GetConsoleLines()),
		ConsoleBytes: int(spec.GetConsoleBytes()), Argv: l.Argv, Env: l.Env,
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, "", fmt.Errorf("start %s: %w", spec.GetName(), err)
	}
	return p, dir, nil
}

// Recover reports whether the VM of h still runs: its shim answers and
// has not seen it exit. A VM whose shim is gone has ended, with an exit
// record, or is lost without one (the shim was killed).
func (s *ShimBackend) Recover(ctx context.Context, h *pluginv1.Handle) (*pluginv1.RecoverResponse, error) {
	dir, err := s.ExistingDir(h.GetId())
	if err != nil {
		return nil, err
	}
	if shim.Alive(dir) {
		if info, err := shim.Dial(dir).Info(ctx); err == nil && info.Exited {
			return &pluginv1.RecoverResponse{}, nil
		}
		return &pluginv1.RecoverResponse{Running: true}, nil
	}
	if ex, err := shim.ReadExit(dir); err == nil && ex != nil {
		return &pluginv1.RecoverResponse{}, nil
	}
	return &pluginv1.RecoverResponse{Lost: true}, nil
}

// Wait blocks until the VM exits and reports its status as the shim
// recorded it (WaitShim).
func (s *ShimBackend) Wait(ctx context.Context, id string) (*pluginv1.ExitStatus, error) {
	dir, err := s.ExistingDir(id)
	if err != nil {
		return nil, err
	}
	st, _, err := WaitShim(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("wait for %s: %w", id, err)
	}
	return st, nil
}

// StopFunc asks the VM whose shim runs in dir, reached through c, to
// stop, and returns without waiting. shim.ErrExited and shim.ErrShimLost
// mean that the VM is over already.
type StopFunc func(ctx context.Context, dir string, c *shim.Client) error

// Terminate is the StopFunc of a hypervisor that shuts its guest down on
// SIGTERM: it sends the VM's process SIGTERM.
func Terminate(ctx context.Context, _ string, c *shim.Client) error {
	return c.Kill(ctx, syscall.SIGTERM)
}

// Stop sends the VM SIGTERM and, once timeout has passed (or
// DefaultStopTimeout when it is not positive), SIGKILL.
func (s *ShimBackend) Stop(ctx context.Context, id string, timeout time.Duration) error {
	return s.StopWith(ctx, id, timeout, Terminate)
}

// StopWith is Stop for a hypervisor that is asked to stop otherwise than
// with SIGTERM (an ACPI power button, a request on its control socket):
// ask asks, and StopWith waits up to timeout for the VM to exit and then
// kills it. A VM that is over already is stopped; when ctx ends first,
// the VM is left as it is and ctx's error returned.
func (s *ShimBackend) StopWith(ctx context.Context, id string, timeout time.Duration, ask StopFunc) error {
	dir, err := s.ExistingDir(id)
	if err != nil {
		return err
	}
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	c := shim.Dial(dir)
	if err := ask(ctx, dir, c); err != nil {
		if errors.Is(err, shim.ErrExited) || errors.Is(err, shim.ErrShimLost) {
			return nil
		}
		return fmt.Errorf("stop %s: %w", id, err)
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	_, err = c.Wait(wctx)
	cancel()
	if err == nil || errors.Is(err, shim.ErrShimLost) {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stop %s: %w", id, ctx.Err())
	}
	if err := KillShim(ctx, c); err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	return nil
}

// Destroy kills the VM if it runs and removes its directory
// (RemoveShimVM). An id with no directory is destroyed already.
func (s *ShimBackend) Destroy(ctx context.Context, id string) error {
	dir, err := s.Dir(id)
	if err != nil {
		return err
	}
	if err := RemoveShimVM(ctx, dir); err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	return nil
}

// Stats samples the resource usage of the VM's process and everything it
// started, from /proc (ShimStats).
func (s *ShimBackend) Stats(_ context.Context, id string) (*pluginv1.VMStats, error) {
	dir, err := s.ExistingDir(id)
	if err != nil {
		return nil, err
	}
	st, err := ShimStats(dir)
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", id, err)
	}
	return st, nil
}

// StatsBatch samples the VMs with the given ids one after the other
// (each sample is a few reads of /proc, not worth overlapping), leaving
// out those that are not running or unknown. It makes the backend a
// StatsBatcher, so that petreld samples all its VMs in one call.
func (s *ShimBackend) StatsBatch(ctx context.Context, ids []string) (map[string]*pluginv1.VMStats, error) {
	return statsEach(ctx, s, ids, 1)
}

// ShimDir is the runtime directory of a VM, where its shim serves: it
// makes every embedding backend a ShimDirs, whose consoles FollowConsoles
// reads in one loop instead of one stream per VM.
func (s *ShimBackend) ShimDir(id string) (string, error) { return s.ExistingDir(id) }

// Console streams the VM's console from its shim, or after the VM
// exited from the history the shim saved (ShimConsole).
func (s *ShimBackend) Console(ctx context.Context, req *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	dir, err := s.ExistingDir(req.GetId())
	if err != nil {
		return err
	}
	return ShimConsole(ctx, dir, req, fn)
}

// FindShim locates the petrel-shim binary: setting, a path or a name on
// PATH, when the operator gave one (a backend's "shim" setting), else
// shim.Find's search beside the plugin (pluginDir) and on PATH.
func FindShim(setting, pluginDir string) (string, error) {
	if setting != "" {
		p, err := exec.LookPath(setting)
		if err != nil {
			return "", fmt.Errorf("shim %s: %w", setting, err)
		}
		return p, nil
	}
	return shim.Find(pluginDir)
}
