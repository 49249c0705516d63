package policy

import (
	"fmt"
	"math"
	"strings"

	"github.com/petrel-vmm/petrel/core/name"
)

// CheckBlock decides whether a new block device of sizeMB may be created
// at dev: the devices under every ancestor of dev that has a policy,
// together with the new one, must stay within that policy's block
// allowance; every policy it would exceed is named. usedUnder returns the size in MiB of the devices under a
// path. sizeMB comes from the caller and is checked with exact
// arithmetic, so no size wraps a sum around to admit itself.
func (t *Tree) CheckBlock(dev name.Path, sizeMB int64, usedUnder func(name.Path) (int64, error)) error {
	return CheckBlockAgainst(t.Governing(dev), dev, sizeMB, usedUnder)
}

// CheckBlockAgainst is CheckBlock for policies that are not in a Tree: it
// applies every entry whose path is a proper ancestor of dev.
func CheckBlockAgainst(policies []Entry, dev name.Path, sizeMB int64, usedUnder func(name.Path) (int64, error)) error {
	if sizeMB < 0 {
		return fmt.Errorf("block device %q: negative size %d MB requested", dev, sizeMB)
	}
	var probs []string
	for _, e := range policies {
		a, p := e.Path, e.Policy
		if a.Equal(dev) || !a.IsPrefixOf(dev) {
			continue
		}
		used, err := usedUnder(a)
		if err != nil {
			return err
		}
		n, ok := AddMB(used, sizeMB)
		if ok && n <= int64(p.Block()) {
			continue
		}
		if p.BlockMB == nil {
			probs = append(probs, fmt.Sprintf("policy of %q allows no block storage", a))
			continue
		}
		total := fmt.Sprint(n)
		if !ok {
			total = fmt.Sprintf("%d + %d", used, sizeMB)
		}
		probs = append(probs, fmt.Sprintf("policy of %q: %s MB of block storage would exceed the limit of %d MB", a, total, p.Block()))
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: %s", ErrExceeded, strings.Join(probs, "; "))
	}
	return nil
}

// Applying returns the effective policies that bound what is held for
// the domain under: those of its ancestors and its own, root first. An
// upload made by a caller of domain under counts against all of them, as
// would the VMs it creates below under.
func (t *Tree) Applying(under name.Path) []Entry {
	out := t.Governing(under)
	if p, ok := t.Get(under); ok {
		out = append(out, Entry{Path: under, Policy: p})
	}
	return out
}

// CheckMayDeploy refuses an upload for the domain under when a policy
// that applies to it allows no VMs: no image it uploads could ever be
// used, so it may not make petreld store one.
func CheckMayDeploy(policies []Entry, under name.Path) error {
	for _, e := range policies {
		if e.Path.IsPrefixOf(under) && e.Policy.VMs < 1 {
			return fmt.Errorf("%w: policy of %q allows no VMs, so no image may be uploaded for it", ErrExceeded, e.Path)
		}
	}
	return nil
}

// CheckImagesAgainst decides whether the images in want (digest to size
// in bytes) may be held for the domain under: for every entry whose path
// is under or an ancestor of it, the images already held there
// (usedUnder) together with those of want it does not hold yet must stay
// within the policy's image allowance (Policy.Images). A policy that
// holds every image of want already is not checked, so a VM that brings
// no new image is never refused for image storage. A create checks the
// VM's parent as under, an upload the uploader's domain. Every policy
// exceeded is named, and the error wraps ErrExceeded.
func CheckImagesAgainst(policies []Entry, under name.Path, want map[string]int64, usedUnder func(name.Path) map[string]int64) error {
	var probs []string
	for _, e := range policies {
		a, p := e.Path, e.Policy
		if !a.IsPrefixOf(under) {
			continue
		}
		used := usedUnder(a)
		added := map[string]int64{}
		for sha, size := range want {
			if _, held := used[sha]; !held {
				added[sha] = size
			}
		}
		if len(added) == 0 {
			continue
		}
		total, ok := AddMB(imageBytes(used), imageBytes(added))
		if !ok {
			total = math.MaxInt64
		}
		if mb := mbCeil(total); mb > int64(p.Images()) {
			if a.IsRoot() {
				// The root's image allowance is the host's
				// image_store_mb: say so, as it is no one's delegation.
				probs = append(probs, fmt.Sprintf("the host's image store: %d MB would exceed its limit of %d MB (image_store_mb)", mb, p.Images()))
				continue
			}
			limit := fmt.Sprintf("%d MB", p.Images())
			if p.ImagesMB == nil {
				limit += " (its memory allowance; the policy states no image allowance)"
			}
			probs = append(probs, fmt.Sprintf("policy of %q: %d MB of image storage would exceed the limit of %s", a, mb, limit))
		}
	}
	if len(probs) > 0 {
		return fmt.Errorf("%w: %s", ErrExceeded, strings.Join(probs, "; "))
	}
	return nil
}

// mbBytes converts an allowance in MiB to bytes, saturated: negative is
// nothing, and anything beyond int64 is all.
func mbBytes(mb int) int64 {
	switch {
	case mb <= 0:
		return 0
	case int64(mb) > math.MaxInt64>>20:
		return math.MaxInt64
	}
	return int64(mb) << 20
}

// ImageRoom returns how many bytes more may be held for the domain
// under: the least room left by any entry whose path is under or an
// ancestor of it (never negative). An upload whose size is not known in
// advance is cut off there.
func ImageRoom(policies []Entry, under name.Path, usedUnder func(name.Path) map[string]int64) int64 {
	room := int64(math.MaxInt64)
	for _, e := range policies {
		if !e.Path.IsPrefixOf(under) {
			continue
		}
		left := mbBytes(e.Policy.Images()) - imageBytes(usedUnder(e.Path))
		room = min(room, max(left, 0))
	}
	return room
}
