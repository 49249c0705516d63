// Command petrel-plugin-bridge is Petrel's bridge network plugin: it gives
// each VM network device a tap on an existing host bridge. petreld starts
// it; it is not meant to be run by hand.
package main

import (
	"github.com/petrel-vmm/petrel/plugins/bridge/backend"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
)

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

func main() {
	petrelplugin.ServeNetwork(backend.New(version))
}
