package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/petrel-vmm/petrel/core/internal/console"
	"github.com/petrel-vmm/petrel/core/internal/events"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// retryDelay is how long the monitor waits before asking a backend again
// after an error (typically a plugin restarting).
const retryDelay = 300 * time.Millisecond

// startMonitor starts the goroutine that follows v's current run. Caller
// holds v.mu.
func (s *Supervisor) startMonitor(v *vm, hv hypervisor.Hypervisor) {
	s.spawnMonitor(v, hv, false)
}

// startLater records that v, whose start failed because its plugin was
// not there (it crashed, and did not come back in time), is to be started
// again, and starts the goroutine that does so after the back-off, and
// follows it from then on: Petrel's own crash never leaves a VM that
// restarts on failure failed. Caller holds v.mu.
func (s *Supervisor) startLater(v *vm, hv hypervisor.Hypervisor, cause error) {
	v.rec.State = StateRestarting
	v.rec.Message = fmt.Sprintf("to be started again once its plugin is back: %v", cause)
	if err := s.persist(v); err != nil {
		s.opts.Logger.Error("save restarting state", "vm", v.rec.Name, "error", err)
	}
	s.spawnMonitor(v, hv, true)
}

// spawnMonitor starts v's monitor goroutine, owned by s (Close waits for
// it) and stopped through v.run. With pending, it first starts v, which
// is recorded as restarting. Caller holds v.mu.
func (s *Supervisor) spawnMonitor(v *vm, hv hypervisor.Hypervisor, pending bool) {
	ctx, cancel := context.WithCancel(s.ctx)
	r := &run{cancel: cancel, done: make(chan struct{})}
	v.run = r
	runID, backend := v.rec.RunID, v.rec.Backend
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(r.done)
		defer cancel()
		s.monitor(ctx, v, hv, backend, runID, pending)
	}()
}

// transient reports whether a start failed only because the plugin was
// not there to serve it (it crashed under the call, more than once, or
// did not come back in time): the same start may well work later.
func transient(err error) bool { return errors.Is(err, hypervisor.ErrUnreachable) }

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
// policy says so. With pending, v is to be started first. A restart that
// fails only because the plugin is not there is tried again after the
// back-off, for as long as it takes.
func (s *Supervisor) monitor(ctx context.Context, v *vm, hv hypervisor.Hypervisor, backend, runID string, pending bool) {
	backoff := s.opts.BackoffMin
	for {
		if !pending {
			v.pubMu.Lock()
			ring := v.ring
			v.pubMu.Unlock()
			// The console ends when the guest's output does, that is
			// when it exits; only then is the exit asked for. Following
			// it over the backend's one console stream, rather than a
			// stream per VM, keeps petreld and the plugins small with
			// many VMs.
			s.followConsole(ctx, hv, backend, runID, ring)
			st := s.waitExit(ctx, hv, runID)
			if st == nil {
				return
			}
			delay, ok := s.recordExit(ctx, v, runID, st, &backoff)
			if !ok || !sleep(ctx, delay) {
				return
			}
		}
		next, outcome := s.restartAfterFailure(ctx, v, hv, runID)
		switch outcome {
		case restartUp:
			runID, pending = next, false
		case restartLater:
			runID, pending = next, true
			delay := backoff
			backoff = min(backoff*2, s.opts.BackoffMax)
			if !sleep(ctx, delay) {
				return
			}
		default:
			return
		}
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
// ends, resuming after plugin restarts from the last line seen, over a
// Console stream of its own: for backends that cannot follow consoles
// together.
func (s *Supervisor) pumpConsole(ctx context.Context, hv hypervisor.Hypervisor, runID string, ring *console.Ring) {
	for failures := 0; ctx.Err() == nil && failures < consoleRetries; failures++ {
		var since int64
		if t := ring.LastTime(); !t.IsZero() {
			since = t.UnixNano()
		}
		var buf []console.Line
		err := hv.Console(ctx, &pluginv1.ConsoleRequest{Id: runID, SinceNs: since, Follow: true, Batch: true}, func(l *pluginv1.ConsoleLine) error {
			buf = consoleLines(buf[:0], l)
			ring.AppendBatch(buf)
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

// consoleLines appends the lines of a console message (the line and those
// in its More, a plugin's batch) to buf, as ring lines.
func consoleLines(buf []console.Line, m *pluginv1.ConsoleLine) []console.Line {
	buf = append(buf, console.Line{Time: time.Unix(0, m.GetTimeNs()), Text: m.GetText(), Truncated: m.GetTruncated(), Dropped: m.GetDropped()})
	for _, l := range m.GetMore() {
		buf = append(buf, console.Line{Time: time.Unix(0, l.GetTimeNs()), Text: l.GetText(), Truncated: l.GetTruncated(), Dropped: l.GetDropped()})
	}
	return buf
}

// recordExit stores an exit. It returns the delay before a restart, or
// ok=false when the VM stays down (or ctx ended).
func (s *Supervisor) recordExit(ctx context.Context, v *vm, runID string, st *pluginv1.ExitStatus, backoff *time.Duration) (time.Duration, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ctx.Err() != nil || v.gone || v.rec.RunID != runID {
		return 0, false
	}
	ranFor := time.Since(v.rec.StartedAt)
	v.rec.StartedAt, v.rec.ExitedAt = runTimes(v.rec.StartedAt, st)
	v.rec.Pid, v.rec.ShimPid = 0, 0
	if st.GetLost() {
		// Nothing recorded how the guest ended: no exit code at all (an
		// earlier run's included), rather than a 0 that reads as success.
		v.rec.HasExit, v.rec.ExitCode, v.rec.ExitSignal = false, 0, 0
		v.rec.State = StateLost
		v.rec.Message = "the VM's shim disappeared without recording the guest's exit; exit status unknown"
		s.event(events.Lost, v.rec, v.rec.Message)
		s.stayDown(v)
		return 0, false
	}
	v.rec.HasExit = true
	v.rec.ExitCode, v.rec.ExitSignal = st.GetCode(), st.GetSignal()
	if st.GetSignal() != 0 {
		v.rec.Message = fmt.Sprintf("killed by signal %d", st.GetSignal())
	} else {
		v.rec.Message = fmt.Sprintf("exited with code %d", st.GetCode())
	}
	if m := st.GetMessage(); m != "" {
		// The backend's account, e.g. the raw status the code was
		// decoded from.
		v.rec.Message += ": " + m
	}
	s.event(events.Exited, v.rec, v.rec.Message)
	if !ShouldRestart(v.rec.Restart, st.GetCode(), st.GetSignal(), false) {
		v.rec.State = StateExited
		s.stayDown(v)
		return 0, false
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
	return delay, true
}

// runTimes returns the start and exit times of a run that ended with st,
// which the daemon recorded as started at started. The exit record's own
// start time wins: it comes from the clock the exit was taken by. Either
// way the start is never after the exit; a backend that reports no exit
// time exited now.
func runTimes(started time.Time, st *pluginv1.ExitStatus) (time.Time, time.Time) {
	exited := time.Now().UTC()
	if ns := st.GetExitedAtNs(); ns != 0 {
		exited = time.Unix(0, ns).UTC()
	}
	if ns := st.GetStartedAtNs(); ns > 0 {
		started = time.Unix(0, ns).UTC()
	}
	if started.After(exited) {
		started = exited
	}
	return started, exited
}

// stayDown records that v, whose run ended, stays down: it gives back its
// devices and closes its console. The exit is shown (Info) and console
// followers are ended before the record is written to disk, so that
// `petrel console --follow` ends as soon as the exit is known rather than
// after a synchronous write; a daemon that dies in between learns the
// same exit again from the shim's exit record. Caller holds v.mu.
func (s *Supervisor) stayDown(v *vm) {
	s.releaseDevices(v)
	s.publishRecord(v)
	v.ring.SetClosed(true)
	if err := s.persist(v); err != nil {
		s.opts.Logger.Error("save exit", "vm", v.rec.Name, "error", err)
	}
}

// Outcomes of restartAfterFailure.
const (
	// restartUp: the new run is up.
	restartUp = iota
	// restartLater: the plugin was not there; v stays restarting.
	restartLater
	// restartOff: v stays down (it failed, or changed meanwhile).
	restartOff
)

// restartAfterFailure starts the next run of v, which is restarting after
// run prev, unless something else changed the VM meanwhile. It returns the
// new run's id and the outcome.
func (s *Supervisor) restartAfterFailure(ctx context.Context, v *vm, hv hypervisor.Hypervisor, prev string) (string, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ctx.Err() != nil || v.gone || v.rec.RunID != prev || v.rec.State != StateRestarting {
		return "", restartOff
	}
	s.cleanupRun(hv, prev)
	imagePath, err := s.opts.Store.ImagePath(v.rec.ImageSHA256)
	if err != nil {
		s.markFailed(v, fmt.Errorf("restart: image: %w", err))
		return "", restartOff
	}
	next := newRunID()
	v.rec.Restarts++
	err = s.start(ctx, v, hv, s.spec(v.rec, imagePath, next), false)
	switch {
	case err == nil:
		s.event(events.Restarted, v.rec, fmt.Sprintf("restart %d after failure", v.rec.Restarts))
		return next, restartUp
	case ctx.Err() != nil:
		return "", restartOff // destroyed or restarted meanwhile: that caller takes over
	case transient(err):
		v.rec.Restarts--
		v.rec.State = StateRestarting
		v.rec.Message = fmt.Sprintf("to be started again once its plugin is back: %v", err)
		if perr := s.persist(v); perr != nil {
			s.opts.Logger.Error("save restarting state", "vm", v.rec.Name, "error", perr)
		}
		return next, restartLater
	}
	s.markFailed(v, fmt.Errorf("restart: %w", err))
	return "", restartOff
}
