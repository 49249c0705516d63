package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/internal/events"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/vmrecord"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Create deploys a VM and returns its record once the guest runs.
func (s *Supervisor) Create(ctx context.Context, p CreateParams) (Record, error) {
	explicit := p.Backend != ""
	if err := s.checkParams(&p); err != nil {
		return Record{}, err
	}
	imagePath, err := s.opts.Store.ImagePath(p.ImageSHA256)
	if err != nil {
		return Record{}, invalid("image %s: %v", p.ImageSHA256, err)
	}
	hv, err := s.chooseBackend(ctx, &p, imagePath, explicit)
	if err != nil {
		return Record{}, err
	}
	if p.InitrdSHA256 != "" {
		if _, err := s.opts.Store.ImagePath(p.InitrdSHA256); err != nil {
			return Record{}, invalid("initrd %s: %v", p.InitrdSHA256, err)
		}
	}
	v, err := s.lockEntry(p.Name, true)
	if err != nil {
		return Record{}, err
	}
	defer v.mu.Unlock()
	defer s.dropIfGone(v)
	if !v.gone && !p.Force {
		return Record{}, fmt.Errorf("%w: %s (use --force to replace it)", ErrExists, p.Name)
	}
	rec := Record{
		Name: p.Name, Backend: p.Backend, ImageSHA256: p.ImageSHA256, ImageName: p.ImageName,
		MemoryMB: p.MemoryMB, CPUs: p.CPUs, Args: p.Args, Restart: p.Restart, Startup: p.Startup,
		Blocks: p.Blocks, Nets: p.Nets, InitrdSHA256: p.InitrdSHA256, KernelCmdline: p.KernelCmdline,
		ImageRef: p.ImageRef, ImageDigest: p.ImageDigest, CreatedAt: time.Now().UTC(),
	}
	spec := s.spec(rec, imagePath, newRunID())
	if !v.gone || len(rec.Nets) > 0 || len(rec.Blocks) > 0 {
		// Check everything before anything is created or replaced. (A
		// plain fresh create leaves validation to Start, which refuses an
		// invalid spec before anything runs.)
		for _, nt := range rec.Nets {
			spec.Nets = append(spec.Nets, &pluginv1.NetDevice{Name: nt.Name, HostIf: nt.HostIf, Mac: nt.MAC})
		}
		for _, b := range rec.Blocks {
			spec.Blocks = append(spec.Blocks, &pluginv1.BlockDevice{Name: b.Name, SectorSize: b.SectorSize})
		}
		if err := s.validate(ctx, hv, spec, recordImageLabel(rec)); err != nil {
			return Record{}, err
		}
		if err := s.checkNets(ctx, v, rec.Nets); err != nil {
			return Record{}, err
		}
	}
	if err := s.confine(ctx, hv, spec); err != nil {
		return Record{}, err
	}
	release, err := s.admit(rec)
	if err != nil {
		return Record{}, err
	}
	defer release()
	// A VM that is down (its run over, nothing held) is replaced without
	// touching its run first: the new run starts, its record is written,
	// and only then is the old run removed. Until the new record is
	// written, a daemon killed finds the old VM as it was (the new run,
	// which no record names, is removed as an orphan); after, it finds the
	// new one (and removes the old run as an orphan). That spares a
	// replacement's durable write and the old run's removal before the
	// guest starts, which is the common re-deploy (create --force of a VM
	// that has exited); the old run is removed after the create is
	// answered.
	var downOld *Record
	if !v.gone && vmrecord.Down(v.rec.State) {
		old := v.rec
		downOld = &old
		if v.run != nil {
			v.run.cancel() // its monitor has nothing left to follow
			v.run = nil
		}
	} else if !v.gone {
		// The replacement is recorded, starting, before the old run
		// goes: a daemon killed from here on finds the new configuration
		// and starts it (the old run, which no record names then, is
		// removed as an orphan), never a record of a run that is gone.
		next := rec
		next.State, next.RunID, next.BootID = StateStarting, spec.Id, s.opts.BootID
		if err := s.opts.Store.Put(RecordsCollection, recordKey(rec.Name), next); err != nil {
			return Record{}, fmt.Errorf("replace %s: save VM: %w", p.Name, err)
		}
		if err := s.teardown(ctx, v); err != nil {
			if perr := s.persist(v); perr != nil {
				s.opts.Logger.Error("restore record of VM not replaced", "vm", p.Name, "error", perr)
			}
			return Record{}, fmt.Errorf("replace %s: %w", p.Name, err)
		}
	}
	if !v.gone {
		// The replaced VM's console ends with it; the new run's starts
		// afresh.
		v.ring.SetClosed(true)
		v.pubMu.Lock()
		v.ring = s.newRing()
		v.pubMu.Unlock()
		s.event(events.Destroyed, v.rec, "replaced")
	}
	v.rec = rec
	if err := s.start(ctx, v, hv, spec, true); err != nil {
		if downOld != nil {
			// As when the old run goes first: a failed replacement
			// leaves neither.
			s.removeReplacedRun(ctx, *downOld)
		}
		v.gone = true
		if derr := s.opts.Store.Delete(RecordsCollection, recordKey(rec.Name)); derr != nil {
			s.opts.Logger.Error("remove record of failed create", "vm", rec.Name, "error", derr)
		}
		return Record{}, err
	}
	if downOld != nil {
		// Nothing waits for it: the create is answered at once, and the
		// old run, which no record names any more, goes meanwhile.
		old := *downOld
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.removeReplacedRun(s.ctx, old)
		}()
	}
	v.gone = false
	s.event(events.Created, v.rec, "")
	s.event(events.Started, v.rec, "")
	s.startMonitor(v, hv)
	return v.rec.Clone(), nil
}

// removeReplacedRun removes the run of r, a down VM that was replaced,
// at its backend. It is tried once: a run it fails to remove belongs to
// no record, and is removed as an orphan when the plugin comes back or
// petreld starts.
func (s *Supervisor) removeReplacedRun(ctx context.Context, r Record) {
	if r.RunID == "" {
		return
	}
	hv, err := s.opts.Backends.Hypervisor(r.Backend)
	switch {
	case err == nil:
		err = hv.Destroy(ctx, r.RunID)
		if errors.Is(err, hypervisor.ErrUnknownVM) {
			err = nil
		}
	case errors.Is(err, hypervisor.ErrInvalid) && s.opts.RemoveRun != nil:
		// The backend is no longer enabled; its run is removed directly.
		err = s.opts.RemoveRun(ctx, r.Backend, r.RunID)
	}
	if err != nil {
		s.opts.Logger.Warn("remove the run of a replaced VM", "vm", r.Name, "run", r.RunID, "error", err)
	}
}

func (s *Supervisor) spec(r Record, imagePath, runID string) *pluginv1.VMSpec {
	spec := &pluginv1.VMSpec{
		Id: runID, Name: r.Name, ImagePath: imagePath, MemoryMb: r.MemoryMB, Cpus: r.CPUs, Args: r.Args,
		ConsoleLines: uint32(s.opts.ConsoleLines), ConsoleBytes: uint32(s.opts.ConsoleBytes),
		KernelCmdline: r.KernelCmdline,
	}
	if r.InitrdSHA256 != "" {
		// Checked at create; a vanished initrd makes Start fail clearly.
		spec.InitrdPath, _ = s.opts.Store.ImagePath(r.InitrdSHA256)
	}
	return spec
}

// confine sets the CPUs a VM pinned to none runs within (spec.AllowedCpus)
// to those its governing policies allow, as they are now, and refuses to
// go on when the policies allow none of the host's CPUs or when the
// backend cannot confine a VM to CPUs: a VM governed by a CPU set never
// runs outside it.
func (s *Supervisor) confine(ctx context.Context, hv hypervisor.Hypervisor, spec *pluginv1.VMSpec) error {
	spec.AllowedCpus = nil
	if len(spec.GetCpus()) > 0 || s.opts.Policies == nil {
		return nil
	}
	vm, err := name.ParseVM(spec.GetName())
	if err != nil {
		return invalid("%v", err)
	}
	cpus, confined, err := s.opts.Policies.CPUs(vm)
	if err != nil || !confined {
		return err
	}
	caps, err := hv.Capabilities(ctx)
	if err != nil {
		return fmt.Errorf("capabilities of the backend of %s: %w", spec.GetName(), err)
	}
	if !caps.GetConfinesCpus() {
		return fmt.Errorf("%w: the backend of %s cannot confine a VM to CPUs, and the policies governing it allow only CPUs %v",
			hypervisor.ErrUnavailable, spec.GetName(), cpus)
	}
	for _, c := range cpus {
		spec.AllowedCpus = append(spec.AllowedCpus, uint32(c))
	}
	return nil
}

// validate asks the backend whether it can run spec; image is how the
// refusal names the image (see hideStorePaths).
func (s *Supervisor) validate(ctx context.Context, hv hypervisor.Hypervisor, spec *pluginv1.VMSpec, image string) error {
	res, err := hv.Validate(ctx, spec)
	if err != nil {
		return hideStorePaths(fmt.Errorf("validate %s: %w", spec.Name, err), spec, image)
	}
	if !res.GetOk() {
		return hideStorePaths(invalid("%s", res.GetReason()), spec, image)
	}
	return nil
}

// start runs spec for v and records it as running (see startSpec); its
// errors name the image and initrd as their users know them, never by
// their files in the image store.
func (s *Supervisor) start(ctx context.Context, v *vm, hv hypervisor.Hypervisor, spec *pluginv1.VMSpec, fresh bool) error {
	return hideStorePaths(s.startSpec(ctx, v, hv, spec, fresh), spec, recordImageLabel(v.rec))
}

// startSpec runs spec for v and records it as running. A VM that already has
// a record is first recorded as starting, so that a daemon killed
// mid-start starts it again; a fresh create needs no such step, because
// until it is acknowledged a crash may forget it (the half-started run is
// then an orphan, removed at recovery). On failure nothing is left at the
// backend. Caller holds v.mu.
func (s *Supervisor) startSpec(ctx context.Context, v *vm, hv hypervisor.Hypervisor, spec *pluginv1.VMSpec, fresh bool) error {
	s.startMu.RLock()
	defer s.startMu.RUnlock()
	v.rec.State = StateStarting
	v.rec.RunID = spec.Id
	v.rec.Handle, v.rec.Pid, v.rec.ShimPid, v.rec.Argv = nil, 0, 0, nil
	v.rec.BootID = s.opts.BootID
	if !fresh {
		if err := s.persist(v); err != nil {
			return err
		}
	}
	if err := s.confine(ctx, hv, spec); err != nil {
		return fmt.Errorf("start %s: %w", v.rec.Name, err)
	}
	if err := s.acquireBlocks(v, spec); err != nil {
		return err
	}
	if err := s.attachNets(ctx, v, spec); err != nil {
		s.releaseBlocks(v)
		return err
	}
	h, err := hv.Start(ctx, spec)
	if err != nil {
		s.releaseDevices(v)
		s.cleanupRun(hv, spec.Id)
		return fmt.Errorf("start %s: %w", v.rec.Name, err)
	}
	hb, err := proto.Marshal(h)
	if err != nil {
		s.releaseDevices(v)
		s.cleanupRun(hv, spec.Id)
		return fmt.Errorf("start %s: encode handle: %w", v.rec.Name, err)
	}
	v.rec.State = StateRunning
	v.rec.Handle, v.rec.Pid, v.rec.ShimPid, v.rec.Argv = hb, h.GetPid(), h.GetShimPid(), h.GetArgv()
	v.rec.StartedAt = startedAt(h)
	v.rec.Message = ""
	if err := s.persist(v); err != nil {
		s.releaseDevices(v)
		s.cleanupRun(hv, spec.Id)
		return err
	}
	v.ring.SetClosed(false)
	return nil
}

// startedAt is when the run of h started: as its shim recorded it, which
// is the clock its exit is recorded by too, or, from a backend that does
// not say, now. A guest that exits at once may be gone before Start
// returns, so the daemon's own clock would put its start after its exit.
func startedAt(h *pluginv1.Handle) time.Time {
	if ns := h.GetStartedAtNs(); ns > 0 {
		return time.Unix(0, ns).UTC()
	}
	return time.Now().UTC()
}

// cleanupRun removes a run at the backend on a failure path.
func (s *Supervisor) cleanupRun(hv hypervisor.Hypervisor, runID string) {
	err := retryPlugin(context.Background(), func(ctx context.Context) error { return hv.Destroy(ctx, runID) })
	if err != nil && !errors.Is(err, hypervisor.ErrUnknownVM) {
		s.opts.Logger.Error("clean up run", "run", runID, "error", err)
	}
}

// pluginRetryFor bounds how long a call is retried while a plugin that
// crashed mid-call restarts.
const pluginRetryFor = 30 * time.Second

// retryPlugin calls f until it succeeds, fails for a reason a retry
// cannot change (unknown VM, invalid request), or pluginRetryFor passes:
// a plugin that crashed mid-call is restarted within that time, and the
// call then reaches the new process.
func retryPlugin(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, pluginRetryFor)
	defer cancel()
	for {
		err := f(ctx)
		if err == nil || errors.Is(err, hypervisor.ErrUnknownVM) || errors.Is(err, hypervisor.ErrInvalid) || ctx.Err() != nil {
			return err
		}
		if !sleep(ctx, retryDelay) {
			return err
		}
	}
}

// teardown stops v's monitor and its guest and removes the run at the
// backend. Caller holds v.mu.
func (s *Supervisor) teardown(ctx context.Context, v *vm) (err error) {
	if v.run != nil {
		v.run.cancel()
		v.run = nil
	}
	if v.rec.RunID == "" {
		return nil
	}
	hv, err := s.opts.Backends.Hypervisor(v.rec.Backend)
	if err != nil {
		if !errors.Is(err, hypervisor.ErrInvalid) {
			return err
		}
		// The backend is no longer enabled: what still runs of the VM is
		// stopped through its shim.
		if s.opts.RemoveRun != nil {
			if err := s.opts.RemoveRun(ctx, v.rec.Backend, v.rec.RunID); err != nil {
				return fmt.Errorf("stop %s without its backend: %w", v.rec.Name, err)
			}
		}
		s.releaseDevices(v)
		return nil
	}
	defer func() {
		// The VM may still run: keep following it, so its state stays true.
		if err != nil && holdsResources(v.rec.State) {
			s.startMonitor(v, hv)
		}
	}()
	runID := v.rec.RunID
	if v.rec.State == StateRunning || v.rec.State == StateStarting {
		err := retryPlugin(ctx, func(ctx context.Context) error { return hv.Stop(ctx, runID, s.opts.StopTimeout) })
		if err != nil && !errors.Is(err, hypervisor.ErrUnknownVM) {
			return fmt.Errorf("stop %s: %w", v.rec.Name, err)
		}
		// The monitor no longer copies the console: keep the last words.
		s.loadConsole(ctx, hv, runID, v.ring)
	}
	if err := retryPlugin(ctx, func(ctx context.Context) error { return hv.Destroy(ctx, runID) }); err != nil && !errors.Is(err, hypervisor.ErrUnknownVM) {
		return fmt.Errorf("destroy %s: %w", v.rec.Name, err)
	}
	s.releaseDevices(v)
	return nil
}

// Destroy stops and removes a VM in any state.
func (s *Supervisor) Destroy(ctx context.Context, n string) error {
	p, err := name.ParseVM(n)
	if err != nil {
		return invalid("%v", err)
	}
	v, err := s.lockEntry(p.String(), false)
	if err != nil {
		return err
	}
	var done chan struct{}
	if v.run != nil {
		done = v.run.done
	}
	err = s.destroyLocked(ctx, v)
	v.mu.Unlock()
	if err != nil {
		return err
	}
	if done != nil {
		<-done
	}
	return nil
}

func (s *Supervisor) destroyLocked(ctx context.Context, v *vm) error {
	if v.gone {
		s.dropIfGone(v)
		return fmt.Errorf("%w: %s", ErrNotFound, v.rec.Name)
	}
	if err := s.teardown(ctx, v); err != nil {
		return err
	}
	if err := s.opts.Store.Delete(RecordsCollection, recordKey(v.rec.Name)); err != nil {
		return fmt.Errorf("remove record of %s: %w", v.rec.Name, err)
	}
	v.gone = true
	v.ring.SetClosed(true)
	s.dropIfGone(v)
	s.event(events.Destroyed, v.rec, "")
	return nil
}

// Restart stops the VM (if it runs) and starts it again, with new
// arguments when args is not nil.
func (s *Supervisor) Restart(ctx context.Context, n string, args []string) (Record, error) {
	p, err := name.ParseVM(n)
	if err != nil {
		return Record{}, invalid("%v", err)
	}
	v, err := s.lockEntry(p.String(), false)
	if err != nil {
		return Record{}, err
	}
	defer v.mu.Unlock()
	if v.gone {
		s.dropIfGone(v)
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, n)
	}
	hv, err := s.opts.Backends.Hypervisor(v.rec.Backend)
	if err != nil {
		return Record{}, err
	}
	imagePath, err := s.opts.Store.ImagePath(v.rec.ImageSHA256)
	if err != nil {
		return Record{}, fmt.Errorf("image of %s: %w", n, err)
	}
	next := v.rec.Clone()
	if args != nil {
		if err := checkArgs(args, next.KernelCmdline); err != nil {
			return Record{}, err
		}
		next.Args = args
	}
	spec := s.spec(next, imagePath, newRunID())
	if err := s.validate(ctx, hv, spec, recordImageLabel(next)); err != nil {
		return Record{}, err
	}
	if err := s.confine(ctx, hv, spec); err != nil {
		return Record{}, err
	}
	if err := s.teardown(ctx, v); err != nil {
		return Record{}, err
	}
	v.rec.Args = next.Args
	if err := s.start(ctx, v, hv, spec, false); err != nil {
		if transient(err) && v.rec.Restart.OnFailure {
			s.startLater(v, hv, err)
			return Record{}, fmt.Errorf("%w (%s restarts on failure: it will be started once the plugin is back)", err, v.rec.Name)
		}
		s.markFailed(v, err)
		return Record{}, err
	}
	s.event(events.Restarted, v.rec, "restarted on request")
	s.startMonitor(v, hv)
	return v.rec.Clone(), nil
}

// markFailed records that v could not be started. Caller holds v.mu.
func (s *Supervisor) markFailed(v *vm, cause error) {
	v.rec.State = StateFailed
	v.rec.Message = cause.Error()
	s.releaseDevices(v)
	v.rec.Handle, v.rec.Pid, v.rec.ShimPid = nil, 0, 0
	if err := s.persist(v); err != nil {
		s.opts.Logger.Error("save failed state", "vm", v.rec.Name, "error", err)
	}
	v.ring.SetClosed(true)
	s.event(events.Failed, v.rec, cause.Error())
}
