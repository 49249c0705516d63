// Package hypervisor defines the Go side of the hypervisor plugin service:
// the interface a backend implements, and the go-plugin adapters that carry
// it over gRPC between petreld and a plugin process.
//
// Backend authors implement Hypervisor and pass it to plugin.ServeHypervisor;
// petreld receives a Hypervisor that forwards every call over gRPC, so both
// sides program against the same interface.
package hypervisor

import (
	"context"
	"errors"
	"time"

	"github.com/petrel-vmm/petrel/sdk/internal/rpcerr"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Hypervisor runs virtual machines of one kind. Implementations must be safe
// for concurrent use: petreld calls it for different VMs at the same time.
// A backend keeps no state that cannot be rebuilt from a Handle, so that a
// crashed or upgraded plugin loses nothing.
type Hypervisor interface {
	// Info identifies the plugin.
	Info(ctx context.Context) (*pluginv1.PluginInfo, error)
	// Configure applies settings from petreld's configuration. It is called
	// once after the plugin starts, before any other call but Info.
	Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error
	// Fingerprint reports whether the backend can run VMs on this host.
	Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error)
	// Capabilities describes what the backend supports. The answer must
	// not change while the plugin's process lives (it may once
	// configured): petreld asks each process once and keeps the answer.
	Capabilities(ctx context.Context) (*pluginv1.HypervisorCapabilities, error)
	// Validate checks a spec without starting anything.
	Validate(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.ValidateResponse, error)
	// Start launches a VM and returns once its guest runs. It must be
	// idempotent by spec.Id: petreld repeats a Start that a crash of the
	// plugin cut short, and the repeated call must find the run the first
	// one began (running or already over) and return its handle, rather
	// than start a second guest.
	Start(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.Handle, error)
	// Recover reattaches to a VM from a handle returned by an earlier Start.
	Recover(ctx context.Context, h *pluginv1.Handle) (*pluginv1.RecoverResponse, error)
	// Wait blocks until the VM exits or ctx ends.
	Wait(ctx context.Context, id string) (*pluginv1.ExitStatus, error)
	// Stop asks the VM to stop and kills it once timeout has passed.
	Stop(ctx context.Context, id string, timeout time.Duration) error
	// Destroy kills the VM if it runs and removes its runtime files.
	Destroy(ctx context.Context, id string) error
	// Stats samples a running VM's resource usage.
	Stats(ctx context.Context, id string) (*pluginv1.VMStats, error)
	// Console calls fn for each selected console line, in order, until the
	// history is sent (or, with follow, until the VM exits or ctx ends).
	Console(ctx context.Context, req *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error
}

// Error classes a backend returns so that petreld (and the CLI behind it)
// can tell a user's mistake from a host problem. They survive the gRPC
// boundary as status codes.
var (
	// ErrInvalid marks a spec that can never work (wrong image, bad device
	// names, absurd memory).
	ErrInvalid = errors.New("invalid VM specification")
	// ErrUnknownVM marks an id the backend has no VM for.
	ErrUnknownVM = errors.New("unknown VM")
	// ErrUnavailable marks a backend that cannot run VMs on this host (no
	// tender, no /dev/kvm).
	ErrUnavailable = errors.New("backend unavailable")
)

// ErrUnreachable marks a call that did not reach the plugin, or whose answer
// never came back, because the plugin's process exited, crashed or is being
// restarted. petreld retries only requests that are safe to repeat once a new
// plugin process serves; plugins never return it themselves.
var ErrUnreachable = rpcerr.ErrUnreachable
