// Command petrel-plugin-command is an example third-party hypervisor
// backend for Petrel, for a hypervisor that is not a Solo5 tender: it
// runs each VM as one process of a program the operator names, with the
// command line
//
//	PROGRAM --memory=MB [--net=NAME,IFACE[,MAC]]... [--block=NAME,PATH]... -- KERNEL [ARGS...]
//
// where KERNEL is the VM's image, an ELF kernel for this host's machine.
// Adapting it to a real hypervisor is a matter of commandLine and
// validate. It imports only Petrel's sdk/, as any plugin may.
//
// The backend writes what differs between hypervisors (Info, Configure,
// Fingerprint, Capabilities, Validate, Start) and embeds
// hypervisor.ShimBackend for the rest: each VM runs under a petrel-shim
// in a directory of its own, which owns the process, its console and its
// exit status, so that Recover, Wait, Stop, Destroy, Stats and Console
// are the same for every backend built this way.
package main

import "github.com/petrel-vmm/petrel/sdk/petrelplugin"

// version is the plugin's version, as Info reports it.
const version = "1.0.0"

func main() { petrelplugin.ServeHypervisor(newBackend(version)) }
