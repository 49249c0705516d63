package daemon

import (
	"encoding/json"
	"testing"

	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"google.golang.org/protobuf/proto"
)

// TestPolicyRoundTrip: every field of a policy, the optional block and
// image allowances included (stated, zero or absent), survives the daemon
// API's message, the store's JSON and the certificate extension.
func TestPolicyRoundTrip(t *testing.T) {
	n := func(v int) *int { return &v }
	for _, p := range []policy.Policy{
		{VMs: 2, MemoryMB: 256, CPUs: []int{0, 1}, Bridges: []string{"br0"}},
		{VMs: 2, MemoryMB: 256, BlockMB: n(10), ImagesMB: n(64)},
		{VMs: 1, MemoryMB: 64, BlockMB: n(0), ImagesMB: n(0)},
		{VMs: policy.MaxVMs, MemoryMB: policy.MaxMemoryMB, ImagesMB: n(policy.MaxImagesMB)},
	} {
		wire, err := proto.Marshal(toPolicyMsg(p))
		if err != nil {
			t.Fatal(err)
		}
		var m daemonv1.Policy
		if err := proto.Unmarshal(wire, &m); err != nil {
			t.Fatal(err)
		}
		if got := fromPolicyMsg(&m); !got.Equal(p) {
			t.Errorf("through the API: %v, want %v", got, p)
		}
		b, err := json.Marshal(policy.Entry{Policy: p})
		if err != nil {
			t.Fatal(err)
		}
		var e policy.Entry
		if err := json.Unmarshal(b, &e); err != nil || !e.Policy.Equal(p) {
			t.Errorf("through JSON %s: %v %v, want %v", b, e.Policy, err, p)
		}
		der, err := pki.MarshalPolicy(p)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := pki.UnmarshalPolicy(der); err != nil || !got.Equal(p) {
			t.Errorf("through the certificate extension: %v %v, want %v", got, err, p)
		}
	}
}
