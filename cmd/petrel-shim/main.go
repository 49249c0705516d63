// Command petrel-shim supervises one Petrel VM's tender; see package
// github.com/petrel-vmm/petrel/sdk/shim for its command line and protocol.
// `petrel-shim --version` prints its version, for petrel doctor.
package main

import (
	"fmt"
	"os"

	"github.com/petrel-vmm/petrel/sdk/shim"
)

// version is set at build time with -ldflags (-X main.version=...).
var version = "0.1.0-dev"

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Printf("petrel-shim %s\n", version)
		return
	}
	os.Exit(shim.Main(os.Args[1:]))
}
