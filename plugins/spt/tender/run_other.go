//go:build !(linux && amd64)

package tender

import (
	"errors"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// run refuses to start: the built-in tender sandboxes guests with Linux's
// seccomp and forks them with x86-64 assembly.
func run(solo5.TenderArgs) (guestEnd, error) {
	return guestEnd{}, errors.New("the built-in spt tender needs Linux on x86-64")
}

// dieBySignal does nothing: run never reports a signal here.
func dieBySignal(int) {}
