package metrics

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// GRPCPlugin is the go-plugin glue for the metrics sink service. On the
// plugin side Impl is the sink; on petreld's side Impl is unused and
// GRPCClient returns a Sink that forwards over the connection.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl is the sink served by the plugin process.
	Impl Sink
}

// GRPCServer registers the sink on the plugin's gRPC server.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return errors.New("metrics plugin served without an implementation")
	}
	pluginv1.RegisterMetricsSinkServer(s, &server{impl: p.Impl})
	return nil
}

// GRPCClient returns a Sink backed by the plugin connection.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return NewClient(c), nil
}

// NewClient returns a Sink that calls a plugin over conn.
func NewClient(conn grpc.ClientConnInterface) Sink {
	return &client{c: pluginv1.NewMetricsSinkClient(conn)}
}

// classes pairs each error class with the status code that carries it.
var classes = []struct {
	class error
	code  codes.Code
}{
	{ErrInvalid, codes.InvalidArgument},
	{ErrUnavailable, codes.Unavailable},
	{ErrNotConfigured, codes.FailedPrecondition},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// toStatus maps a sink error to a gRPC status so its class survives.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	for _, c := range classes {
		if errors.Is(err, c.class) {
			return status.Error(c.code, err.Error())
		}
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unknown, err.Error())
}

// classError carries a remote message while matching a local error class.
type classError struct {
	msg   string
	class error
}

func (e *classError) Error() string { return e.msg }
func (e *classError) Unwrap() error { return e.class }

// fromStatus turns a gRPC status back into an error of the right class.
// A broken plugin connection arrives as Unavailable too, which is what
// petreld should make of it: the batch did not arrive, try again later.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, c := range classes {
		if st.Code() == c.code {
			return &classError{msg: st.Message(), class: c.class}
		}
	}
	if st.Code() == codes.Unknown {
		return errors.New(st.Message())
	}
	return fmt.Errorf("plugin: %s: %s", st.Code(), st.Message())
}

type server struct {
	pluginv1.UnimplementedMetricsSinkServer
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
