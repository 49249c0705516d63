// Package sdktest helps plugin authors test their plugins the way petreld
// uses them: an in-process harness that puts the real go-plugin gRPC
// boundary between the test and the implementation, fake tenders, and
// conformance suites that every backend must pass.
package sdktest

import (
	"testing"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/plugin"
)

// ServeHypervisor serves impl over an in-process gRPC connection and
// returns the Hypervisor petreld would see. Everything is torn down when
// the test ends.
func ServeHypervisor(t testing.TB, impl hypervisor.Hypervisor) hypervisor.Hypervisor {
	t.Helper()
	client, server := goplugin.TestPluginGRPCConn(t, false, map[string]goplugin.Plugin{
		plugin.HypervisorService: &hypervisor.GRPCPlugin{Impl: impl},
	})
	// Closing the client shuts the server down through go-plugin's
	// controller service; stopping it here as well would race with that.
	_ = server
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(plugin.HypervisorService)
	if err != nil {
		t.Fatalf("dispense hypervisor: %v", err)
	}
	hv, ok := raw.(hypervisor.Hypervisor)
	if !ok {
		t.Fatalf("dispensed %T, not a hypervisor", raw)
	}
	return hv
}
