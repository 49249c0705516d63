// Package pluginglue is the go-plugin glue shared by every plugin
// service: it registers a service's implementation on the plugin's gRPC
// server and builds the client petreld calls it through, so that each
// service (hypervisor, network, metrics) only names its own pieces.
package pluginglue

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Plugin is the go-plugin glue for a service whose Go interface is T. On
// the plugin side Impl is the implementation; on petreld's side Impl is
// unused and GRPCClient returns a T that forwards over the connection.
type Plugin[T any] struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl is the implementation served by the plugin process.
	Impl T
	// Service names the service in messages, e.g. "hypervisor".
	Service string
	// Register registers impl on a gRPC server.
	Register func(s *grpc.Server, impl T)
	// NewClient returns a T that calls the service over conn.
	NewClient func(conn grpc.ClientConnInterface) T
}

// GRPCServer registers the implementation on the plugin's gRPC server.
func (p *Plugin[T]) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if any(p.Impl) == nil || p.Register == nil {
		return fmt.Errorf("%s plugin served without an implementation", p.Service)
	}
	p.Register(s, p.Impl)
	return nil
}

// GRPCClient returns a T backed by the plugin connection.
func (p *Plugin[T]) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	if p.NewClient == nil {
		return nil, fmt.Errorf("%s plugin glue has no client", p.Service)
	}
	return p.NewClient(c), nil
}
