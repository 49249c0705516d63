// Command petrel-plugin-qemu is Petrel's QEMU backend: Solo5 virtio
// unikernels and Linux guests under qemu-system-x86_64. petreld starts it;
// it is not meant to be run by hand.
package main

import (
	"github.com/petrel-vmm/petrel/plugins/qemu/backend"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
)

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

func main() { petrelplugin.ServeHypervisor(backend.New(version)) }
