package ui

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/petrel-vmm/petrel/core/policy"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// policyLister answers PolicyList with a fixed response.
type policyLister struct {
	daemonv1.DaemonClient
	res *daemonv1.PolicyListResponse
}

func (c policyLister) PolicyList(context.Context, *daemonv1.PolicyListRequest, ...grpc.CallOption) (*daemonv1.PolicyListResponse, error) {
	return c.res, nil
}

// TestPolicyViewAndFormCoverEveryField: the page's policy list carries
// every field of policy.Policy under its JSON key, and prints what it
// printed before (testdata/policies.json, written by the previous
// build); the policy form sets every field.
func TestPolicyViewAndFormCoverEveryField(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	full := &daemonv1.Policy{Vms: 3, Cpus: []int32{0, 2}, MemoryMb: 512, BlockMb: n(100), Bridges: []string{"br0", "br1"}, ImagesMb: n(64)}
	bare := &daemonv1.Policy{Vms: 1, MemoryMb: 64}
	zero := &daemonv1.Policy{BlockMb: n(0), ImagesMb: n(0)}
	res := &daemonv1.PolicyListResponse{Policies: []*daemonv1.PolicyEntry{
		{Path: "alice", Policy: full, UsedVms: 1, UsedMemoryMb: 32, UsedBlockMb: 10, UsedImagesMb: 5, Local: full, Certificate: full},
		{Path: "bob", Policy: bare, Certificate: bare},
		{Path: "zed", Policy: zero, Local: zero},
	}}
	views, err := listPolicies(context.Background(), policyLister{res: res})
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(views)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/policies.json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != strings.TrimSpace(string(want)) {
		t.Errorf("policy list\n%s\nwant\n%s", got, want)
	}

	// Every field, by its JSON key, with the value the daemon sent.
	var listed []map[string]json.RawMessage
	if err := json.Unmarshal(got, &listed); err != nil {
		t.Fatal(err)
	}
	fromDaemon, err := json.Marshal(policy.FromProto(full))
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(fromDaemon, &keys); err != nil {
		t.Fatal(err)
	}
	if len(keys) != reflect.TypeFor[policy.Policy]().NumField() {
		t.Fatalf("the full policy's JSON has %d keys for %d fields: %s", len(keys), reflect.TypeFor[policy.Policy]().NumField(), fromDaemon)
	}
	for key, v := range keys {
		if string(listed[0][key]) != string(v) {
			t.Errorf("the policy list shows %s as %s, want %s", key, listed[0][key], v)
		}
	}

	form := policyForm{Path: "team", VMs: 3, Memory: "512", CPUs: []int32{2, 0}, Block: "100M", Images: "64", Bridges: []string{"br1", "", "br0"}}
	p, err := form.policy()
	if err != nil {
		t.Fatal(err)
	}
	v := reflect.ValueOf(p)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("the policy form does not set Policy.%s", v.Type().Field(i).Name)
		}
	}
	if want := policy.FromProto(full); !p.Equal(want) {
		t.Errorf("the policy form gave %v, want %v", p, want)
	}
}
