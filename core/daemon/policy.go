package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/policy"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// hostPolicy is the root policy: what the host has, with the block
// devices that already exist counted as available to them, and the image
// store's limit (image_store_mb) as its image allowance.
func (d *Daemon) hostPolicy() (policy.Policy, error) {
	p, err := policy.HostPolicy(d.cfg.DataDir)
	if err != nil {
		return policy.Policy{}, err
	}
	images := d.cfg.ImageStoreMB
	p.ImagesMB = &images
	if used, err := d.blocks.TotalMB(""); err == nil {
		b := p.Block() + int(used)
		p.BlockMB = &b
	}
	return p, nil
}

// loadPolicies builds the policy tree from the host and the store.
func (d *Daemon) loadPolicies() error {
	root, err := d.hostPolicy()
	if err != nil {
		return err
	}
	tree, err := policy.NewTree(root)
	if err != nil {
		return err
	}
	entries, err := d.readPolicies(policy.Collection)
	if err != nil {
		return err
	}
	if err := tree.Load(entries); err != nil {
		return err
	}
	if entries, err = d.readPolicies(policy.CertCollection); err != nil {
		return err
	}
	if err := tree.LoadCertificates(entries); err != nil {
		return err
	}
	for _, c := range tree.Conflicts() {
		d.log.Warn("policy no longer fits the host", "conflict", c)
	}
	d.policies = tree
	return nil
}

// readPolicies reads the policy records of a store collection.
func (d *Daemon) readPolicies(collection string) ([]policy.Entry, error) {
	var entries []policy.Entry
	err := d.store.Walk(collection, func(key string, raw json.RawMessage) error {
		var e policy.Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			// A record an earlier version accepted under a name that is
			// no longer valid (such as "." or "..") must not keep petreld
			// from starting; it governs nothing that can be created now.
			d.log.Warn("policy record skipped", "collection", collection, "key", key, "error", err)
			return nil
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", collection, err)
	}
	return entries, nil
}

// watchBridges makes the root policy follow the host's bridges as they
// come and go (policy.WatchBridges), so that a policy or VM may name a
// bridge the moment it exists. Where that is not possible, bridges are
// re-read with the rest of the host (refreshRoot), and whenever a policy
// names one the root does not have (PolicyAdd).
func (d *Daemon) watchBridges() {
	stop, err := policy.WatchBridges(func() { d.readRoot(true) }, func(err error) {
		d.log.Warn("following bridge changes", "error", err)
	})
	if err != nil {
		d.log.Warn("bridges are re-read at deploys and policy changes only", "error", err)
		return
	}
	d.stopBridges = stop
}

// knowsBridges reports whether the root policy has every one of bridges.
func (d *Daemon) knowsBridges(bridges []string) bool {
	root, ok := d.policies.Get(name.Root)
	if !ok {
		return false
	}
	for _, b := range bridges {
		if !slices.Contains(root.Bridges, b) {
			return false
		}
	}
	return true
}

// rootRefreshEvery bounds how often the host is re-read: creates are
// frequent, host resources change rarely.
const rootRefreshEvery = time.Second

// refreshRoot re-reads the host (bridges come and go) before a deploy or
// a listing, at most once per rootRefreshEvery.
func (d *Daemon) refreshRoot() { d.readRoot(false) }

// readRoot re-reads the host into the root policy; without force, only
// when the last reading is older than rootRefreshEvery. Block device
// creation forces it: free space is what it checks, and it is rare.
func (d *Daemon) readRoot(force bool) {
	d.rootMu.Lock()
	defer d.rootMu.Unlock()
	if !force && time.Since(d.rootAt) < rootRefreshEvery {
		return
	}
	d.rootAt = time.Now()
	root, err := d.hostPolicy()
	if err != nil {
		d.log.Warn("refresh host policy", "error", err)
		return
	}
	if err := d.policies.SetRoot(root); err != nil {
		d.log.Warn("refresh host policy", "error", err)
	}
}

// policyEntry lists the effective policy p of path with the usage under
// it and the records it is the meet of.
func (s *server) policyEntry(path name.Path, p policy.Policy) *daemonv1.PolicyEntry {
	u := s.d.sup.UsageUnder(path, "")
	blockMB, _ := s.d.blocks.TotalMB(path.String())
	e := &daemonv1.PolicyEntry{Path: path.String(), Policy: policy.ToProto(p), UsedVms: int32(u.VMs),
		UsedMemoryMb: int64(u.MemoryMB), UsedBlockMb: blockMB, UsedImagesMb: policy.ImagesMB(s.d.imagesUnder(path))}
	local, cert := s.d.policies.Records(path)
	if local != nil {
		e.Local = policy.ToProto(*local)
	}
	if cert != nil {
		e.Certificate = policy.ToProto(*cert)
	}
	return e
}

func (s *server) PolicyList(_ context.Context, req *daemonv1.PolicyListRequest) (*daemonv1.PolicyListResponse, error) {
	under, err := name.Parse(req.GetPath())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.d.refreshRoot()
	out := &daemonv1.PolicyListResponse{}
	for _, e := range s.d.policies.List(under) {
		out.Policies = append(out.Policies, s.policyEntry(e.Path, e.Policy))
	}
	return out, nil
}

func (s *server) PolicyAdd(_ context.Context, req *daemonv1.PolicyAddRequest) (*daemonv1.PolicyEntry, error) {
	path, err := name.Parse(req.GetPath())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if path.IsRoot() {
		return nil, status.Error(codes.InvalidArgument, "the root policy is what the host has; add policies for paths below it")
	}
	p := policy.FromProto(req.GetPolicy())
	if !s.d.knowsBridges(p.Bridges) {
		// A bridge made a moment ago, whose news may still be on its way.
		s.d.readRoot(true)
	}
	s.d.policyMu.Lock()
	defer s.d.policyMu.Unlock()
	old, _ := s.d.policies.Records(path)
	if err := s.d.policies.Set(path, p, s.d.usageUnder); err != nil {
		return nil, grpcError(err)
	}
	if err := s.d.store.Put(policy.Collection, path.FileKey(), policy.Entry{Path: path, Policy: p}); err != nil {
		if old != nil {
			s.d.policies.Set(path, *old, nil)
		} else {
			s.d.policies.RemoveLocal(path)
		}
		return nil, status.Errorf(codes.Internal, "save policy: %v", err)
	}
	eff, _ := s.d.policies.Get(path)
	return s.policyEntry(path, eff), nil
}

// usageUnder is what the VMs, block devices and images under path take,
// for checking a policy against it.
func (d *Daemon) usageUnder(path name.Path) policy.Usage {
	u := d.sup.UsageUnder(path, "")
	if b, err := d.blocks.TotalMB(path.String()); err == nil {
		u.BlockMB = int(b)
	}
	u.Images = d.imagesUnder(path)
	return u
}

func (s *server) PolicyRemove(_ context.Context, req *daemonv1.PolicyRemoveRequest) (*daemonv1.PolicyRemoveResponse, error) {
	path, err := name.Parse(req.GetPath())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.d.policyMu.Lock()
	defer s.d.policyMu.Unlock()
	if err := s.d.policies.Remove(path); err != nil {
		return nil, grpcError(err)
	}
	for _, c := range []string{policy.Collection, policy.CertCollection} {
		if err := s.d.store.Delete(c, path.FileKey()); err != nil {
			return nil, status.Errorf(codes.Internal, "remove policy: %v", err)
		}
	}
	return &daemonv1.PolicyRemoveResponse{}, nil
}

// checkBlockQuota refuses a new device of sizeMB at dev when the devices
// under any ancestor would exceed that ancestor's block allowance.
func (d *Daemon) checkBlockQuota(dev string, sizeMB int64) error {
	p, err := name.ParseVM(dev)
	if err != nil {
		return nil // the block manager reports bad names
	}
	d.readRoot(true)
	return d.policies.CheckBlock(p, sizeMB, func(a name.Path) (int64, error) {
		used, err := d.blocks.TotalMB(a.String())
		if err != nil {
			return 0, fmt.Errorf("block storage under %q: %w", a, err)
		}
		return used, nil
	})
}
