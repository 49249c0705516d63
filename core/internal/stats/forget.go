package stats

import (
	"slices"

	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Forget removes the VM called name from the newest batch, so that a VM
// just destroyed is no longer listed, rather than until the next
// collection. Sinks are not
// told: they had the batch when it was new, and the next leaves it out.
func (c *Collector) Forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || !slices.ContainsFunc(c.last.GetVms(), func(vm *pluginv1.VMSample) bool { return vm.GetName() == name }) {
		return
	}
	// Batches are shared with followers and sinks: replace, never modify.
	b := proto.Clone(c.last).(*pluginv1.Batch)
	b.Vms = slices.DeleteFunc(b.Vms, func(vm *pluginv1.VMSample) bool { return vm.GetName() == name })
	c.last = b
}
