// Command petrel-shim supervises one Petrel VM's tender; see package
// github.com/petrel-vmm/petrel/sdk/shim for its command line and protocol.
package main

import (
	"os"

	"github.com/petrel-vmm/petrel/sdk/shim"
)

func main() { os.Exit(shim.Main(os.Args[1:])) }
