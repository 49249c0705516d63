package petrelplugin

import (
	"testing"

	"github.com/petrel-vmm/petrel/sdk/network"
)

func TestNetworkPluginSets(t *testing.T) {
	sets := NetworkPluginSets(nil)
	for v := OldestProtocolVersion; v <= ProtocolVersion; v++ {
		if _, ok := sets[v][NetworkService].(*network.GRPCPlugin); !ok {
			t.Fatalf("protocol %d: %v lacks the network service", v, sets[v])
		}
	}
	if len(sets) != ProtocolVersion-OldestProtocolVersion+1 {
		t.Fatalf("sets for %d versions", len(sets))
	}
}
