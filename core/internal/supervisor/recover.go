package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/internal/console"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/vmrecord"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Recover loads every VM record and brings the daemon back in line with
// the host: running VMs are reattached (never restarted), VMs whose shim
// died without recording an exit are recorded as lost, VMs from an earlier boot and VMs caught
// mid-start are started again in startup-priority order, and runtime
// directories no record refers to are removed. It returns the number of
// VMs reattached and started.
func (s *Supervisor) Recover(ctx context.Context) (reattached, started int, err error) {
	var toStart []*vm
	type found struct {
		v  *vm
		hv hypervisor.Hypervisor
	}
	var toReattach []found
	known := map[string]map[string]bool{}
	err = s.opts.Store.Walk(RecordsCollection, func(key string, raw json.RawMessage) error {
		var r Record
		if err := json.Unmarshal(raw, &r); err != nil {
			s.opts.Logger.Error("unreadable VM record skipped", "key", key, "error", err)
			return nil
		}
		if _, err := name.ParseVM(r.Name); err != nil {
			s.opts.Logger.Error("VM record with invalid name skipped", "key", key, "error", err)
			return nil
		}
		v := &vm{rec: r, ring: s.newRing()}
		hv, hvErr := s.opts.Backends.Hypervisor(r.Backend)
		if hvErr == nil && r.State == StateUnsupervised {
			// Its backend is back: it is followed as any running VM.
			v.rec.State, v.rec.Message = StateRunning, ""
			r = v.rec
		}
		s.mu.Lock()
		s.vms[r.Name] = v
		s.mu.Unlock()
		s.publishRecord(v)
		if known[r.Backend] == nil {
			known[r.Backend] = map[string]bool{}
		}
		known[r.Backend][r.RunID] = true
		if hvErr != nil {
			s.withoutBackend(v, hvErr)
			return nil
		}
		switch {
		case r.State == StateRunning && r.BootID == s.opts.BootID:
			toReattach = append(toReattach, found{v, hv})
		case r.State == StateRunning || r.State == StateStarting || r.State == StateRestarting:
			toStart = append(toStart, v)
		default:
			s.loadConsole(ctx, hv, r.RunID, v.ring)
			v.ring.SetClosed(true)
		}
		return nil
	})
	if err != nil {
		return reattached, 0, fmt.Errorf("load VM records: %w", err)
	}
	// Each reattachment is a round trip to the plugin, which asks the
	// VM's shim: made reattachParallel at a time, a thousand VMs are
	// followed again in a fraction of the time one after another takes.
	var wg sync.WaitGroup
	var n atomic.Int64
	sem := make(chan struct{}, reattachParallel)
	for _, f := range toReattach {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if s.reattach(ctx, f.v, f.hv) {
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	reattached = int(n.Load())
	s.removeOrphans(ctx, known)
	s.ReconcileNets(ctx)
	sort.SliceStable(toStart, func(i, j int) bool { return toStart[i].rec.Startup < toStart[j].rec.Startup })
	for _, v := range toStart {
		if s.startRecovered(ctx, v) {
			started++
		}
	}
	return reattached, started, nil
}

// reattachParallel bounds the reattachments Recover makes at a time.
const reattachParallel = 32

// withoutBackend settles a VM found at start-up whose backend is not
// enabled (hvErr says so). A VM whose run is over keeps its state and exit
// status: nothing about it changed. One that was running in this boot may
// still run and is unsupervised, keeping its devices; one that restarts on
// failure waits for its backend, as it waits for a plugin that is away;
// one that was to be started (starting, or running before a reboot) cannot
// be, and is failed.
func (s *Supervisor) withoutBackend(v *vm, hvErr error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := &v.rec
	switch {
	case vmrecord.Down(r.State):
		v.ring.SetClosed(true)
		return
	case (r.State == StateRunning || r.State == StateUnsupervised) && r.BootID == s.opts.BootID:
		r.State = StateUnsupervised
		r.Message = fmt.Sprintf("backend %s is not enabled: the guest may still run, but petreld cannot follow it; enable the backend again (petreld reattaches at its next start), or destroy the VM", r.Backend)
		s.reclaimBlocks(v)
		s.opts.Logger.Warn("VM unsupervised: its backend is not enabled", "vm", r.Name, "backend", r.Backend)
	case r.State == StateRestarting:
		r.Message = fmt.Sprintf("to be started again once backend %s is enabled", r.Backend)
	default:
		s.markFailed(v, fmt.Errorf("backend %s: %w", r.Backend, hvErr))
		return
	}
	if err := s.persist(v); err != nil {
		s.opts.Logger.Error("save VM without backend", "vm", r.Name, "error", err)
	}
	v.ring.SetClosed(true)
}

// reattach follows a VM started by an earlier daemon.
func (s *Supervisor) reattach(ctx context.Context, v *vm, hv hypervisor.Hypervisor) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	h := &pluginv1.Handle{}
	if err := proto.Unmarshal(v.rec.Handle, h); err != nil || h.GetId() == "" {
		h = &pluginv1.Handle{Id: v.rec.RunID}
	}
	// The VM still holds its block devices.
	s.reclaimBlocks(v)
	res, err := hv.Recover(ctx, h)
	if err != nil && !errors.Is(err, hypervisor.ErrUnknownVM) {
		s.opts.Logger.Warn("recover VM", "vm", v.rec.Name, "error", err)
	}
	// The monitor sorts out the rest: Wait returns at once for a VM that
	// exited while the daemon was away, or reports it lost.
	s.startMonitor(v, hv)
	return err == nil && res.GetRunning()
}

// startRecovered starts a VM that should run but does not.
func (s *Supervisor) startRecovered(ctx context.Context, v *vm) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	hv, err := s.opts.Backends.Hypervisor(v.rec.Backend)
	if err != nil {
		s.markFailed(v, err)
		return false
	}
	if v.rec.RunID != "" {
		s.cleanupRun(hv, v.rec.RunID)
	}
	imagePath, err := s.opts.Store.ImagePath(v.rec.ImageSHA256)
	if err != nil {
		s.markFailed(v, fmt.Errorf("image: %w", err))
		return false
	}
	if err := s.start(ctx, v, hv, s.spec(v.rec, imagePath, newRunID()), false); err != nil {
		if transient(err) && v.rec.Restart.OnFailure {
			s.startLater(v, hv, err)
			return false
		}
		s.markFailed(v, err)
		return false
	}
	s.startMonitor(v, hv)
	return true
}

// loadConsole copies the console history of a run that no longer runs
// into ring, from the ring's newest line on.
func (s *Supervisor) loadConsole(ctx context.Context, hv hypervisor.Hypervisor, runID string, ring *console.Ring) {
	if runID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var since int64
	if t := ring.LastTime(); !t.IsZero() {
		since = t.UnixNano()
	}
	var buf []console.Line
	err := hv.Console(ctx, &pluginv1.ConsoleRequest{Id: runID, SinceNs: since, Batch: true}, func(l *pluginv1.ConsoleLine) error {
		buf = consoleLines(buf[:0], l)
		ring.AppendBatch(buf)
		return nil
	})
	if err != nil && !errors.Is(err, hypervisor.ErrUnknownVM) {
		s.opts.Logger.Debug("console history of exited VM", "run", runID, "error", err)
	}
}

// RemoveOrphans destroys runs no record names. petreld calls it when a
// hypervisor plugin comes back after a crash, which may have left a run
// behind that a create could not clean up.
func (s *Supervisor) RemoveOrphans(ctx context.Context) {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	known := map[string]map[string]bool{}
	s.mu.Lock()
	for _, v := range s.vms {
		v.pubMu.Lock()
		r := v.pub
		v.pubMu.Unlock()
		if known[r.Backend] == nil {
			known[r.Backend] = map[string]bool{}
		}
		known[r.Backend][r.RunID] = true
	}
	s.mu.Unlock()
	s.removeOrphans(ctx, known)
}

// removeOrphans destroys runs that no record refers to (a daemon killed
// between starting a run and recording it, or records removed by hand).
func (s *Supervisor) removeOrphans(ctx context.Context, known map[string]map[string]bool) {
	if s.opts.RunIDs == nil {
		return
	}
	for _, backend := range s.backendNames(known) {
		hv, err := s.opts.Backends.Hypervisor(backend)
		if err != nil {
			continue
		}
		for _, id := range s.opts.RunIDs(backend) {
			if known[backend][id] {
				continue
			}
			s.opts.Logger.Info("removing orphaned run", "backend", backend, "run", id)
			if err := hv.Destroy(ctx, id); err != nil && !errors.Is(err, hypervisor.ErrUnknownVM) {
				s.opts.Logger.Error("remove orphaned run", "run", id, "error", err)
			}
		}
	}
}

func (s *Supervisor) backendNames(known map[string]map[string]bool) []string {
	set := map[string]bool{s.opts.DefaultBackend: true}
	for b := range known {
		set[b] = true
	}
	if lister, ok := s.opts.Backends.(interface{ Names() []string }); ok {
		for _, n := range lister.Names() {
			set[n] = true
		}
	}
	var out []string
	for b := range set {
		out = append(out, b)
	}
	sort.Strings(out)
	return out
}
