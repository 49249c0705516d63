package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/petrel-vmm/petrel/core/console"
	"github.com/petrel-vmm/petrel/core/events"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// retryDelay is how long the monitor waits before asking a backend again
// after an error (typically a plugin restarting).
const retryDelay = 300 * time.Millisecond

// startMonitor starts the goroutine that follows v's current run. Caller
// holds v.mu.
func (s *Supervisor) startMonitor(v *vm, hv hypervisor.Hypervisor) {
	ctx, cancel := context.WithCancel(s.ctx)
	r := &run{cancel: cancel, done: make(chan struct{})}
	v.run = r
	runID := v.rec.RunID
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(r.done)
		defer cancel()
		s.monitor(ctx, v, hv, runID)
	}()
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// monitor follows runs of v until the VM stays down or ctx ends: it copies
// the console, waits for the exit, records it and restarts the VM when its
// policy says so.
func (s *Supervisor) monitor(ctx context.Context, v *vm, hv hypervisor.Hypervisor, runID string) {
	backoff := s.opts.BackoffMin
	for {
		v.pubMu.Lock()
		ring := v.ring
		v.pubMu.Unlock()
		// The console stream ends when the guest's output does, that is
		// when it exits; only then is the exit asked for. One stream per
		// VM at a time keeps the plugins small with many VMs.
		s.pumpConsole(ctx, hv, runID, ring)
		st := s.waitExit(ctx, hv, runID)
		if st == nil {
			return
		}

		next, delay, ok := s.recordExit(ctx, v, hv, runID, st, &backoff)
		if !ok {
			return
		}
		if !sleep(ctx, delay) {
			return
		}
		if !s.restartAfterFailure(ctx, v, hv, runID, next) {
			return
		}
		runID = next
	}
}

// waitExit asks the backend for runID's exit, retrying while the plugin
// is unavailable. It returns nil when ctx ends.
func (s *Supervisor) waitExit(ctx context.Context, hv hypervisor.Hypervisor, runID string) *pluginv1.ExitStatus {
	for {
		st, err := hv.Wait(ctx, runID)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			return st
		}
		if errors.Is(err, hypervisor.ErrUnknownVM) {
			return &pluginv1.ExitStatus{Lost: true, Message: err.Error(), ExitedAtNs: time.Now().UnixNano()}
		}
		s.opts.Logger.Debug("wait for VM", "run", runID, "error", err)
		if !sleep(ctx, retryDelay) {
			return nil
		}
	}
}

// consoleRetries bounds consecutive failed attempts to follow a console;
// past it the monitor goes on to wait for the exit, which tells a lost VM
// from a plugin that is restarting.
const consoleRetries = 30

// pumpConsole copies runID's console into ring until the run's output
// ends, resuming after plugin restarts from the last line seen.
func (s *Supervisor) pumpConsole(ctx context.Context, hv hypervisor.Hypervisor, runID string, ring *console.Ring) {
	for failures := 0; ctx.Err() == nil && failures < consoleRetries; failures++ {
		var since int64
		if t := ring.LastTime(); !t.IsZero() {
			since = t.UnixNano()
		}
		err := hv.Console(ctx, &pluginv1.ConsoleRequest{Id: runID, SinceNs: since, Follow: true}, func(l *pluginv1.ConsoleLine) error {
			ring.Append(console.Line{Time: time.Unix(0, l.GetTimeNs()), Text: l.GetText(), Truncated: l.GetTruncated()})
			failures = 0 // the stream worked: count failures afresh
			return nil
		})
		if err == nil || errors.Is(err, hypervisor.ErrUnknownVM) {
			return
		}
		if !sleep(ctx, retryDelay) {
			return
		}
	}
}

// recordExit stores an exit. It returns the run id for a restart and the
// delay before it, or ok=false when the VM stays down (or ctx ended).
func (s *Supervisor) recordExit(ctx context.Context, v *vm, hv hypervisor.Hypervisor, runID string, st *pluginv1.ExitStatus, backoff *time.Duration) (string, time.Duration, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ctx.Err() != nil || v.gone || v.rec.RunID != runID {
		return "", 0, false
	}
	ranFor := time.Since(v.rec.StartedAt)
	v.rec.ExitedAt = time.Unix(0, st.GetExitedAtNs()).UTC()
	if st.GetExitedAtNs() == 0 {
		v.rec.ExitedAt = time.Now().UTC()
	}
	v.rec.Pid, v.rec.ShimPid = 0, 0
	if st.GetLost() {
		// Nothing recorded how the guest ended: no exit code at all (an
		// earlier run's included), rather than a 0 that reads as success.
		v.rec.HasExit, v.rec.ExitCode, v.rec.ExitSignal = false, 0, 0
		v.rec.State = StateLost
		v.rec.Message = "the VM's shim disappeared without recording the guest's exit; exit status unknown"
		s.event(events.Lost, v.rec, v.rec.Message)
		s.stayDown(v)
		return "", 0, false
	}
	v.rec.HasExit = true
	v.rec.ExitCode, v.rec.ExitSignal = st.GetCode(), st.GetSignal()
	if st.GetSignal() != 0 {
		v.rec.Message = fmt.Sprintf("killed by signal %d", st.GetSignal())
	} else {
		v.rec.Message = fmt.Sprintf("exited with code %d", st.GetCode())
	}
	s.event(events.Exited, v.rec, v.rec.Message)
	if !ShouldRestart(v.rec.Restart, st.GetCode(), st.GetSignal(), false) {
		v.rec.State = StateExited
		s.stayDown(v)
		return "", 0, false
	}
	if ranFor >= s.opts.ResetAfter {
		*backoff = s.opts.BackoffMin
	}
	delay := *backoff
	*backoff = min(*backoff*2, s.opts.BackoffMax)
	v.rec.State = StateRestarting
	if err := s.persist(v); err != nil {
		s.opts.Logger.Error("save restarting state", "vm", v.rec.Name, "error", err)
	}
	return newRunID(), delay, true
}

// stayDown records that v, whose run ended, stays down: it gives back its
// devices and closes its console. Caller holds v.mu.
func (s *Supervisor) stayDown(v *vm) {
	s.releaseDevices(v)
	if err := s.persist(v); err != nil {
		s.opts.Logger.Error("save exit", "vm", v.rec.Name, "error", err)
	}
	v.ring.SetClosed(true)
}

// restartAfterFailure starts the next run of v, unless something else
// changed the VM meanwhile. It reports whether the new run is up.
func (s *Supervisor) restartAfterFailure(ctx context.Context, v *vm, hv hypervisor.Hypervisor, oldRun, nextRun string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ctx.Err() != nil || v.gone || v.rec.RunID != oldRun || v.rec.State != StateRestarting {
		return false
	}
	s.cleanupRun(hv, oldRun)
	imagePath, err := s.opts.Store.ImagePath(v.rec.ImageSHA256)
	if err != nil {
		s.markFailed(v, fmt.Errorf("restart: image: %w", err))
		return false
	}
	v.rec.Restarts++
	if err := s.start(ctx, v, hv, s.spec(v.rec, imagePath, nextRun), false); err != nil {
		s.markFailed(v, fmt.Errorf("restart: %w", err))
		return false
	}
	s.event(events.Restarted, v.rec, fmt.Sprintf("restart %d after failure", v.rec.Restarts))
	return true
}
