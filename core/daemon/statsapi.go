package daemon

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/internal/supervisor"
	"github.com/petrel-vmm/petrel/core/name"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// filterBatch keeps the VMs under path.
func filterBatch(b *pluginv1.Batch, under name.Path) *pluginv1.Batch {
	out := proto.Clone(b).(*pluginv1.Batch)
	if under.IsRoot() {
		return out
	}
	out.Vms = nil
	for _, vm := range b.GetVms() {
		if p, err := name.Parse(vm.GetName()); err == nil && under.IsPrefixOf(p) {
			out.Vms = append(out.Vms, vm)
		}
	}
	return out
}

// coversAll reports whether b has a sample of every VM of recs.
func coversAll(b *pluginv1.Batch, recs []supervisor.Record) bool {
	in := make(map[string]bool, len(b.GetVms()))
	for _, vm := range b.GetVms() {
		in[vm.GetName()] = true
	}
	for _, r := range recs {
		if !in[r.Name] {
			return false
		}
	}
	return true
}

// Stats sends the newest statistics of the VMs under the requested path,
// then, with follow, each new batch. A name or path that no VM has is
// NotFound, as it is for Info, rather than an empty batch that reads as
// a VM using nothing; a VM created since the last collection is sampled
// at once rather than missing from the answer.
func (s *server) Stats(req *daemonv1.StatsRequest, stream daemonv1.Daemon_StatsServer) error {
	under, err := name.Parse(req.GetPath())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	recs, err := s.d.sup.Info(under.String())
	if err != nil {
		return grpcError(err)
	}
	var follow <-chan *pluginv1.Batch
	if req.GetFollow() {
		ch, stop := s.d.stats.Follow()
		defer stop()
		follow = ch
	}
	latest := filterBatch(s.d.stats.Latest(stream.Context()), under)
	if !coversAll(latest, recs) {
		latest = filterBatch(s.d.stats.Collect(stream.Context()), under)
	}
	if err := stream.Send(latest); err != nil {
		return err
	}
	if follow == nil {
		return nil
	}
	for {
		select {
		case b := <-follow:
			if err := stream.Send(filterBatch(b, under)); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}
