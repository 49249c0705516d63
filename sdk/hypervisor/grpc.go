package hypervisor

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/sdk/internal/pluginglue"
	"github.com/petrel-vmm/petrel/sdk/internal/rpcerr"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// GRPCPlugin is the go-plugin glue for the hypervisor service.
type GRPCPlugin = pluginglue.Plugin[Hypervisor]

// NewGRPCPlugin returns the glue serving impl (nil on petreld's side,
// where only the client is used).
func NewGRPCPlugin(impl Hypervisor) *GRPCPlugin {
	return &GRPCPlugin{Impl: impl, Service: "hypervisor", NewClient: NewClient,
		Register: func(s *grpc.Server, impl Hypervisor) { pluginv1.RegisterHypervisorServer(s, &server{impl: impl}) }}
}

// classes carry the hypervisor error classes across gRPC.
var classes = rpcerr.Classes{
	{Err: ErrInvalid, Code: codes.InvalidArgument},
	{Err: ErrUnknownVM, Code: codes.NotFound},
	{Err: ErrUnavailable, Code: codes.FailedPrecondition},
}

func toStatus(err error) error   { return classes.ToStatus(err) }
func fromStatus(err error) error { return classes.FromStatus(err, "hypervisor plugin") }

// NewClient returns a Hypervisor that calls a plugin over conn.
func NewClient(conn grpc.ClientConnInterface) Hypervisor {
	return &client{c: pluginv1.NewHypervisorClient(conn)}
}

// server serves the hypervisor plugin API over gRPC by calling impl. It
// embeds UnsafeHypervisorServer rather than UnimplementedHypervisorServer so
// that an RPC added to the plugin API and not forwarded to impl fails to
// compile instead of answering "unimplemented" from every plugin.
type server struct {
	pluginv1.UnsafeHypervisorServer
	impl Hypervisor
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

// Capabilities adds to the backend's own that this server serves
// FollowConsoles, as it does for every backend.
func (s *server) Capabilities(ctx context.Context, _ *pluginv1.CapabilitiesRequest) (*pluginv1.HypervisorCapabilities, error) {
	r, err := s.impl.Capabilities(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if r == nil {
		r = &pluginv1.HypervisorCapabilities{}
	} else {
		r = proto.CloneOf(r)
	}
	r.FollowsConsoles = true
	return r, nil
}

func (s *server) Validate(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.ValidateResponse, error) {
	r, err := s.impl.Validate(ctx, spec)
	return r, toStatus(err)
}

func (s *server) Start(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.Handle, error) {
	r, err := s.impl.Start(ctx, spec)
	return r, toStatus(err)
}

func (s *server) Recover(ctx context.Context, h *pluginv1.Handle) (*pluginv1.RecoverResponse, error) {
	r, err := s.impl.Recover(ctx, h)
	return r, toStatus(err)
}

func (s *server) Wait(ctx context.Context, ref *pluginv1.VMRef) (*pluginv1.ExitStatus, error) {
	r, err := s.impl.Wait(ctx, ref.GetId())
	return r, toStatus(err)
}

func (s *server) Stop(ctx context.Context, req *pluginv1.StopRequest) (*pluginv1.StopResponse, error) {
	err := s.impl.Stop(ctx, req.GetId(), time.Duration(req.GetTimeoutMs())*time.Millisecond)
	return &pluginv1.StopResponse{}, toStatus(err)
}

func (s *server) Destroy(ctx context.Context, ref *pluginv1.VMRef) (*pluginv1.DestroyResponse, error) {
	return &pluginv1.DestroyResponse{}, toStatus(s.impl.Destroy(ctx, ref.GetId()))
}

func (s *server) Stats(ctx context.Context, ref *pluginv1.VMRef) (*pluginv1.VMStats, error) {
	r, err := s.impl.Stats(ctx, ref.GetId())
	return r, toStatus(err)
}

func (s *server) StatsBatch(ctx context.Context, req *pluginv1.StatsBatchRequest) (*pluginv1.StatsBatchResponse, error) {
	r, err := StatsBatch(ctx, s.impl, req.GetIds())
	return &pluginv1.StatsBatchResponse{Stats: r}, toStatus(err)
}

// FollowConsoles follows the consoles the stream asks for, reading the
// shims of a ShimDirs backend in one loop and calling Console for each
// VM of any other.
func (s *server) FollowConsoles(stream pluginv1.Hypervisor_FollowConsolesServer) error {
	return toStatus(FollowConsoles(stream.Context(), s.impl, stream.Recv, stream.Send))
}

func (s *server) Console(req *pluginv1.ConsoleRequest, stream pluginv1.Hypervisor_ConsoleServer) error {
	return toStatus(s.impl.Console(stream.Context(), req, stream.Send))
}

type client struct {
	c pluginv1.HypervisorClient
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

func (c *client) Capabilities(ctx context.Context) (*pluginv1.HypervisorCapabilities, error) {
	r, err := c.c.Capabilities(ctx, &pluginv1.CapabilitiesRequest{})
	return r, fromStatus(err)
}

func (c *client) Validate(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.ValidateResponse, error) {
	r, err := c.c.Validate(ctx, spec)
	return r, fromStatus(err)
}

func (c *client) Start(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.Handle, error) {
	r, err := c.c.Start(ctx, spec)
	return r, fromStatus(err)
}

func (c *client) Recover(ctx context.Context, h *pluginv1.Handle) (*pluginv1.RecoverResponse, error) {
	r, err := c.c.Recover(ctx, h)
	return r, fromStatus(err)
}

func (c *client) Wait(ctx context.Context, id string) (*pluginv1.ExitStatus, error) {
	r, err := c.c.Wait(ctx, &pluginv1.VMRef{Id: id})
	return r, fromStatus(err)
}

func (c *client) Stop(ctx context.Context, id string, timeout time.Duration) error {
	_, err := c.c.Stop(ctx, &pluginv1.StopRequest{Id: id, TimeoutMs: uint32(timeout / time.Millisecond)})
	return fromStatus(err)
}

func (c *client) Destroy(ctx context.Context, id string) error {
	_, err := c.c.Destroy(ctx, &pluginv1.VMRef{Id: id})
	return fromStatus(err)
}

func (c *client) Stats(ctx context.Context, id string) (*pluginv1.VMStats, error) {
	r, err := c.c.Stats(ctx, &pluginv1.VMRef{Id: id})
	return r, fromStatus(err)
}

// fallbackParallel is how many Stats calls StatsBatch makes at a time
// into a plugin that predates StatsBatch.
const fallbackParallel = 16

// StatsBatch samples ids in one round trip; a plugin that predates the
// call is asked for each VM's Stats instead.
func (c *client) StatsBatch(ctx context.Context, ids []string) (map[string]*pluginv1.VMStats, error) {
	r, err := c.c.StatsBatch(ctx, &pluginv1.StatsBatchRequest{Ids: ids})
	if status.Code(err) == codes.Unimplemented {
		return statsEach(ctx, c, ids, fallbackParallel)
	}
	if err != nil {
		return nil, fromStatus(err)
	}
	return r.GetStats(), nil
}

// FollowConsoles opens a FollowConsoles stream; it lasts until ctx ends.
// A plugin that predates it fails the stream's first Recv with an error
// wrapping errors.ErrUnsupported.
func (c *client) FollowConsoles(ctx context.Context) (ConsoleStream, error) {
	s, err := c.c.FollowConsoles(ctx)
	if err != nil {
		return nil, followError(err)
	}
	return &clientConsoleStream{s: s}, nil
}

func (c *client) Console(ctx context.Context, req *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	stream, err := c.c.Console(ctx, req)
	if err != nil {
		return fromStatus(err)
	}
	for {
		line, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fromStatus(err)
		}
		if err := fn(line); err != nil {
			return err
		}
	}
}
