// Package daemon wires petreld together: configuration, state store,
// plugin host, supervisor and the daemon API on a unix socket whose file
// permissions are the access control.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"

	"github.com/petrel-vmm/petrel/core/config"
	"github.com/petrel-vmm/petrel/core/internal/block"
	"github.com/petrel-vmm/petrel/core/internal/events"
	"github.com/petrel-vmm/petrel/core/internal/pluginhost"
	"github.com/petrel-vmm/petrel/core/internal/stats"
	"github.com/petrel-vmm/petrel/core/internal/supervisor"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/sdk/fdpass"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/network"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/protocodec"
)

// Version is petreld's version, set at build time with -ldflags.
var Version = "0.1.0-dev"

// MaxImageBytes bounds one uploaded image, whatever room its domain has.
const MaxImageBytes = 1 << 30

// SocketName is the daemon socket's file name inside the run directory:
// the administrators' socket, on which a request without a certificate
// chain is the host owner's.
const SocketName = "petreld.sock"

// RemoteSocketName is the file name, inside the run directory, of the
// socket petrel-endpoint forwards remote requests to. petreld serves a
// request there only with a certificate chain it verifies itself, so
// whoever holds the endpoint (or its socket) can do no more than the
// callers whose chains it forwards.
const RemoteSocketName = "petreld-remote.sock"

// Daemon is a running petreld.
type Daemon struct {
	cfg     *config.Config
	log     hclog.Logger
	store   *store.Store
	blocks  *block.Manager
	network network.Network
	events  *events.Bus
	plugins *pluginhost.Host
	sup     *supervisor.Supervisor
	// policies bound what VMs and block devices under each path may take.
	policies *policy.Tree
	// policyMu serialises policy changes with their persistence.
	policyMu sync.Mutex
	// rootMu guards rootAt, when the root policy was last read off the host.
	rootMu sync.Mutex
	rootAt time.Time
	// supReady is closed once sup is set, for plugin event callbacks.
	supReady chan struct{}
	stats    *stats.Collector
	// stopStats ends the statistics loop and waits for it.
	stopStats func()
	// admin serves the administrators' socket, remote the endpoint's.
	admin  listener
	remote listener
	// files holds the files local clients pass for transfers (package
	// fdpass), served beside the administrators' socket; remoteFiles the
	// pipes petrel-endpoint passes for its callers' transfers, beside the
	// endpoint's socket. Both nil until listen.
	files, remoteFiles *fdpass.Registry
	// pluginDir is where plugin binaries are found.
	pluginDir string
	// releaseRunDir gives up the claim on the run directory.
	releaseRunDir func()
	// stopBridges ends the watch on the host's bridges; nil without one.
	stopBridges func()
	// updating holds the names of VMs being updated (update.go), so that
	// two updates of one VM never interleave.
	updating sync.Map

	// images accounts for image storage (images.go).
	images imageLedger

	// life ends when Close begins: work that outlives its caller's call
	// on purpose (an update's watch) stops with petreld instead.
	life    context.Context
	endLife context.CancelFunc
}

// PluginDir resolves where plugins live: the configured directory, else
// beside the running binary when plugins are there, else
// /usr/libexec/petrel.
func PluginDir(configured string) string {
	if configured != "" {
		return configured
	}
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		if m, _ := filepath.Glob(filepath.Join(dir, pluginhost.BinaryPrefix+"*")); len(m) > 0 {
			return dir
		}
	}
	return "/usr/libexec/petrel"
}

// listener is one socket petreld serves the daemon API on.
type listener struct {
	path string
	lis  net.Listener
	grpc *grpc.Server
}

// SocketPath is the daemon socket for a run directory.
func SocketPath(runDir string) string { return filepath.Join(runDir, SocketName) }

// RemoteSocketPath is the endpoint's socket for a run directory.
func RemoteSocketPath(runDir string) string { return filepath.Join(runDir, RemoteSocketName) }

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Start brings petreld up: it recovers VMs and then serves the API. The
// caller runs Serve and, to stop, Close.
func Start(ctx context.Context, cfg *config.Config, log hclog.Logger) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, events: events.New(), images: newImageLedger(), supReady: make(chan struct{})}
	d.life, d.endLife = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	if err := os.MkdirAll(cfg.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	vmsDir := filepath.Join(cfg.RunDir, "vms")
	if err := os.MkdirAll(vmsDir, 0o700); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	st, err := store.Open(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("state store: %w", err)
	}
	d.store = st
	// Before any plugin starts: reconciliation removes runtime directories
	// no record names, which must never be another instance's.
	if d.releaseRunDir, err = claimRunDir(cfg.RunDir, st.InstanceID(), cfg.DataDir); err != nil {
		return nil, err
	}
	if d.blocks, err = block.Open(filepath.Join(cfg.DataDir, store.BlockDir)); err != nil {
		return nil, err
	}
	if orphans, err := d.blocks.Orphans(); err == nil && len(orphans) > 0 {
		log.Warn("files in the block directory that are not block devices (left alone)", "files", orphans)
	}
	if err := d.loadPolicies(); err != nil {
		return nil, err
	}
	d.watchBridges()
	pluginDir := PluginDir(cfg.PluginDir)
	d.pluginDir = pluginDir
	d.plugins = pluginhost.New(pluginhost.Options{
		PluginDir: pluginDir, RunDir: vmsDir, StateDir: filepath.Join(cfg.DataDir, store.PluginsDir),
		Logger: log.Named("plugin"), InstanceID: st.InstanceID(),
		HealthInterval: cfg.Durations().PluginHealthInterval,
		OnEvent: func(typ, name, msg string) {
			d.events.Publish(events.Event{Type: typ, Name: name, Message: msg})
			if typ != events.PluginRestarted {
				return
			}
			select {
			case <-d.supReady:
			default:
				return
			}
			// A crash may have interrupted a create or destroy, leaving a
			// tap or a run that nothing records.
			if nb, ok := cfg.Network(); ok && name == nb.Name {
				go d.sup.ReconcileNets(context.Background())
			} else {
				go d.sup.RemoveOrphans(context.Background())
			}
		},
	})
	for _, b := range cfg.Backends {
		if !b.IsEnabled() {
			continue
		}
		if err := d.plugins.AddHypervisor(b.Name, b.Settings); err != nil {
			log.Error("backend not available; retrying in the background", "backend", b.Name, "error", err)
		}
	}
	var netw supervisor.Network
	if nb, ok := cfg.Network(); ok {
		if err := d.plugins.Add(pluginhost.NetworkKind, nb.Name, nb.Settings); err != nil {
			log.Error("network plugin not available; retrying in the background", "plugin", nb.Name, "error", err)
		}
		n, err := d.plugins.Network(nb.Name)
		if err != nil {
			return nil, err
		}
		d.network = n
		netw = netAdapter{n: n, instance: st.InstanceID()}
	}
	d.sup = supervisor.New(supervisor.Options{
		Store: st, Backends: d.plugins, Events: d.events, Logger: log.Named("supervisor"),
		DefaultBackend: cfg.DefaultBackend, ConsoleLines: cfg.ConsoleLines, ConsoleBytes: cfg.ConsoleBytes,
		StopTimeout: cfg.Durations().StopTimeout, BackoffMin: cfg.Durations().RestartBackoffMin,
		BackoffMax: cfg.Durations().RestartBackoffMax, ResetAfter: cfg.Durations().RestartResetAfter,
		Blocks: blockAdapter{d.blocks}, Network: netw, Policies: d.policies, BeforeAdmit: d.refreshRoot,
		BootID: bootID(), HostCPUs: runtime.NumCPU(), HostMemoryMB: hostMemoryMB(),
		RunIDs: func(backend string) []string {
			entries, _ := os.ReadDir(filepath.Join(vmsDir, backend))
			var ids []string
			for _, e := range entries {
				if e.IsDir() {
					ids = append(ids, e.Name())
				}
			}
			return ids
		},
		RemoveRun: func(ctx context.Context, backend, runID string) error {
			return removeRun(ctx, vmsDir, backend, runID)
		},
	})
	close(d.supReady)
	reattached, started, err := d.sup.Recover(ctx)
	if err != nil {
		return nil, err
	}
	log.Info("recovered VMs", "reattached", reattached, "started", started)
	if err := d.startStats(); err != nil {
		return nil, err
	}
	d.collectImages()
	if err := d.listen(); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// listen opens both sockets, refusing to steal one a live daemon
// answers on: the administrators' socket (socket_mode), where requests
// without a chain are the host owner's, and the endpoint's
// (remote_socket_mode and remote_socket_group), where every request must
// carry a chain petreld verifies.
func (d *Daemon) listen() error {
	perm, err := d.cfg.SocketPerm()
	if err != nil {
		return err
	}
	remotePerm, err := d.cfg.RemoteSocketPerm()
	if err != nil {
		return err
	}
	gid, err := lookupGroup(d.cfg.RemoteSocketGroup)
	if err != nil {
		return err
	}
	admin, remote, err := d.authInterceptors()
	if err != nil {
		return err
	}
	// The files socket goes with the administrators' socket, with its
	// permissions: only its callers pass petreld their files.
	filesPath := fdpass.FilesSocket(SocketPath(d.cfg.RunDir))
	filesLis, err := listenUnix(filesPath, perm, -1)
	if err != nil {
		return err
	}
	d.files = fdpass.NewRegistry(filesLis)
	remoteFilesLis, err := listenUnix(fdpass.FilesSocket(RemoteSocketPath(d.cfg.RunDir)), remotePerm, gid)
	if err != nil {
		return err
	}
	d.remoteFiles = fdpass.NewRegistry(remoteFilesLis)
	if d.admin, err = d.open(SocketPath(d.cfg.RunDir), perm, -1, admin, &server{d: d, files: d.files}); err != nil {
		return err
	}
	if d.remote, err = d.open(RemoteSocketPath(d.cfg.RunDir), remotePerm, gid, remote, &server{d: d, files: d.remoteFiles, pipes: true}); err != nil {
		return err
	}
	return nil
}

// open listens on the unix socket path with permission bits perm and,
// when gid is not -1, that group, and prepares a gRPC server for it
// that serves api with the interceptors in.
func (d *Daemon) open(path string, perm os.FileMode, gid int, in interceptors, api *server) (listener, error) {
	lis, err := listenUnix(path, perm, gid)
	if err != nil {
		return listener{}, err
	}
	// Large flow-control windows: image and block transfers stream
	// megabytes over a local socket, where the default 64 KiB window
	// stalls the sender. protocodec's codec and buffer pool decode each
	// chunk from the frames it came in, with one copy instead of two
	// and no buffer cleared first.
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(8<<20), grpc.InitialWindowSize(8<<20), grpc.InitialConnWindowSize(16<<20),
		grpc.ForceServerCodecV2(protocodec.Codec{}), experimental.BufferPool(protocodec.Pool),
		grpc.ChainUnaryInterceptor(in.unary), grpc.ChainStreamInterceptor(in.stream))
	daemonv1.RegisterDaemonServer(srv, api)
	return listener{path: path, lis: lis, grpc: srv}, nil
}

// listenUnix listens on the unix socket path with permission bits perm
// and, when gid is not -1, that group, refusing to steal a socket a live
// daemon answers on.
func listenUnix(path string, perm os.FileMode, gid int) (*net.UnixListener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another petreld is serving %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	// The socket is made with no more than perm and only then given its
	// group, so that no one outside both can connect in between.
	old := unix.Umask(0o777 &^ int(perm))
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			lis.Close()
			return nil, fmt.Errorf("give %s the group %d: %w", path, gid, err)
		}
	}
	if err := os.Chmod(path, perm); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return lis, nil
}

// lookupGroup resolves remote_socket_group, a group name or numeric
// gid; empty means petreld's own group (-1: leave it as created).
func lookupGroup(s string) (int, error) {
	if s == "" {
		return -1, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		if _, numErr := strconv.Atoi(s); numErr != nil {
			return 0, fmt.Errorf("remote_socket_group %q: %w", s, err)
		}
		if g, err = user.LookupGroupId(s); err != nil {
			return 0, fmt.Errorf("remote_socket_group %q: %w", s, err)
		}
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("remote_socket_group %q: gid %q: %w", s, g.Gid, err)
	}
	return gid, nil
}

// Socket is the path of the administrators' socket.
func (d *Daemon) Socket() string { return d.admin.path }

// RemoteSocket is the path of the endpoint's socket.
func (d *Daemon) RemoteSocket() string { return d.remote.path }

// Serve answers API requests on both sockets until Close.
func (d *Daemon) Serve() error {
	d.log.Info("petreld ready", "socket", d.admin.path, "remote_socket", d.remote.path, "version", Version)
	errs := make(chan error, 2)
	for _, l := range []listener{d.admin, d.remote} {
		go func() {
			if err := l.grpc.Serve(l.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errs <- fmt.Errorf("serve %s: %w", l.path, err)
				return
			}
			errs <- nil
		}()
	}
	// The first failure ends Serve (the caller then closes the daemon);
	// a Close ends both without one.
	for range 2 {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// Close stops serving and stops the plugins. VMs keep running: their
// shims are independent, and the next petreld reattaches to them.
func (d *Daemon) Close() {
	d.endLife()
	for _, l := range []listener{d.admin, d.remote} {
		l.close()
	}
	for _, r := range []*fdpass.Registry{d.files, d.remoteFiles} {
		if r != nil {
			r.Close()
		}
	}
	if d.stopStats != nil {
		d.stopStats()
	}
	if d.stopBridges != nil {
		d.stopBridges()
	}
	if d.sup != nil {
		d.sup.Close()
	}
	if d.plugins != nil {
		d.plugins.Close()
	}
	if d.releaseRunDir != nil {
		d.releaseRunDir()
	}
	if d.store != nil {
		d.store.Close()
	}
}

// close stops serving on l, letting calls in flight finish for a few
// seconds, and removes its socket.
func (l listener) close() {
	if l.grpc != nil {
		stopped := make(chan struct{})
		go func() { l.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			l.grpc.Stop()
		}
	}
	if l.lis != nil {
		// Already closed when it was served; not when a later step of
		// start-up failed before serving.
		l.lis.Close()
	}
	if l.path != "" {
		os.Remove(l.path)
	}
}

// startStats starts the statistics loop and the metrics sinks.
func (d *Daemon) startStats() error {
	opts := stats.Options{
		Source: d.sup, Backends: d.plugins, Interval: d.cfg.Durations().StatsInterval, Logger: d.log.Named("stats"), Version: Version,
		Daemon: func(ds *pluginv1.DaemonSample) {
			ds.PluginRestarts = map[string]uint32{}
			for _, p := range d.plugins.Status() {
				ds.PluginRestarts[p.Name] = uint32(p.Restarts)
			}
		},
	}
	if d.network != nil {
		opts.Interfaces = d.network
	}
	d.stats = stats.New(opts)
	for _, m := range d.cfg.Metrics {
		if !m.IsEnabled() {
			continue
		}
		if err := d.plugins.Add(pluginhost.MetricsKind, m.Name, m.Settings); err != nil {
			d.log.Error("metrics plugin not available; retrying in the background", "plugin", m.Name, "error", err)
		}
		sink, err := d.plugins.Sink(m.Name)
		if err != nil {
			return err
		}
		d.stats.AddSink(m.Name, sink)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.stats.Run(ctx)
	}()
	d.stopStats = func() {
		cancel()
		<-done
	}
	return nil
}

// blockAdapter gives the supervisor block devices.
type blockAdapter struct{ m *block.Manager }

func (b blockAdapter) Acquire(dev, vm string) (string, int64, error) {
	d, err := b.m.Acquire(dev, vm)
	return d.Path, d.SizeMB, err
}

func (b blockAdapter) Release(dev, vm string) { b.m.Release(dev, vm) }

// removeRun kills what still runs of run runID of backend, through the
// shim in its runtime directory, and removes the directory, without the
// backend's plugin: the backend of an unsupervised VM is not enabled.
func removeRun(ctx context.Context, vmsDir, backend, runID string) error {
	if runID == "" {
		return nil
	}
	if backend == "" || backend == "." || backend == ".." || strings.ContainsRune(backend, filepath.Separator) {
		return fmt.Errorf("backend name %q is not a directory name", backend)
	}
	dir, err := hypervisor.RunDir(filepath.Join(vmsDir, backend), runID)
	if err != nil {
		return err
	}
	return hypervisor.RemoveShimVM(ctx, dir)
}
