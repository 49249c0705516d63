// Command petrel-plugin-spt is Petrel's Solo5 spt backend. petreld starts
// it; it is not meant to be run by hand, except as a tender:
//
//	petrel-plugin-spt tender [--mem=MB] ... -- IMAGE [ARGS...]
//
// runs an spt unikernel in a seccomp-sandboxed process with the built-in
// tender, with the same command line and exit statuses as Solo5's
// solo5-spt. The binary must be built with -buildmode=pie: guest memory
// lives at fixed low addresses of the tender's address space.
package main

import (
	"os"

	"github.com/petrel-vmm/petrel/plugins/spt/tender"
	"github.com/petrel-vmm/petrel/sdk/hypervisor/tenderbackend"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
)

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "tender" {
		os.Exit(tender.Main(os.Args[2:]))
	}
	petrelplugin.ServeHypervisor(tenderbackend.New(tenderbackend.SPT(version, builtin)))
}

// builtin is the command that runs the built-in tender: this binary.
func builtin() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{exe, "tender"}, nil
}
