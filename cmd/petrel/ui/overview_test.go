package ui

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// delegateDaemon is a petreld as a delegate sees it: Plugins is refused
// as the host owner's, PluginHealth answers with a summary; everything
// else is unimplemented.
type delegateDaemon struct {
	daemonv1.UnimplementedDaemonServer
	summary []*daemonv1.PluginHealthEntry
	// asked counts the calls of Plugins.
	asked atomic.Int32
}

func (d *delegateDaemon) Plugins(context.Context, *daemonv1.PluginsRequest) (*daemonv1.PluginsResponse, error) {
	d.asked.Add(1)
	return nil, status.Error(codes.PermissionDenied, `Plugins describes the host and is reserved to its owner; certificate domain "alice"`)
}

func (d *delegateDaemon) PluginHealth(context.Context, *daemonv1.PluginHealthRequest) (*daemonv1.PluginHealthResponse, error) {
	return &daemonv1.PluginHealthResponse{Plugins: d.summary}, nil
}

// TestOverviewPluginSummary: where petreld keeps its plugin list to the
// host's owner, the overview shows its health summary, marked as one,
// instead of the refusal; it does not ask for the full list again at its
// next poll.
func TestOverviewPluginSummary(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "petreld.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	daemon := &delegateDaemon{summary: []*daemonv1.PluginHealthEntry{
		{Name: "hvt", Kind: "hypervisor", Health: "healthy", Targets: []string{"hvt"}},
		{Name: "influx", Kind: "metrics", Health: "down"},
	}}
	daemonv1.RegisterDaemonServer(srv, daemon)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)

	s, base := startServerOn(t, sock)
	code, body := do(t, &http.Client{}, "GET", base+"/api/overview?host=local", "", map[string]string{TokenHeader: s.Token()})
	if code != http.StatusOK {
		t.Fatalf("overview: %d %s", code, body)
	}
	var o overview
	if err := json.Unmarshal([]byte(body), &o); err != nil {
		t.Fatalf("overview is not JSON: %v\n%s", err, body)
	}
	if msg, refused := o.Errors["plugins"]; refused {
		t.Errorf("plugins refused in the overview: %s", msg)
	}
	if !o.PluginsSummary || len(o.Plugins) != 2 {
		t.Fatalf("plugins %+v (summary %v), want the two of the summary", o.Plugins, o.PluginsSummary)
	}
	if p := o.Plugins[0]; p.Name != "hvt" || p.Kind != "hypervisor" || p.Health != "healthy" || p.Version != "" || len(p.Problems) != 0 {
		t.Errorf("first plugin %+v", p)
	}
	if p := o.Plugins[1]; p.Name != "influx" || p.Health != "down" {
		t.Errorf("second plugin %+v", p)
	}
	for range 2 {
		if code, body := do(t, &http.Client{}, "GET", base+"/api/overview?host=local", "", map[string]string{TokenHeader: s.Token()}); code != http.StatusOK {
			t.Fatalf("overview again: %d %s", code, body)
		}
	}
	if n := daemon.asked.Load(); n != 1 {
		t.Fatalf("three overviews asked for the refused plugin list %d times, want once", n)
	}
}
