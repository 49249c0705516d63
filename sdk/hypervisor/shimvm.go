package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/shim"
)

// The helpers below serve the Hypervisor calls of a backend whose VMs
// each run under a petrel-shim in their runtime directory (RunDir), as
// every backend of Petrel's does. They are here so that such backends
// report exits, statistics and consoles the same way.

// CPUSet returns the CPUs the shim is to run the VM of spec on, for
// shim.Config.CPUs: those it is pinned to, or else those it is confined
// to (spec.AllowedCpus); none when it is neither. The shim sets the
// affinity on the thread that starts the tender, before it executes it,
// so the tender and every thread and child it makes inherit it.
func CPUSet(spec *pluginv1.VMSpec) []int {
	ids := spec.GetCpus()
	if len(ids) == 0 {
		ids = spec.GetAllowedCpus()
	}
	var cpus []int
	for _, c := range ids {
		cpus = append(cpus, int(c))
	}
	return cpus
}

// ShimHandle is the Handle of run id, started (or adopted) as shim
// process p with the tender command line argv: the daemon persists it,
// shows pids and argv, and takes the run's start time from the shim's
// record rather than its own clock after Start returns.
func ShimHandle(id string, state []byte, p *shim.Process, argv []string) *pluginv1.Handle {
	return &pluginv1.Handle{Id: id, State: state, Pid: int64(p.TenderPID), ShimPid: int64(p.ShimPID), Argv: argv,
		StartedAtNs: unixNanos(p.StartedAt)}
}

// unixNanos is t in Unix nanoseconds, or 0 for the zero time, which the
// plugin API reads as unknown.
func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// ShimExitStatus converts the exit record a shim wrote, with the start
// of the run from the same record, so that the two times are ordered.
func ShimExitStatus(e shim.Exit) *pluginv1.ExitStatus {
	return &pluginv1.ExitStatus{
		Code: int32(e.Code), Signal: int32(e.Signal), ExitedAtNs: e.ExitedAt.UnixNano(), StartedAtNs: unixNanos(e.StartedAt),
		Rusage: &pluginv1.Rusage{UtimeNs: e.Rusage.UtimeNS, StimeNs: e.Rusage.StimeNS, MaxrssBytes: e.Rusage.MaxRSSBytes,
			Minflt: e.Rusage.Minflt, Majflt: e.Rusage.Majflt, Nvcsw: e.Rusage.Nvcsw, Nivcsw: e.Rusage.Nivcsw},
	}
}

// WaitShim waits for the VM whose shim runs in dir to exit and returns
// its status and the shim's exit record. A shim that is gone without a
// record (killed) gives a Lost status, and its socket, which nobody will
// remove otherwise, is removed: its tender died with it.
func WaitShim(ctx context.Context, dir string) (*pluginv1.ExitStatus, shim.Exit, error) {
	e, err := shim.Dial(dir).Wait(ctx)
	if errors.Is(err, shim.ErrShimLost) {
		os.Remove(filepath.Join(dir, shim.SocketName))
		return &pluginv1.ExitStatus{Lost: true, Message: err.Error(), ExitedAtNs: time.Now().UnixNano()}, shim.Exit{}, nil
	}
	if err != nil {
		return nil, shim.Exit{}, err
	}
	return ShimExitStatus(e), e, nil
}

// KillShim sends SIGKILL to the VM of shim c and waits (up to 10 s) for
// the shim to record the exit. A VM that has exited already, or a shim
// that is gone, is not an error.
func KillShim(ctx context.Context, c *shim.Client) error {
	if err := c.Kill(ctx, syscall.SIGKILL); err != nil && !errors.Is(err, shim.ErrExited) && !errors.Is(err, shim.ErrShimLost) {
		return fmt.Errorf("kill: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Wait(wctx); err != nil && !errors.Is(err, shim.ErrShimLost) {
		return fmt.Errorf("wait after SIGKILL: %w", err)
	}
	return nil
}

// RemoveShimVM kills the VM whose shim runs in dir, if it still runs, and
// removes dir with everything in it. A dir that does not exist is done. A
// shim still starting there (its launcher died mid-launch) is waited for,
// so that it is killed with its tender rather than left running without
// its directory.
func RemoveShimVM(ctx context.Context, dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := shim.Resume(ctx, dir); err != nil && !errors.Is(err, shim.ErrNoRun) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	if shim.Alive(dir) {
		if err := KillShim(ctx, shim.Dial(dir)); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// ShimStats samples the resource usage of the VM whose shim runs in dir,
// from /proc without waking the shim (shim.ReadStats), so that collecting
// statistics of many VMs costs little.
func ShimStats(dir string) (*pluginv1.VMStats, error) {
	s, err := shim.ReadStats(dir)
	if err != nil {
		return nil, err
	}
	return &pluginv1.VMStats{UtimeNs: s.UtimeNS, StimeNs: s.StimeNS, RssBytes: s.RSSBytes, VsizeBytes: s.VSizeBytes,
		Minflt: s.Minflt, Majflt: s.Majflt, Nvcsw: s.Nvcsw, Nivcsw: s.Nivcsw, Threads: s.Threads,
		ShimRssBytes: s.ShimRSSBytes, StartedAtNs: s.StartedAt.UnixNano()}, nil
}

// ShimConsole serves a Console request from the shim in dir, or after the
// VM exited from the history the shim saved. A killed shim's output ends
// the stream without an error: it is over, and was not saved. When the
// request sets batch, each call of fn carries every line the shim handed
// out at once (the first, or a marker of lines lost, with the rest in
// more), so that a busy console costs few messages.
func ShimConsole(ctx context.Context, dir string, req *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	var since time.Time
	if req.GetSinceNs() != 0 {
		since = time.Unix(0, req.GetSinceNs())
	}
	c := shim.Dial(dir)
	var err error
	if req.GetBatch() {
		err = c.ConsoleBatches(ctx, since, int(req.GetCount()), req.GetFollow(), func(b shim.Batch) error {
			if m := batchMessage(b); m != nil {
				return fn(m)
			}
			return nil
		})
	} else {
		err = c.Console(ctx, since, int(req.GetCount()), req.GetFollow(), func(l shim.Line) error {
			return fn(&pluginv1.ConsoleLine{TimeNs: l.Time.UnixNano(), Text: l.Text, Truncated: l.Truncated})
		})
	}
	if errors.Is(err, shim.ErrShimLost) {
		return nil
	}
	return err
}

// batchMessage turns a batch of shim console lines into one console
// message: a marker of the lines lost (when there were) or the first line,
// with the others in More. It returns nil for an empty batch.
func batchMessage(b shim.Batch) *pluginv1.ConsoleLine {
	n := len(b.Lines)
	if b.Dropped > 0 {
		n++
	}
	if n == 0 {
		return nil
	}
	msgs := make([]pluginv1.ConsoleLine, n)
	ptrs := make([]*pluginv1.ConsoleLine, n)
	i := 0
	if b.Dropped > 0 {
		msgs[0].Dropped = b.Dropped
		if len(b.Lines) > 0 {
			msgs[0].TimeNs = b.Lines[0].Time.UnixNano()
		}
		ptrs[0] = &msgs[0]
		i = 1
	}
	for _, l := range b.Lines {
		m := &msgs[i]
		m.TimeNs, m.Text, m.Truncated = l.Time.UnixNano(), l.Text, l.Truncated
		ptrs[i] = m
		i++
	}
	head := ptrs[0]
	head.More = ptrs[1:]
	return head
}
