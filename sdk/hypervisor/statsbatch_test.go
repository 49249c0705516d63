package hypervisor_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// statsOnly is a backend that only samples: VM "a" uses 1 s of user
// time, "b" 2 s; any other id is unknown.
type statsOnly struct {
	hypervisor.Hypervisor
}

func (statsOnly) Stats(_ context.Context, id string) (*pluginv1.VMStats, error) {
	switch id {
	case "a":
		return &pluginv1.VMStats{UtimeNs: 1e9}, nil
	case "b":
		return &pluginv1.VMStats{UtimeNs: 2e9}, nil
	}
	return nil, hypervisor.ErrUnknownVM
}

// checkBatch checks that got holds a and b with their figures and
// nothing else.
func checkBatch(t *testing.T, got map[string]*pluginv1.VMStats) {
	t.Helper()
	if len(got) != 2 || got["a"].GetUtimeNs() != 1e9 || got["b"].GetUtimeNs() != 2e9 {
		t.Fatalf("StatsBatch = %v, want a and b only", got)
	}
}

// TestStatsBatchOverGRPC samples three VMs, one unknown, in one call
// through the real plugin connection.
func TestStatsBatchOverGRPC(t *testing.T) {
	hv := sdktest.ServeHypervisor(t, statsOnly{})
	if _, ok := hv.(hypervisor.StatsBatcher); !ok {
		t.Fatalf("petreld's side of the connection (%T) does not batch", hv)
	}
	got, err := hypervisor.StatsBatch(context.Background(), hv, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, got)
}

// oldServer serves only Stats, as a plugin built before StatsBatch.
type oldServer struct {
	pluginv1.UnimplementedHypervisorServer
}

func (oldServer) Stats(ctx context.Context, ref *pluginv1.VMRef) (*pluginv1.VMStats, error) {
	return statsOnly{}.Stats(ctx, ref.GetId())
}

// oldPluginConn serves oldServer, a plugin that predates StatsBatch and
// FollowConsoles, over a unix socket, and returns a connection to it.
func oldPluginConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "old.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pluginv1.RegisterHypervisorServer(srv, oldServer{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() { srv.Stop(); <-done })
	conn, err := grpc.NewClient("unix://"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestStatsBatchFallsBackToStats asks a plugin that predates StatsBatch:
// the client samples each VM with Stats instead.
func TestStatsBatchFallsBackToStats(t *testing.T) {
	conn := oldPluginConn(t)
	got, err := hypervisor.StatsBatch(context.Background(), hypervisor.NewClient(conn), []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, got)
}

// TestStatsBatchWithoutBatcher samples through a backend that does not
// batch: one Stats call per VM.
func TestStatsBatchWithoutBatcher(t *testing.T) {
	got, err := hypervisor.StatsBatch(context.Background(), statsOnly{}, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, got)
}
