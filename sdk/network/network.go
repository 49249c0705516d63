// Package network defines the Go side of the network plugin service: the
// interface a network plugin implements, the go-plugin adapters that carry
// it over gRPC between petreld and a plugin process, and the naming rules
// (tap names, MAC addresses, interface tags) that petreld and every plugin
// share.
//
// Plugin authors implement Network and pass it to plugin.ServeNetwork;
// petreld receives a Network that forwards every call over gRPC, so both
// sides program against the same interface.
package network

import (
	"context"
	"errors"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Network gives VMs host interfaces on existing bridges. Implementations
// must be safe for concurrent use: petreld attaches interfaces for
// different VMs at the same time. A plugin keeps no state of its own: every
// interface it creates carries a Tag on the host, so a restarted or
// upgraded plugin can find (and Reconcile can remove) what an earlier
// instance made.
type Network interface {
	// Info identifies the plugin.
	Info(ctx context.Context) (*pluginv1.PluginInfo, error)
	// Configure applies settings from petreld's configuration. It is called
	// once after the plugin starts, before any other call but Info.
	Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error
	// Fingerprint reports whether the plugin can create interfaces on this
	// host.
	Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error)
	// Attach creates the host interface for one VM network device,
	// enslaved to the requested bridge, with the bridge's MTU, and up. An
	// empty req.HostIf means TapName(req.Vm, req.NetName); an empty req.Mac
	// means DeriveMAC(req.Vm, req.NetName). Attaching again with the same
	// VM and device returns the existing interface, so a retry after a
	// crash mid-create neither fails nor leaks.
	Attach(ctx context.Context, req *pluginv1.AttachRequest) (*pluginv1.AttachResponse, error)
	// Detach removes an interface created by Attach. A missing interface
	// is not an error; one the plugin did not create is refused with
	// ErrInvalid rather than removed.
	Detach(ctx context.Context, hostIf string) error
	// Reconcile removes every interface the plugin created whose name is
	// not in keep, and returns the names removed. petreld calls it at
	// start-up with the interfaces of its live VMs to clear the orphans of
	// crashes and failed creates, before attaching anything new: an
	// interface attached meanwhile and missing from keep is removed too.
	Reconcile(ctx context.Context, keep []string) ([]string, error)
	// Stats reads the counters of the named interfaces. Interfaces that do
	// not exist are left out of the result rather than failing the call,
	// so one vanished tap does not hide the others.
	Stats(ctx context.Context, hostIfs []string) ([]*pluginv1.InterfaceStats, error)
	// Bridges lists the host's bridges, sorted by name, so petreld can
	// check a requested bridge early and show the choices to users.
	Bridges(ctx context.Context) ([]*pluginv1.Bridge, error)
}

// Error classes a plugin returns so that petreld (and the CLI behind it)
// can tell a user's mistake from a host problem. They survive the gRPC
// boundary as status codes.
var (
	// ErrInvalid marks a request that can never work as given: a missing
	// bridge or one that is not a bridge, a bad interface name or MAC, or
	// an interface name already taken by something Petrel did not create.
	ErrInvalid = errors.New("invalid network request")
	// ErrUnavailable marks a plugin that cannot manage interfaces on this
	// host (no tun driver, no privilege to change links).
	ErrUnavailable = errors.New("network plugin unavailable")
)
