// Command petrel-plugin-spt is Petrel's Solo5 spt backend: it runs spt
// unikernels under Solo5's solo5-spt tender (a seccomp-sandboxed
// process). petreld starts it; it is not meant to be run by hand.
package main

import (
	"github.com/petrel-vmm/petrel/sdk/hypervisor/tenderbackend"
	"github.com/petrel-vmm/petrel/sdk/plugin"
)

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

func main() { plugin.ServeHypervisor(tenderbackend.New(tenderbackend.SPT(version, nil))) }
