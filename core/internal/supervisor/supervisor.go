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
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/core/internal/console"
	"github.com/petrel-vmm/petrel/core/internal/consolemux"
	"github.com/petrel-vmm/petrel/core/internal/events"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
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

	muxMu sync.Mutex
	muxes map[string]*consolemux.Mux // each backend's console stream, by name
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
	s.closeConsoleMuxes()
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
