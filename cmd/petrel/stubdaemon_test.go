package main

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// stubDaemon is a petreld stand-in on a unix socket, for tests of what
// the CLI sends and how it shows the answers.
type stubDaemon struct {
	daemonv1.UnimplementedDaemonServer

	mu       sync.Mutex
	console  *daemonv1.ConsoleRequest
	lines    []*daemonv1.ConsoleLine
	vms      []*daemonv1.VM
	devices  []*daemonv1.BlockInfo
	orphans  []string
	bridges  []*daemonv1.HostBridge
	plugins  []*daemonv1.Plugin
	dataDir  string
	policies []*daemonv1.PolicyEntry
	// policyAdd is the last PolicyAdd request.
	policyAdd *daemonv1.PolicyAddRequest

	// pluginsDenied makes Plugins refuse, as petreld refuses anyone but
	// the host's owner; summary is then what PluginHealth answers, and
	// noSummary makes it answer as a petreld older than PluginHealth.
	pluginsDenied bool
	summary       []*daemonv1.PluginHealthEntry
	noSummary     bool
}

// startStub serves d on a socket in a temporary directory and
// returns the socket's path.
func startStub(t *testing.T, d *stubDaemon) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "petreld.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	daemonv1.RegisterDaemonServer(srv, d)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return sock
}

func (d *stubDaemon) Console(req *daemonv1.ConsoleRequest, stream daemonv1.Daemon_ConsoleServer) error {
	d.mu.Lock()
	d.console = req
	lines := d.lines
	d.mu.Unlock()
	for _, l := range lines {
		if err := stream.Send(l); err != nil {
			return err
		}
	}
	return nil
}

// lastConsole is the last console request the daemon received.
func (d *stubDaemon) lastConsole() *daemonv1.ConsoleRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.console
}

func (d *stubDaemon) Info(_ context.Context, req *daemonv1.InfoRequest) (*daemonv1.InfoResponse, error) {
	return &daemonv1.InfoResponse{Vms: d.vms}, nil
}

func (d *stubDaemon) BlockList(context.Context, *daemonv1.BlockListRequest) (*daemonv1.BlockListResponse, error) {
	return &daemonv1.BlockListResponse{Devices: d.devices, Orphans: d.orphans}, nil
}

func (d *stubDaemon) Bridges(context.Context, *daemonv1.BridgesRequest) (*daemonv1.BridgesResponse, error) {
	return &daemonv1.BridgesResponse{Bridges: d.bridges}, nil
}

func (d *stubDaemon) Plugins(context.Context, *daemonv1.PluginsRequest) (*daemonv1.PluginsResponse, error) {
	if d.pluginsDenied {
		return nil, status.Error(codes.PermissionDenied, `Plugins describes the host and is reserved to its owner; certificate domain "alice"`)
	}
	return &daemonv1.PluginsResponse{Plugins: d.plugins}, nil
}

func (d *stubDaemon) PluginHealth(ctx context.Context, req *daemonv1.PluginHealthRequest) (*daemonv1.PluginHealthResponse, error) {
	if d.noSummary {
		return d.UnimplementedDaemonServer.PluginHealth(ctx, req)
	}
	return &daemonv1.PluginHealthResponse{Plugins: d.summary}, nil
}

func (d *stubDaemon) Host(context.Context, *daemonv1.HostRequest) (*daemonv1.HostResponse, error) {
	return &daemonv1.HostResponse{DataDir: d.dataDir}, nil
}

func (d *stubDaemon) PolicyList(context.Context, *daemonv1.PolicyListRequest) (*daemonv1.PolicyListResponse, error) {
	return &daemonv1.PolicyListResponse{Policies: d.policies}, nil
}

func (d *stubDaemon) PolicyAdd(_ context.Context, req *daemonv1.PolicyAddRequest) (*daemonv1.PolicyEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policyAdd = req
	return &daemonv1.PolicyEntry{Path: req.GetPath(), Policy: req.GetPolicy()}, nil
}

// lastPolicyAdd is the last policy add request the daemon received.
func (d *stubDaemon) lastPolicyAdd() *daemonv1.PolicyAddRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.policyAdd
}
