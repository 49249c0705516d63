// Package sdktest helps plugin authors test their plugins the way petreld
// uses them: an in-process harness that puts the real go-plugin gRPC
// boundary between the test and the implementation, fake tenders, and
// conformance suites that every backend must pass.
package sdktest

import (
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
)

// ServeHypervisor serves impl over an in-process gRPC connection and
// returns the Hypervisor petreld would see. Everything is torn down when
// the test ends.
func ServeHypervisor(t testing.TB, impl hypervisor.Hypervisor) hypervisor.Hypervisor {
	t.Helper()
	return serve[hypervisor.Hypervisor](t, petrelplugin.HypervisorService, hypervisor.NewGRPCPlugin(impl))
}

// serve puts p behind an in-process go-plugin gRPC connection and returns
// the client side of service as a T.
func serve[T any](t testing.TB, service string, p plugin.Plugin) T {
	t.Helper()
	// Closing the client shuts the server down through go-plugin's
	// controller service; stopping the server as well would race with it.
	client, _ := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{service: p})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(service)
	if err != nil {
		t.Fatalf("dispense %s: %v", service, err)
	}
	v, ok := raw.(T)
	if !ok {
		t.Fatalf("dispensed %T, not a %s plugin", raw, service)
	}
	return v
}
