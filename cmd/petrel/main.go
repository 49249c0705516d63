// Command petrel is Petrel's command-line client: it deploys, watches and
// manages unikernels through petreld.
package main

import "os"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
