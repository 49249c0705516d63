// Package pluginhost launches petreld's plugins, notices a crash the
// moment a plugin's process exits (and a hang by health checks), and
// restarts a crashed plugin, with back-off when it keeps crashing, without
// touching VMs (their shims run on their own). Callers get a Hypervisor
// per backend that stays valid across plugin restarts: each call goes to
// whichever plugin process is current, waiting (up to CallWait) for one
// to come up, and a call whose plugin died under it is made again on the
// next process.
package pluginhost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// BinaryPrefix is the file name prefix of plugin binaries:
// petrel-plugin-NAME serves the backend configured as NAME.
const BinaryPrefix = "petrel-plugin-"

// Options configure a Host.
type Options struct {
	// PluginDir holds the plugin binaries.
	PluginDir string
	// RunDir is the parent of each plugin's runtime directory
	// (RunDir/NAME, handed to the plugin in Configure).
	RunDir string
	// StateDir, if set, is the parent of each plugin's state directory
	// (StateDir/NAME, handed to the plugin in Configure): data a plugin
	// keeps across its restarts, petreld's and the host's, such as a
	// metrics sink's buffer. It belongs on persistent storage, unlike
	// RunDir, which is often a tmpfs.
	StateDir string
	Logger   hclog.Logger
	// HealthInterval is how often a plugin is pinged, to find one that
	// runs but no longer answers; a plugin that exits is noticed at once.
	HealthInterval time.Duration
	// CallWait bounds how long a call waits for a restarting plugin: a
	// call made while the plugin is down, or cut short by its crash,
	// waits for the new process and runs there.
	CallWait time.Duration
	// OnEvent reports plugin-crashed and plugin-restarted.
	OnEvent func(typ, name, message string)
	// InstanceID identifies the petreld instance (its data directory) to
	// the plugins, which mark the host-wide resources they make with it.
	InstanceID string
}

// Status describes one plugin for `petrel plugins` and health output.
type Status struct {
	Name, Path  string
	Kind        pluginv1.Kind
	Info        *pluginv1.PluginInfo
	Fingerprint *pluginv1.FingerprintResponse
	Running     bool
	Restarts    int
	LastError   string
	Pid         int
}

// Host owns every plugin process.
type Host struct {
	opts    Options
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	plugins map[string]*managed
}

// New returns a Host; plugins are added with AddHypervisor.
func New(opts Options) *Host {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = 5 * time.Second
	}
	if opts.CallWait <= 0 {
		opts.CallWait = 15 * time.Second
	}
	if opts.OnEvent == nil {
		opts.OnEvent = func(string, string, string) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Host{opts: opts, ctx: ctx, cancel: cancel, plugins: map[string]*managed{}}
}

// Common is what every plugin kind serves, whatever else it does.
type Common interface {
	Info(ctx context.Context) (*pluginv1.PluginInfo, error)
	Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error
	Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error)
}

// Kind describes how to launch and talk to one kind of plugin.
type Kind struct {
	// Kind is the plugin kind the binary must report.
	Kind pluginv1.Kind
	// Service is the go-plugin dispense name.
	Service string
	// Sets are the versioned plugin sets (with nil implementations).
	Sets map[int]plugin.PluginSet
}

// HypervisorKind launches hypervisor backends.
var HypervisorKind = Kind{Kind: pluginv1.Kind_KIND_HYPERVISOR, Service: petrelplugin.HypervisorService, Sets: petrelplugin.HypervisorPluginSets(nil)}

// managed is one plugin and its current process.
type managed struct {
	host     *Host
	kind     Kind
	name     string
	path     string
	settings map[string]string
	exited   chan struct{} // closed when Close stops the keeper

	mu       sync.Mutex
	gen      *generation   // the serving process, nil while there is none
	ready    chan struct{} // closed while gen is usable
	info     *pluginv1.PluginInfo
	fp       *pluginv1.FingerprintResponse
	restarts int
	lastErr  error
}

// generation is one process of a plugin: the calls it serves, and when it
// ended.
type generation struct {
	client *plugin.Client
	svc    Common
	pid    int
	// exited is closed as soon as the process has exited.
	exited <-chan struct{}
	// started is when the process was launched.
	started time.Time

	// capsMu guards caps, the process's Capabilities once asked: they
	// describe the plugin, not the moment, so one call per process serves
	// every create that needs them.
	capsMu sync.Mutex
	caps   *pluginv1.HypervisorCapabilities
}

// gone reports whether the process has exited.
func (g *generation) gone() bool {
	select {
	case <-g.exited:
		return true
	default:
		return false
	}
}

// BinaryPath is where the plugin for backend name is looked for.
func BinaryPath(dir, name string) string { return filepath.Join(dir, BinaryPrefix+name) }

// AddHypervisor launches the hypervisor plugin for backend name and keeps
// it running. It returns the first launch's error (the Host keeps
// retrying in the background, so a backend can come up later).
func (h *Host) AddHypervisor(name string, settings map[string]string) error {
	return h.Add(HypervisorKind, name, settings)
}

// Add launches the plugin petrel-plugin-NAME of the given kind and keeps
// it running, like AddHypervisor.
func (h *Host) Add(kind Kind, name string, settings map[string]string) error {
	h.mu.Lock()
	if _, dup := h.plugins[name]; dup {
		h.mu.Unlock()
		return fmt.Errorf("plugin %s added twice", name)
	}
	m := &managed{host: h, kind: kind, name: name, path: BinaryPath(h.opts.PluginDir, name), settings: settings,
		ready: make(chan struct{}), exited: make(chan struct{})}
	h.plugins[name] = m
	h.mu.Unlock()
	err := m.launch()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(m.exited)
		m.keep(err == nil)
	}()
	return err
}

// Hypervisor returns the restart-proof handle of backend name.
func (h *Host) Hypervisor(name string) (hypervisor.Hypervisor, error) {
	m, ok := h.lookup(name, pluginv1.Kind_KIND_HYPERVISOR)
	if !ok {
		return nil, fmt.Errorf("%w: no backend %q is enabled on this host", hypervisor.ErrInvalid, name)
	}
	return &proxy{m: m}, nil
}

// lookup finds a plugin of a kind.
func (h *Host) lookup(name string, kind pluginv1.Kind) (*managed, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.plugins[name]
	if !ok || m.kind.Kind != kind {
		return nil, false
	}
	return m, true
}

// NamesOf lists the plugins of one kind.
func (h *Host) NamesOf(kind pluginv1.Kind) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var names []string
	for n, m := range h.plugins {
		if m.kind.Kind == kind {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Names lists the hypervisor backends.
func (h *Host) Names() []string { return h.NamesOf(pluginv1.Kind_KIND_HYPERVISOR) }

// all lists every plugin name.
func (h *Host) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var names []string
	for n := range h.plugins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Status reports every plugin.
func (h *Host) Status() []Status {
	var out []Status
	for _, n := range h.all() {
		h.mu.Lock()
		m := h.plugins[n]
		h.mu.Unlock()
		m.mu.Lock()
		s := Status{Name: m.name, Kind: m.kind.Kind, Path: m.path, Info: m.info, Fingerprint: m.fp, Restarts: m.restarts}
		if m.lastErr != nil {
			s.LastError = m.lastErr.Error()
		}
		if g := m.gen; g != nil && !g.gone() {
			s.Running, s.Pid = true, g.pid
		}
		m.mu.Unlock()
		out = append(out, s)
	}
	return out
}

// Close stops every plugin process. VMs keep running.
func (h *Host) Close() {
	h.cancel()
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.plugins {
		m.mu.Lock()
		if m.gen != nil {
			m.gen.client.Kill()
			m.gen = nil
		}
		m.mu.Unlock()
	}
}

// launch starts a plugin process, checks it and configures it.
func (m *managed) launch() error {
	err := m.tryLaunch()
	m.mu.Lock()
	m.lastErr = err
	m.mu.Unlock()
	return err
}

func (m *managed) tryLaunch() error {
	if _, err := os.Stat(m.path); err != nil {
		return fmt.Errorf("plugin %s: %w", m.name, err)
	}
	logger := m.host.opts.Logger.Named(m.name)
	cfg := petrelplugin.ClientConfig(m.path, m.kind.Sets, logger)
	var proc *processRunner
	useProcessRunner(cfg, func(r *processRunner) { proc = r })
	c := plugin.NewClient(cfg)
	fail := func(err error) error {
		c.Kill()
		return fmt.Errorf("plugin %s: %w", m.name, err)
	}
	rpc, err := c.Client()
	if err != nil {
		return fail(err)
	}
	raw, err := rpc.Dispense(m.kind.Service)
	if err != nil {
		return fail(err)
	}
	svc, ok := raw.(Common)
	if !ok {
		return fail(fmt.Errorf("does not serve the %s service", m.kind.Service))
	}
	ctx, cancel := context.WithTimeout(m.host.ctx, 30*time.Second)
	defer cancel()
	info, err := svc.Info(ctx)
	if err != nil {
		return fail(fmt.Errorf("info: %w", err))
	}
	if info.GetKind() != m.kind.Kind {
		return fail(fmt.Errorf("is a %s plugin, not %s", info.GetKind(), m.kind.Kind))
	}
	runDir := filepath.Join(m.host.opts.RunDir, m.name)
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return fail(err)
	}
	stateDir := ""
	if m.host.opts.StateDir != "" {
		stateDir = filepath.Join(m.host.opts.StateDir, m.name)
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return fail(fmt.Errorf("state directory: %w", err))
		}
	}
	if err := svc.Configure(ctx, &pluginv1.ConfigureRequest{Settings: m.settings, RunDir: runDir, PluginDir: m.host.opts.PluginDir,
		InstanceId: m.host.opts.InstanceID, StateDir: stateDir}); err != nil {
		return fail(fmt.Errorf("configure: %w", err))
	}
	fp, err := svc.Fingerprint(ctx)
	if err != nil {
		return fail(fmt.Errorf("fingerprint: %w", err))
	}
	g := &generation{client: c, svc: svc, pid: proc.pid, exited: proc.exited, started: time.Now()}
	m.mu.Lock()
	m.gen, m.info, m.fp = g, info, fp
	close(m.ready)
	m.mu.Unlock()
	return nil
}

// Restart back-off: a plugin that served for stableAfter is relaunched at
// once when it crashes, so that calls waiting for it resume within its
// start-up time; one that keeps crashing, or cannot be launched, waits
// minBackoff, then twice as long each time, up to maxBackoff.
const (
	stableAfter = 10 * time.Second
	minBackoff  = 250 * time.Millisecond
	maxBackoff  = 30 * time.Second
)

// keep follows the plugin's process and relaunches it after a crash, until
// the Host closes. A crash is noticed when the process exits (the exit is
// an event, not a poll); a process that stops answering is found by the
// health check every HealthInterval, and killed.
func (m *managed) keep(up bool) {
	backoff := minBackoff
	health := time.NewTicker(m.host.opts.HealthInterval)
	defer health.Stop()
	for {
		if up {
			m.mu.Lock()
			g := m.gen
			m.mu.Unlock()
			reason := ""
			for reason == "" {
				select {
				case <-m.host.ctx.Done():
					return
				case <-g.exited:
					reason = "plugin process exited"
				case <-health.C:
					reason = m.check(g)
				}
			}
			m.down(g, reason)
			up = false
			if time.Since(g.started) >= stableAfter {
				backoff = 0
			}
		}
		if backoff > 0 {
			select {
			case <-m.host.ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		if err := m.launch(); err != nil {
			m.host.opts.Logger.Error("plugin launch failed", "plugin", m.name, "error", err)
			backoff = min(max(backoff*2, minBackoff), maxBackoff)
			continue
		}
		backoff = minBackoff
		up = true
		m.host.opts.OnEvent("plugin-restarted", m.name, "")
	}
}

// check pings g and returns why it is to be replaced, or "" when it
// answered.
func (m *managed) check(g *generation) string {
	ctx, cancel := context.WithTimeout(m.host.ctx, 10*time.Second)
	fp, err := g.svc.Fingerprint(ctx)
	cancel()
	switch {
	case err == nil:
		m.mu.Lock()
		m.fp = fp
		m.mu.Unlock()
		return ""
	case m.host.ctx.Err() != nil || g.gone():
		return "" // closing, or the exit is reported by the caller's next wait
	}
	return "plugin stopped answering: " + err.Error()
}

// down takes g out of service: calls from now on wait for its successor,
// and calls it was serving are retried there (see call). It kills the
// process, if it still runs, and reports the crash.
func (m *managed) down(g *generation, reason string) {
	m.mu.Lock()
	if m.gen == g {
		m.gen = nil
		m.ready = make(chan struct{})
		m.restarts++
	}
	m.mu.Unlock()
	m.host.opts.Logger.Warn("plugin crashed; restarting", "plugin", m.name, "pid", g.pid, "reason", reason)
	m.host.opts.OnEvent("plugin-crashed", m.name, reason)
	g.client.Kill()
}

// current returns the live process, waiting up to CallWait for a
// restarting plugin.
func (m *managed) current(ctx context.Context) (*generation, error) {
	t := time.NewTimer(m.host.opts.CallWait)
	defer t.Stop()
	for {
		m.mu.Lock()
		ready, gen := m.ready, m.gen
		m.mu.Unlock()
		if gen != nil && !gen.gone() {
			return gen, nil
		}
		if gen != nil {
			// The process has exited and keep is about to take it out of
			// service; its successor's ready channel comes with that.
			select {
			case <-time.After(time.Millisecond):
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-t.C:
				return nil, &downError{msg: fmt.Sprintf("plugin %s: exited", m.name)}
			}
		}
		// ready is the channel of the process to come; when a crash
		// replaces it while we wait (the one we saw was the crashed
		// process's), wait for the new one within the same bound.
		select {
		case <-ready:
			continue
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		case <-m.exited:
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.gen != nil {
			return m.gen, nil
		}
		msg := "not running"
		if m.lastErr != nil {
			msg = m.lastErr.Error()
		}
		return nil, &downError{msg: fmt.Sprintf("plugin %s: %s", m.name, msg)}
	}
}

// downError is a call that found no plugin process to serve it within
// CallWait. It is both hypervisor.ErrUnavailable (the backend cannot run
// VMs now) and hypervisor.ErrUnreachable (the plugin is not there, which a
// later attempt may find changed).
type downError struct{ msg string }

func (e *downError) Error() string { return hypervisor.ErrUnavailable.Error() + ": " + e.msg }

// Is makes downError match both classes it belongs to.
func (e *downError) Is(target error) bool {
	return target == hypervisor.ErrUnavailable || target == hypervisor.ErrUnreachable
}
