package hypervisor

import (
	"context"
	"sync"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// StatsBatcher is implemented by a Hypervisor that samples many VMs at
// once more cheaply than one Stats call each. petreld's side of the
// plugin connection implements it with one StatsBatch RPC, so that the
// statistics loop costs one round trip per plugin and interval instead of
// one per VM; a backend may implement it too, and need not.
type StatsBatcher interface {
	// StatsBatch samples the VMs with the given ids. A VM that is not
	// running, or unknown, is left out of the result; the error is for
	// the call as a whole.
	StatsBatch(ctx context.Context, ids []string) (map[string]*pluginv1.VMStats, error)
}

// StatsBatch samples the VMs with the given ids through h: in one call
// when h is a StatsBatcher, otherwise with one Stats call per VM, leaving
// out the VMs whose Stats fails (not running, unknown).
func StatsBatch(ctx context.Context, h Hypervisor, ids []string) (map[string]*pluginv1.VMStats, error) {
	if b, ok := h.(StatsBatcher); ok {
		return b.StatsBatch(ctx, ids)
	}
	return statsEach(ctx, h, ids, 1)
}

// statser samples one VM.
type statser interface {
	Stats(ctx context.Context, id string) (*pluginv1.VMStats, error)
}

// statsEach samples ids with one Stats call each, up to parallel at a
// time (calls into a plugin process are round trips worth overlapping;
// calls into a backend in the same process, a few reads of /proc each,
// are not: with parallel 1 they are made one after the other), leaving
// out the VMs whose Stats fails.
func statsEach(ctx context.Context, h statser, ids []string, parallel int) (map[string]*pluginv1.VMStats, error) {
	out := make(map[string]*pluginv1.VMStats, len(ids))
	if parallel <= 1 {
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			if st, err := h.Stats(ctx, id); err == nil {
				out[id] = st
			}
		}
		return out, nil
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(parallel, 1))
	for _, id := range ids {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return out, ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			st, err := h.Stats(ctx, id)
			if err != nil {
				return
			}
			mu.Lock()
			out[id] = st
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, nil
}
