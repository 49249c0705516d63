package client

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// pluginsDaemon answers Plugins and PluginHealth with what it is given.
type pluginsDaemon struct {
	daemonv1.DaemonClient
	full       []*daemonv1.Plugin
	fullErr    error
	summary    []*daemonv1.PluginHealthEntry
	summaryErr error
	// summaryCalls counts PluginHealth calls.
	summaryCalls int
}

func (d *pluginsDaemon) Plugins(context.Context, *daemonv1.PluginsRequest, ...grpc.CallOption) (*daemonv1.PluginsResponse, error) {
	if d.fullErr != nil {
		return nil, d.fullErr
	}
	return &daemonv1.PluginsResponse{Plugins: d.full}, nil
}

func (d *pluginsDaemon) PluginHealth(context.Context, *daemonv1.PluginHealthRequest, ...grpc.CallOption) (*daemonv1.PluginHealthResponse, error) {
	d.summaryCalls++
	if d.summaryErr != nil {
		return nil, d.summaryErr
	}
	return &daemonv1.PluginHealthResponse{Plugins: d.summary}, nil
}

// TestListPlugins: the owner gets the full list without the summary being
// asked; a caller refused the full list gets the summary, marked as one;
// a petreld without the summary leaves the refusal as the answer; other
// failures are not papered over.
func TestListPlugins(t *testing.T) {
	ctx := context.Background()
	denied := status.Error(codes.PermissionDenied, "Plugins is the host owner's")
	summary := []*daemonv1.PluginHealthEntry{{Name: "hvt", Kind: "hypervisor", Health: "healthy", Targets: []string{"hvt"}}, {Name: "influx", Kind: "metrics", Health: "down"}}

	owner := &pluginsDaemon{full: []*daemonv1.Plugin{{Name: "hvt", Version: "1.0", Path: "/p/hvt"}}, summary: summary}
	l, err := ListPlugins(ctx, owner)
	if err != nil || l.Summary || len(l.Plugins) != 1 || l.Plugins[0].GetPath() != "/p/hvt" || owner.summaryCalls != 0 {
		t.Fatalf("owner: %+v, %v (%d summary calls)", l, err, owner.summaryCalls)
	}

	l, err = ListPlugins(ctx, &pluginsDaemon{fullErr: denied, summary: summary})
	if err != nil || !l.Summary || len(l.Plugins) != 2 {
		t.Fatalf("delegate: %+v, %v", l, err)
	}
	if p := l.Plugins[0]; p.GetName() != "hvt" || p.GetKind() != "hypervisor" || p.GetHealth() != "healthy" || len(p.GetTargets()) != 1 || p.GetTargets()[0] != "hvt" {
		t.Errorf("delegate's first plugin: %+v", p)
	}
	if p := l.Plugins[1]; p.GetName() != "influx" || p.GetKind() != "metrics" || p.GetHealth() != "down" {
		t.Errorf("delegate's second plugin: %+v", p)
	}

	_, err = ListPlugins(ctx, &pluginsDaemon{fullErr: denied, summaryErr: status.Error(codes.Unimplemented, "unknown method PluginHealth")})
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "Plugins is the host owner's" {
		t.Errorf("petreld without PluginHealth: %v, want the refusal", err)
	}
	_, err = ListPlugins(ctx, &pluginsDaemon{fullErr: denied, summaryErr: status.Error(codes.Unavailable, "connection reset")})
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "plugin health summary: connection reset" {
		t.Errorf("summary failing: %v", err)
	}
	_, err = ListPlugins(ctx, &pluginsDaemon{fullErr: status.Error(codes.Unavailable, "no daemon"), summary: summary})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("full list failing otherwise: %v, want its error", err)
	}
}
