package endpoint

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/authz"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// proxy relays every daemon API call, already authorized by the
// interceptors, to petreld with the caller's chain attached. It embeds
// UnsafeDaemonServer rather than UnimplementedDaemonServer so that a
// method of the daemon API it does not forward is a compile error here,
// not an "unimplemented" answer remote callers alone would see.
type proxy struct {
	daemonv1.UnsafeDaemonServer
	up daemonv1.DaemonClient
	// files is petreld's files socket beside its remote socket, where
	// transfers pass their pipes (piped.go); empty: none.
	files string
	// content holds the callers' content connections (content.go);
	// nil: none are taken.
	content *contentTable
}

// out is the context of the call to petreld: cancelled with the
// caller's, carrying the caller's chain and nothing else the caller sent.
func out(ctx context.Context) (context.Context, error) {
	id := authz.IdentityFrom(ctx)
	if id == nil {
		return nil, status.Error(codes.Unauthenticated, "no verified client identity")
	}
	return authz.OutgoingContext(ctx, id), nil
}

// unary relays one request and its response.
func unary[Req, Resp any](ctx context.Context, req *Req, call func(context.Context, *Req, ...grpc.CallOption) (*Resp, error)) (*Resp, error) {
	octx, err := out(ctx)
	if err != nil {
		return nil, err
	}
	return call(octx, req)
}

// relayDown copies a server stream from petreld to the caller until it
// ends.
func relayDown[T any](upstream grpc.ServerStreamingClient[T], send func(*T) error) error {
	for {
		m, err := upstream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := send(m); err != nil {
			return err
		}
	}
}

// serverStream opens a server stream to petreld and relays it.
func serverStream[Req, T any](stream grpc.ServerStreamingServer[T], req *Req, open func(context.Context, *Req, ...grpc.CallOption) (grpc.ServerStreamingClient[T], error)) error {
	octx, err := out(stream.Context())
	if err != nil {
		return err
	}
	upstream, err := open(octx, req)
	if err != nil {
		return err
	}
	return relayDown(upstream, stream.Send)
}

func (p *proxy) Version(ctx context.Context, req *daemonv1.VersionRequest) (*daemonv1.VersionResponse, error) {
	return unary(ctx, req, p.up.Version)
}

func (p *proxy) Create(ctx context.Context, req *daemonv1.CreateRequest) (*daemonv1.VM, error) {
	return unary(ctx, req, p.up.Create)
}

func (p *proxy) PullImage(req *daemonv1.PullImageRequest, stream daemonv1.Daemon_PullImageServer) error {
	return serverStream(stream, req, p.up.PullImage)
}

func (p *proxy) Update(ctx context.Context, req *daemonv1.UpdateRequest) (*daemonv1.UpdateResponse, error) {
	return unary(ctx, req, p.up.Update)
}

func (p *proxy) CheckImage(ctx context.Context, req *daemonv1.CheckImageRequest) (*daemonv1.CheckImageResponse, error) {
	return unary(ctx, req, p.up.CheckImage)
}

func (p *proxy) Destroy(ctx context.Context, req *daemonv1.DestroyRequest) (*daemonv1.DestroyResponse, error) {
	return unary(ctx, req, p.up.Destroy)
}

func (p *proxy) Restart(ctx context.Context, req *daemonv1.RestartRequest) (*daemonv1.VM, error) {
	return unary(ctx, req, p.up.Restart)
}

func (p *proxy) Info(ctx context.Context, req *daemonv1.InfoRequest) (*daemonv1.InfoResponse, error) {
	return unary(ctx, req, p.up.Info)
}

func (p *proxy) Console(req *daemonv1.ConsoleRequest, stream daemonv1.Daemon_ConsoleServer) error {
	return serverStream(stream, req, p.up.Console)
}

func (p *proxy) Events(req *daemonv1.EventsRequest, stream daemonv1.Daemon_EventsServer) error {
	return serverStream(stream, req, p.up.Events)
}

func (p *proxy) Plugins(ctx context.Context, req *daemonv1.PluginsRequest) (*daemonv1.PluginsResponse, error) {
	return unary(ctx, req, p.up.Plugins)
}

func (p *proxy) PluginHealth(ctx context.Context, req *daemonv1.PluginHealthRequest) (*daemonv1.PluginHealthResponse, error) {
	return unary(ctx, req, p.up.PluginHealth)
}

func (p *proxy) Host(ctx context.Context, req *daemonv1.HostRequest) (*daemonv1.HostResponse, error) {
	return unary(ctx, req, p.up.Host)
}

func (p *proxy) BlockList(ctx context.Context, req *daemonv1.BlockListRequest) (*daemonv1.BlockListResponse, error) {
	return unary(ctx, req, p.up.BlockList)
}

func (p *proxy) BlockCreate(ctx context.Context, req *daemonv1.BlockCreateRequest) (*daemonv1.BlockInfo, error) {
	return unary(ctx, req, p.up.BlockCreate)
}

func (p *proxy) BlockDestroy(ctx context.Context, req *daemonv1.BlockDestroyRequest) (*daemonv1.BlockDestroyResponse, error) {
	return unary(ctx, req, p.up.BlockDestroy)
}

func (p *proxy) Bridges(ctx context.Context, req *daemonv1.BridgesRequest) (*daemonv1.BridgesResponse, error) {
	return unary(ctx, req, p.up.Bridges)
}

func (p *proxy) PolicyList(ctx context.Context, req *daemonv1.PolicyListRequest) (*daemonv1.PolicyListResponse, error) {
	return unary(ctx, req, p.up.PolicyList)
}

func (p *proxy) PolicyAdd(ctx context.Context, req *daemonv1.PolicyAddRequest) (*daemonv1.PolicyEntry, error) {
	return unary(ctx, req, p.up.PolicyAdd)
}

func (p *proxy) PolicyRemove(ctx context.Context, req *daemonv1.PolicyRemoveRequest) (*daemonv1.PolicyRemoveResponse, error) {
	return unary(ctx, req, p.up.PolicyRemove)
}

func (p *proxy) Stats(req *daemonv1.StatsRequest, stream daemonv1.Daemon_StatsServer) error {
	return serverStream(stream, req, p.up.Stats)
}
