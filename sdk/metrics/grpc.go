package metrics

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/petrel-vmm/petrel/sdk/internal/pluginglue"
	"github.com/petrel-vmm/petrel/sdk/internal/rpcerr"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// GRPCPlugin is the go-plugin glue for the metrics service.
type GRPCPlugin = pluginglue.Plugin[Sink]

// NewGRPCPlugin returns the glue serving impl (nil on petreld's side,
// where only the client is used).
func NewGRPCPlugin(impl Sink) *GRPCPlugin {
	return &GRPCPlugin{Impl: impl, Service: "metrics", NewClient: NewClient,
		Register: func(s *grpc.Server, impl Sink) { pluginv1.RegisterMetricsSinkServer(s, &server{impl: impl}) }}
}

// classes carry the sink error classes across gRPC. A broken plugin
// connection arrives as Unavailable too, which is what petreld should make
// of it: the batch did not arrive, try again later.
var classes = rpcerr.Classes{
	{Err: ErrInvalid, Code: codes.InvalidArgument},
	{Err: ErrUnavailable, Code: codes.Unavailable},
	{Err: ErrNotConfigured, Code: codes.FailedPrecondition},
}

func toStatus(err error) error   { return classes.ToStatus(err) }
func fromStatus(err error) error { return classes.FromStatus(err, "metrics plugin") }

// NewClient returns a Sink that calls a plugin over conn.
func NewClient(conn grpc.ClientConnInterface) Sink {
	return &client{c: pluginv1.NewMetricsSinkClient(conn)}
}

// server serves the metrics sink plugin API over gRPC by calling impl. It
// embeds UnsafeMetricsSinkServer rather than UnimplementedMetricsSinkServer so
// that an RPC added to the plugin API and not forwarded to impl fails to
// compile instead of answering "unimplemented" from every plugin.
type server struct {
	pluginv1.UnsafeMetricsSinkServer
	impl Sink
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

func (s *server) Write(ctx context.Context, b *pluginv1.Batch) (*pluginv1.WriteResponse, error) {
	return &pluginv1.WriteResponse{}, toStatus(s.impl.Write(ctx, b))
}

func (s *server) Close(ctx context.Context, _ *pluginv1.CloseRequest) (*pluginv1.CloseResponse, error) {
	return &pluginv1.CloseResponse{}, toStatus(s.impl.Close(ctx))
}

type client struct {
	c pluginv1.MetricsSinkClient
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

func (c *client) Write(ctx context.Context, b *pluginv1.Batch) error {
	if b == nil {
		return fmt.Errorf("write: nil batch: %w", ErrInvalid)
	}
	_, err := c.c.Write(ctx, b)
	return fromStatus(err)
}

func (c *client) Close(ctx context.Context) error {
	_, err := c.c.Close(ctx, &pluginv1.CloseRequest{})
	return fromStatus(err)
}
