package network

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/petrel-vmm/petrel/sdk/internal/pluginglue"
	"github.com/petrel-vmm/petrel/sdk/internal/rpcerr"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// GRPCPlugin is the go-plugin glue for the network service.
type GRPCPlugin = pluginglue.Plugin[Network]

// NewGRPCPlugin returns the glue serving impl (nil on petreld's side,
// where only the client is used).
func NewGRPCPlugin(impl Network) *GRPCPlugin {
	return &GRPCPlugin{Impl: impl, Service: "network", NewClient: NewClient,
		Register: func(s *grpc.Server, impl Network) { pluginv1.RegisterNetworkServer(s, &server{impl: impl}) }}
}

// NewClient returns a Network that calls a plugin over conn.
func NewClient(conn grpc.ClientConnInterface) Network {
	return &client{c: pluginv1.NewNetworkClient(conn)}
}

// classes carries the network error classes across the gRPC boundary.
var classes = rpcerr.Classes{
	{Err: ErrInvalid, Code: codes.InvalidArgument},
	{Err: ErrUnavailable, Code: codes.FailedPrecondition},
}

// toStatus maps a plugin error to a gRPC status so its class survives.
func toStatus(err error) error { return classes.ToStatus(err) }

// fromStatus turns a gRPC status back into an error of the right class.
func fromStatus(err error) error { return classes.FromStatus(err, "network plugin") }

// server serves the network plugin API over gRPC by calling impl. It
// embeds UnsafeNetworkServer rather than UnimplementedNetworkServer so
// that an RPC added to the plugin API and not forwarded to impl fails to
// compile instead of answering "unimplemented" from every plugin.
type server struct {
	pluginv1.UnsafeNetworkServer
	impl Network
}

func (s *server) Info(ctx context.Context, _ *pluginv1.InfoRequest) (*pluginv1.PluginInfo, error) {
	r, err := s.impl.Info(ctx)
	return r, toStatus(err)
}

func (s *server) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) (*pluginv1.ConfigureResponse, error) {
	return &pluginv1.ConfigureResponse{}, toStatus(s.impl.Configure(ctx, req))
}

func (s *server) Fingerprint(ctx context.Context, _ *pluginv1.FingerprintRequest) (*pluginv1.FingerprintResponse, error) {
	r, err := s.impl.Fingerprint(ctx)
	return r, toStatus(err)
}

func (s *server) Attach(ctx context.Context, req *pluginv1.AttachRequest) (*pluginv1.AttachResponse, error) {
	r, err := s.impl.Attach(ctx, req)
	return r, toStatus(err)
}

func (s *server) Detach(ctx context.Context, req *pluginv1.DetachRequest) (*pluginv1.DetachResponse, error) {
	return &pluginv1.DetachResponse{}, toStatus(s.impl.Detach(ctx, req.GetHostIf()))
}

func (s *server) Reconcile(ctx context.Context, req *pluginv1.ReconcileRequest) (*pluginv1.ReconcileResponse, error) {
	removed, err := s.impl.Reconcile(ctx, req.GetKeep())
	return &pluginv1.ReconcileResponse{Removed: removed}, toStatus(err)
}

func (s *server) Stats(ctx context.Context, req *pluginv1.NetStatsRequest) (*pluginv1.NetStatsResponse, error) {
	st, err := s.impl.Stats(ctx, req.GetHostIfs())
	return &pluginv1.NetStatsResponse{Stats: st}, toStatus(err)
}

func (s *server) Bridges(ctx context.Context, _ *pluginv1.BridgesRequest) (*pluginv1.BridgesResponse, error) {
	b, err := s.impl.Bridges(ctx)
	return &pluginv1.BridgesResponse{Bridges: b}, toStatus(err)
}

type client struct {
	c pluginv1.NetworkClient
}

func (c *client) Info(ctx context.Context) (*pluginv1.PluginInfo, error) {
	r, err := c.c.Info(ctx, &pluginv1.InfoRequest{})
	return r, fromStatus(err)
}

func (c *client) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error {
	_, err := c.c.Configure(ctx, req)
	return fromStatus(err)
}

func (c *client) Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error) {
	r, err := c.c.Fingerprint(ctx, &pluginv1.FingerprintRequest{})
	return r, fromStatus(err)
}

func (c *client) Attach(ctx context.Context, req *pluginv1.AttachRequest) (*pluginv1.AttachResponse, error) {
	r, err := c.c.Attach(ctx, req)
	return r, fromStatus(err)
}

func (c *client) Detach(ctx context.Context, hostIf string) error {
	_, err := c.c.Detach(ctx, &pluginv1.DetachRequest{HostIf: hostIf})
	return fromStatus(err)
}

func (c *client) Reconcile(ctx context.Context, keep []string) ([]string, error) {
	r, err := c.c.Reconcile(ctx, &pluginv1.ReconcileRequest{Keep: keep})
	return r.GetRemoved(), fromStatus(err)
}

func (c *client) Stats(ctx context.Context, hostIfs []string) ([]*pluginv1.InterfaceStats, error) {
	r, err := c.c.Stats(ctx, &pluginv1.NetStatsRequest{HostIfs: hostIfs})
	return r.GetStats(), fromStatus(err)
}

func (c *client) Bridges(ctx context.Context) ([]*pluginv1.Bridge, error) {
	r, err := c.c.Bridges(ctx, &pluginv1.BridgesRequest{})
	return r.GetBridges(), fromStatus(err)
}
