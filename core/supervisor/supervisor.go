// Package supervisor owns the lifecycle of every VM: create, destroy,
// restart, restart-on-failure with back-off, startup order at boot, and
// recovery after a daemon restart. It persists each VM's record before
// acknowledging a change, drives the backend plugins through the
// hypervisor interface, and copies each VM's console into a ring that
// outlives the VM.
//
// Concurrency: each VM has its own lock, held for the whole of an
// operation on it, so requests on different VMs never wait for each other.
// Each running VM has one monitor goroutine that waits for its exit and
// restarts it when the policy says so; destroy and restart cancel it.
package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/console"
	"github.com/petrel-vmm/petrel/core/events"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/core/vmrecord"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// Errors callers map to user-facing classes.
var (
	// ErrNotFound: no VM of that name.
	ErrNotFound = errors.New("no such VM")
	// ErrExists: a VM of that name exists and force was not given.
	ErrExists = errors.New("VM already exists")
)

// Store is the persistence the supervisor needs (core/store implements it).
type Store interface {
	Put(collection, key string, v any) error
	Delete(collection, key string) error
	Walk(collection string, fn func(key string, raw json.RawMessage) error) error
	ImagePath(sha string) (string, error)
}

// Backends resolves a backend name to its (restart-proof) plugin.
type Backends interface {
	Hypervisor(name string) (hypervisor.Hypervisor, error)
	// Names lists the enabled backends, so that a create naming none can
	// go to the one that runs its image.
	Names() []string
}

// BlockDevices hands block devices to VMs, one VM at a time.
type BlockDevices interface {
	// Acquire reserves device dev for vm (again, harmlessly, if vm holds
	// it already) and returns its file and size.
	Acquire(dev, vm string) (path string, sizeMB int64, err error)
	// Release returns a device vm holds.
	Release(dev, vm string)
}

// Network gives VMs taps on host bridges.
type Network interface {
	// TapName and DeriveMAC are the deterministic names and addresses of
	// a VM's devices.
	TapName(vm, netName string) string
	DeriveMAC(vm, netName string) string
	// ParseMAC normalises a MAC given by a user.
	ParseMAC(mac string) (string, error)
	// BridgeExists reports whether bridge exists on the host.
	BridgeExists(ctx context.Context, bridge string) (bool, error)
	// Attach creates (or, if it is already there, reuses) hostIf on
	// bridge, up.
	Attach(ctx context.Context, vm, netName, bridge, mac, hostIf string) error
	// Detach removes hostIf; a missing one is not an error.
	Detach(ctx context.Context, hostIf string) error
	// Reconcile removes every tap not in keep and returns what it removed.
	Reconcile(ctx context.Context, keep []string) ([]string, error)
}

// Options configure a Supervisor.
type Options struct {
	Store    Store
	Backends Backends
	Events   *events.Bus
	Logger   hclog.Logger
	// DefaultBackend serves creates that name none.
	DefaultBackend string
	// ConsoleLines and ConsoleBytes bound each VM's console ring.
	ConsoleLines, ConsoleBytes int
	// MaxFollowers caps live console followers per VM.
	MaxFollowers int
	// StopTimeout is the grace period between SIGTERM and SIGKILL.
	StopTimeout time.Duration
	// BackoffMin, BackoffMax and ResetAfter shape restart-on-failure.
	BackoffMin, BackoffMax, ResetAfter time.Duration
	// BootID identifies the current host boot.
	BootID string
	// RunIDs lists the run ids that backend has runtime directories for,
	// so that orphans can be removed at start-up.
	RunIDs func(backend string) []string
	// RemoveRun kills what still runs of a run of backend, through its
	// shim, and removes its runtime directory, without the backend: it
	// serves destroy and restart of a VM whose backend is no longer
	// enabled (unsupervised). Nil leaves such runs alone.
	RemoveRun func(ctx context.Context, backend, runID string) error
	// Blocks provides block devices; nil when the host has none.
	Blocks BlockDevices
	// Network provides taps; nil when no network plugin is configured.
	Network Network
	// Policies, when set, bound what VMs under each path may take; every
	// create is checked against the policy of every ancestor.
	Policies *policy.Tree
	// BeforeAdmit, when set, runs before each policy check (petreld
	// re-reads the host's resources, as bridges come and go).
	BeforeAdmit func()
	// HostCPUs and HostMemoryMB bound what a VM may ask for.
	HostCPUs     int
	HostMemoryMB uint32
}

// CreateParams is a create request after parsing.
type CreateParams struct {
	Name        string
	Backend     string
	ImageSHA256 string
	ImageName   string
	MemoryMB    uint32
	CPUs        []uint32
	Args        []string
	Restart     RestartPolicy
	Startup     int32
	Force       bool
	// Blocks attach block devices; Device is a label in the VM's path
	// (default: the manifest name).
	Blocks []BlockParam
	// Nets attach network devices to bridges.
	Nets []NetParam
	// InitrdSHA256 and KernelCmdline are for Linux guests.
	InitrdSHA256  string
	KernelCmdline string
	// ImageRef and ImageDigest record the OCI reference the image was
	// pulled by and its manifest digest (see vmrecord.Record).
	ImageRef, ImageDigest string
}

// Supervisor manages every VM of one daemon.
type Supervisor struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	vms      map[string]*vm
	reserved map[string]policy.Usage // creates being admitted; guarded by mu

	admitMu sync.Mutex // serialises policy checks with their reservations
	// startMu keeps reconciliation (of taps and of runtime directories)
	// out while a start creates them and records them: reconciliation
	// removes whatever no record names.
	startMu sync.RWMutex
}

// vm is one VM's live state.
type vm struct {
	mu   sync.Mutex // held during lifecycle operations on this VM
	rec  Record     // guarded by mu
	gone bool       // destroyed or never created; guarded by mu
	run  *run       // current monitor, nil when none; guarded by mu

	pubMu sync.Mutex // guards pub and ring
	pub   Record     // snapshot for readers that must not wait for mu
	ring  *console.Ring
}

// run is a monitor goroutine and how to stop it.
type run struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Supervisor. Call Recover before serving requests.
func New(opts Options) *Supervisor {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Events == nil {
		opts.Events = events.New()
	}
	if opts.MaxFollowers <= 0 {
		opts.MaxFollowers = 32
	}
	if opts.HostCPUs <= 0 {
		opts.HostCPUs = runtime.NumCPU()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Supervisor{opts: opts, ctx: ctx, cancel: cancel, vms: map[string]*vm{}, reserved: map[string]policy.Usage{}}
}

// Close stops every monitor goroutine. VMs keep running; a later
// daemon reattaches to them.
func (s *Supervisor) Close() {
	s.cancel()
	s.wg.Wait()
}

func (s *Supervisor) newRing() *console.Ring {
	return console.NewRing(s.opts.ConsoleLines, s.opts.ConsoleBytes, s.opts.MaxFollowers)
}

func newRunID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// invalid marks err as the user's mistake.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", hypervisor.ErrInvalid, fmt.Sprintf(format, args...))
}

// persist writes v.rec durably and refreshes the readers' snapshot.
func (s *Supervisor) persist(v *vm) error {
	if err := s.opts.Store.Put(RecordsCollection, recordKey(v.rec.Name), v.rec); err != nil {
		return fmt.Errorf("save VM %s: %w", v.rec.Name, err)
	}
	s.publishRecord(v)
	return nil
}

func (s *Supervisor) publishRecord(v *vm) {
	v.pubMu.Lock()
	v.pub = v.rec.Clone()
	v.pubMu.Unlock()
}

func recordKey(n string) string {
	p, err := name.Parse(n)
	if err != nil {
		return n
	}
	return p.FileKey()
}

func (s *Supervisor) event(typ string, r Record, msg string) {
	s.opts.Events.Publish(events.Event{Type: typ, Name: r.Name, ExitCode: r.ExitCode, ExitSignal: r.ExitSignal, Message: msg})
}

// MaxArgBytes bounds a VM's arguments joined with single spaces (with a
// Linux guest's kernel command line in front): Solo5's command line limit
// (solo5.MaxCmdline, 8192 bytes with the terminating NUL), applied to
// every backend, so that arguments no guest could take are refused as the
// caller's mistake before anything starts, rather than by the tender or,
// far larger, by the kernel when the tender is executed. A Linux kernel
// takes less on most architectures (2048 bytes on x86) and says so itself.
const MaxArgBytes = solo5.MaxCmdline - 1

// checkArgs refuses arguments that no guest's command line can carry:
// with NUL bytes, or longer than MaxArgBytes joined with spaces.
func checkArgs(args []string, kernelCmdline string) error {
	if strings.IndexByte(kernelCmdline, 0) >= 0 {
		return invalid("the kernel command line contains a NUL byte, which a command line cannot carry")
	}
	n := len(kernelCmdline)
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return invalid("argument %d contains a NUL byte, which a command line cannot carry", i+1)
		}
		if n > 0 || i > 0 {
			n++
		}
		n += len(a)
	}
	if n > MaxArgBytes {
		return invalid("the arguments take %d bytes joined with spaces; a guest's command line holds at most %d (Solo5's %d bytes with the terminating NUL)", n, MaxArgBytes, solo5.MaxCmdline)
	}
	return nil
}

// checkParams validates what can be checked without the backend.
func (s *Supervisor) checkParams(p *CreateParams) error {
	n, err := name.ParseVM(p.Name)
	if err != nil {
		return invalid("%v", err)
	}
	p.Name = n.String()
	if len(n.FileKey()) > 250 {
		return invalid("name %q is longer than 250 bytes", p.Name)
	}
	if p.Backend == "" {
		p.Backend = s.opts.DefaultBackend
	}
	if p.MemoryMB == 0 {
		p.MemoryMB = 32
	}
	if err := checkArgs(p.Args, p.KernelCmdline); err != nil {
		return err
	}
	if s.opts.HostMemoryMB > 0 && p.MemoryMB > s.opts.HostMemoryMB {
		return invalid("%d MB of memory requested, the host has %d MB", p.MemoryMB, s.opts.HostMemoryMB)
	}
	seen := map[uint32]bool{}
	for _, c := range p.CPUs {
		if int(c) >= s.opts.HostCPUs {
			return invalid("CPU %d does not exist (the host has CPUs 0-%d)", c, s.opts.HostCPUs-1)
		}
		if seen[c] {
			return invalid("CPU %d given twice", c)
		}
		seen[c] = true
	}
	for _, c := range p.Restart.ExitCodes {
		if c < 0 || c > 255 {
			return invalid("exit code %d is outside 0-255", c)
		}
	}
	if len(p.Restart.ExitCodes) > 0 {
		p.Restart.OnFailure = true
	}
	names := map[string]bool{}
	devices := map[string]bool{}
	for i, b := range p.Blocks {
		if b.Name == "" {
			return invalid("block attachment %d has no manifest device name", i+1)
		}
		if names[b.Name] {
			return invalid("block device %q attached twice", b.Name)
		}
		names[b.Name] = true
		label := b.Device
		if label == "" {
			label = b.Name
		}
		dev, err := n.Parent().Child(label)
		if err != nil {
			return invalid("block device %q: %v (give a label; it is looked up in the VM's path %s)", label, err, n.Parent())
		}
		if devices[dev.String()] {
			return invalid("block device %s attached twice", dev)
		}
		devices[dev.String()] = true
		if s := b.SectorSize; s != 0 && (s < 512 || s&(s-1) != 0) {
			return invalid("sector size %d of %q is not a power of two of at least 512", s, b.Name)
		}
		p.Blocks[i].Device = dev.String()
	}
	if len(p.Blocks) > 0 && s.opts.Blocks == nil {
		return invalid("this host has no block device storage")
	}
	if len(p.Nets) > 0 && s.opts.Network == nil {
		return invalid("no network plugin is configured on this host")
	}
	for i, nt := range p.Nets {
		if nt.Name == "" || nt.Bridge == "" {
			return invalid("network attachment %d needs NAME:BRIDGE", i+1)
		}
		if names[nt.Name] {
			return invalid("device %q configured twice", nt.Name)
		}
		names[nt.Name] = true
		if nt.MAC == "" {
			p.Nets[i].MAC = s.opts.Network.DeriveMAC(p.Name, nt.Name)
		} else {
			mac, err := s.opts.Network.ParseMAC(nt.MAC)
			if err != nil {
				return invalid("device %q: %v", nt.Name, err)
			}
			p.Nets[i].MAC = mac
		}
		p.Nets[i].HostIf = s.opts.Network.TapName(p.Name, nt.Name)
	}
	return nil
}

// checkNets verifies that the bridges exist and that no other VM uses
// the MACs. Caller holds v.mu.
func (s *Supervisor) checkNets(ctx context.Context, v *vm, nets []NetParam) error {
	if len(nets) == 0 {
		return nil
	}
	mine := map[string]bool{}
	for _, nt := range nets {
		if mine[nt.MAC] {
			return invalid("MAC %s given to two devices", nt.MAC)
		}
		mine[nt.MAC] = true
		ok, err := s.opts.Network.BridgeExists(ctx, nt.Bridge)
		if err != nil {
			return fmt.Errorf("look up bridge %s: %w", nt.Bridge, err)
		}
		if !ok {
			return invalid("bridge %s does not exist on this host (see petrel bridges)", nt.Bridge)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, other := range s.vms {
		if other == v {
			continue
		}
		other.pubMu.Lock()
		r := other.pub
		other.pubMu.Unlock()
		if vmrecord.Down(r.State) {
			continue
		}
		for _, nt := range r.Nets {
			if mine[nt.MAC] {
				return invalid("MAC %s is already used by VM %s", nt.MAC, r.Name)
			}
		}
	}
	return nil
}

// attachNets creates v's taps and fills spec. On failure it removes the
// taps it made. Caller holds v.mu.
func (s *Supervisor) attachNets(ctx context.Context, v *vm, spec *pluginv1.VMSpec) error {
	spec.Nets = nil
	for i, nt := range v.rec.Nets {
		if err := s.opts.Network.Attach(ctx, v.rec.Name, nt.Name, nt.Bridge, nt.MAC, nt.HostIf); err != nil {
			for _, made := range v.rec.Nets[:i] {
				s.detachOne(made.HostIf)
			}
			return fmt.Errorf("attach %s to %s: %w", nt.HostIf, nt.Bridge, err)
		}
		spec.Nets = append(spec.Nets, &pluginv1.NetDevice{Name: nt.Name, HostIf: nt.HostIf, Mac: nt.MAC})
	}
	return nil
}

func (s *Supervisor) detachOne(hostIf string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.opts.Network.Detach(ctx, hostIf); err != nil {
		s.opts.Logger.Error("remove tap", "tap", hostIf, "error", err)
	}
}

// detachNets removes v's taps. Caller holds v.mu.
func (s *Supervisor) detachNets(v *vm) {
	if s.opts.Network == nil {
		return
	}
	for _, nt := range v.rec.Nets {
		s.detachOne(nt.HostIf)
	}
}

// releaseDevices gives back what a VM that no longer runs held.
func (s *Supervisor) releaseDevices(v *vm) {
	s.releaseBlocks(v)
	s.detachNets(v)
}

// acquireBlocks reserves v's block devices and fills spec. On failure it
// releases what it took. Caller holds v.mu.
func (s *Supervisor) acquireBlocks(v *vm, spec *pluginv1.VMSpec) error {
	spec.Blocks = nil
	if len(v.rec.Blocks) > 0 && s.opts.Blocks == nil {
		return invalid("this host has no block device storage")
	}
	for i, b := range v.rec.Blocks {
		path, sizeMB, err := s.opts.Blocks.Acquire(b.Device, v.rec.Name)
		if err == nil && b.SectorSize != 0 && (sizeMB<<20)%int64(b.SectorSize) != 0 {
			s.opts.Blocks.Release(b.Device, v.rec.Name)
			err = invalid("sector size %d does not divide the %d MB of %s", b.SectorSize, sizeMB, b.Device)
		}
		if err != nil {
			for _, taken := range v.rec.Blocks[:i] {
				s.opts.Blocks.Release(taken.Device, v.rec.Name)
			}
			return fmt.Errorf("block device %s: %w", b.Device, err)
		}
		spec.Blocks = append(spec.Blocks, &pluginv1.BlockDevice{Name: b.Name, Path: path, SectorSize: b.SectorSize})
	}
	return nil
}

// releaseBlocks returns v's block devices. Caller holds v.mu.
func (s *Supervisor) releaseBlocks(v *vm) {
	if s.opts.Blocks == nil {
		return
	}
	for _, b := range v.rec.Blocks {
		s.opts.Blocks.Release(b.Device, v.rec.Name)
	}
}

// lockEntry returns the VM entry for n with its lock held. When there is
// none it returns ErrNotFound, or with create a new placeholder (gone=true)
// that dropIfGone removes if it never becomes a VM.
func (s *Supervisor) lockEntry(n string, create bool) (*vm, error) {
	for {
		s.mu.Lock()
		v := s.vms[n]
		if v == nil {
			if !create {
				s.mu.Unlock()
				return nil, fmt.Errorf("%w: %s", ErrNotFound, n)
			}
			v = &vm{gone: true, ring: s.newRing()}
			v.rec.Name = n
			s.vms[n] = v
		}
		s.mu.Unlock()
		v.mu.Lock()
		s.mu.Lock()
		current := s.vms[n] == v
		s.mu.Unlock()
		if current {
			return v, nil
		}
		v.mu.Unlock() // removed while we waited: look again
	}
}

// dropIfGone removes a placeholder that never became a VM. Caller holds v.mu.
func (s *Supervisor) dropIfGone(v *vm) {
	if !v.gone {
		return
	}
	s.mu.Lock()
	if s.vms[v.rec.Name] == v {
		delete(s.vms, v.rec.Name)
	}
	s.mu.Unlock()
}

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
		v.ring.SetClosed(true)
		v.pubMu.Lock()
		v.ring = s.newRing()
		v.pubMu.Unlock()
		s.event(events.Destroyed, v.rec, "replaced")
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

// Info returns the VM called n, or every VM under the path n ("" or ":"
// for all), sorted by name.
func (s *Supervisor) Info(n string) ([]Record, error) {
	p, err := name.Parse(n)
	if err != nil {
		return nil, invalid("%v", err)
	}
	s.mu.Lock()
	var out []Record
	for _, v := range s.vms {
		v.pubMu.Lock()
		r := v.pub
		v.pubMu.Unlock()
		if r.State == "" {
			continue // a create in progress
		}
		rp, err := name.Parse(r.Name)
		if err == nil && p.IsPrefixOf(rp) {
			out = append(out, r.Clone())
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) == 0 && !p.IsRoot() {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	return out, nil
}

// ImagesInUse lists the image (and initrd) digests some VM refers to.
func (s *Supervisor) ImagesInUse() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := map[string]bool{}
	for _, v := range s.vms {
		v.pubMu.Lock()
		if v.pub.ImageSHA256 != "" {
			in[v.pub.ImageSHA256] = true
		}
		if v.pub.InitrdSHA256 != "" {
			in[v.pub.InitrdSHA256] = true
		}
		v.pubMu.Unlock()
	}
	return in
}

// Console returns a VM's console ring.
func (s *Supervisor) Console(n string) (*console.Ring, error) {
	p, err := name.ParseVM(n)
	if err != nil {
		return nil, invalid("%v", err)
	}
	s.mu.Lock()
	v := s.vms[p.String()]
	s.mu.Unlock()
	if v == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	v.pubMu.Lock()
	defer v.pubMu.Unlock()
	if v.pub.State == "" {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	return v.ring, nil
}
