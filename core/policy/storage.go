package policy

import (
	"fmt"
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
