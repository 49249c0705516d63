//go:build !(linux && amd64)

package tender

import (
	"errors"
	"io"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// run refuses to start: the built-in tender drives Linux KVM on x86-64 only.
func run(solo5.TenderArgs, io.Writer) error {
	return errors.New("the built-in hvt tender needs Linux KVM on x86-64")
}
