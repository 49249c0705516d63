package stats

import (
	"context"
	"testing"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// TestForget: a destroyed VM leaves the newest batch at once; batches
// already handed out are left as they were.
func TestForget(t *testing.T) {
	c := New(Options{Source: source{}, Backends: backends{}})
	c.Forget("web") // nothing collected yet
	old := &pluginv1.Batch{Vms: []*pluginv1.VMSample{{Name: "web"}, {Name: "db"}}}
	c.publish(old)
	c.Forget("team:web") // not in the batch
	c.Forget("web")
	got := c.Latest(context.Background())
	if len(got.GetVms()) != 1 || got.GetVms()[0].GetName() != "db" {
		t.Fatalf("newest batch after forgetting web: %v", got.GetVms())
	}
	if len(old.GetVms()) != 2 {
		t.Fatalf("a batch already handed out changed: %v", old.GetVms())
	}
}
