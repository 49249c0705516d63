package supervisor

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/internal/events"
	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// printingHV is fakeHV whose VMs print one line, "hello", and run on.
type printingHV struct {
	*fakeHV
}

func (printingHV) Console(ctx context.Context, r *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	if err := fn(&pluginv1.ConsoleLine{TimeNs: time.Now().UnixNano(), Text: "hello"}); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

// countingHV is petreld's side of a plugin connection that counts the
// console streams opened on it, and says it follows consoles together
// only when follows is set.
type countingHV struct {
	hypervisor.Hypervisor
	follows  bool
	consoles atomic.Int32 // Console calls
	streams  atomic.Int32 // FollowConsoles calls
}

func (c *countingHV) Capabilities(ctx context.Context) (*pluginv1.HypervisorCapabilities, error) {
	caps, err := c.Hypervisor.Capabilities(ctx)
	if err != nil {
		return nil, err
	}
	caps = proto.CloneOf(caps)
	caps.FollowsConsoles = caps.FollowsConsoles && c.follows
	return caps, nil
}

func (c *countingHV) Console(ctx context.Context, r *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	c.consoles.Add(1)
	return c.Hypervisor.Console(ctx, r, fn)
}

func (c *countingHV) FollowConsoles(ctx context.Context) (hypervisor.ConsoleStream, error) {
	c.streams.Add(1)
	return c.Hypervisor.(hypervisor.ConsoleFollower).FollowConsoles(ctx)
}

// TestConsolesFollowedTogether runs three VMs on a plugin that follows
// consoles together, and on one that does not say so (as a plugin that
// predates it): each VM's console reaches its ring, over one stream for
// the first, over a Console stream per VM for the second.
func TestConsolesFollowedTogether(t *testing.T) {
	for _, follows := range []bool{true, false} {
		hv := &countingHV{Hypervisor: sdktest.ServeHypervisor(t, printingHV{newFake()}), follows: follows}
		st, err := store.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		sup := New(Options{Store: st, Backends: backends{hv: hv}, Events: events.New(), DefaultBackend: "fake",
			ConsoleLines: 100, ConsoleBytes: 1 << 16, StopTimeout: time.Second, BackoffMin: 10 * time.Millisecond,
			BackoffMax: 40 * time.Millisecond, ResetAfter: time.Minute, BootID: "boot-1", HostCPUs: 2})
		sha, _, err := st.PutImage(bytes.NewReader([]byte("image")), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		names := []string{"a", "b", "c"}
		for _, n := range names {
			if _, err := sup.Create(context.Background(), CreateParams{Name: n, ImageSHA256: sha, MemoryMB: 16}); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range names {
			eventually(t, "hello in "+n+"'s ring", func() bool {
				r, err := sup.Console(n)
				if err != nil {
					return false
				}
				lines, _ := r.History(time.Time{}, 0)
				return len(lines) == 1 && lines[0].Text == "hello"
			})
		}
		sup.Close()
		st.Close()
		if follows && (hv.streams.Load() != 1 || hv.consoles.Load() != 0) {
			t.Errorf("plugin that follows consoles: %d streams, %d Console calls; want 1 and 0", hv.streams.Load(), hv.consoles.Load())
		}
		if !follows && (hv.streams.Load() != 0 || hv.consoles.Load() != 3) {
			t.Errorf("plugin that does not: %d streams, %d Console calls; want 0 and 3", hv.streams.Load(), hv.consoles.Load())
		}
	}
}
