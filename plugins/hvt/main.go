// Command petrel-plugin-hvt is Petrel's Solo5 hvt backend. petreld starts
// it; it is not meant to be run by hand, except as a tender:
//
//	petrel-plugin-hvt tender [--mem=MB] ... -- IMAGE [ARGS...]
//
// runs an hvt unikernel on /dev/kvm with the built-in tender, with the
// same command line and exit codes as Solo5's solo5-hvt.
package main

import (
	"os"

	"github.com/petrel-vmm/petrel/plugins/hvt/tender"
	"github.com/petrel-vmm/petrel/sdk/hypervisor/tenderbackend"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
)

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "tender" {
		os.Exit(tender.Main(os.Args[2:]))
	}
	petrelplugin.ServeHypervisor(tenderbackend.New(tenderbackend.HVT(version, builtin)))
}

// builtin is the command that runs the built-in tender: this binary.
func builtin() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{exe, "tender"}, nil
}
