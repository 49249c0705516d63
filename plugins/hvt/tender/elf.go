package tender

import (
	"fmt"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// errBadELF is wrapped by every error loadELF returns for an image it
// refuses, so callers can tell a bad unikernel from a tender failure.
var errBadELF = solo5.ErrBadExecutable

// loadELF copies the PT_LOAD segments of the static ELF64 x86-64 executable
// img into guest memory mem at their physical addresses and returns the entry
// point and the end of the loaded image (rounded up to 4 KiB), which the
// guest uses as the start of its heap.
//
// It refuses, with solo5.ParseExecutable, anything it cannot load exactly,
// and also a segment extending beyond guest memory and an image that leaves
// no memory for the stack.
func loadELF(img, mem []byte) (entry, kernelEnd uint64, err error) {
	x, err := solo5.ParseExecutable(img, solo5.LoadLimits{MinAddr: guestMinBase, MaxAddr: MaxMemMB << 20, Physical: true})
	if err != nil {
		return 0, 0, err
	}
	if err := x.Load(img, mem, 0); err != nil {
		return 0, 0, err
	}
	kernelEnd = x.End()
	if kernelEnd >= uint64(len(mem)) {
		return 0, 0, fmt.Errorf("%w: image ends at %#x, leaving no guest memory for the stack (%d bytes); try a larger --mem", errBadELF, kernelEnd, len(mem))
	}
	return x.Entry, kernelEnd, nil
}
