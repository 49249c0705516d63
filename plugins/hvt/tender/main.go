// Package tender is Petrel's built-in Solo5 hvt tender: a pure-Go
// implementation of the Solo5 hvt ABI (version 2) on Linux KVM for x86-64.
//
// It exists so that a host with /dev/kvm can run Solo5 hvt unikernels with
// nothing else installed, while behaving like the upstream solo5-hvt program
// (same command line, same exit statuses) so that the rest of Petrel can use
// either interchangeably. Compared with the C tender it bounds-checks every
// guest-supplied pointer and length in memory-safe code.
//
// Main is the entry point; it is meant to be called from a small main
// package or from a multi-call binary.
package tender

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/petrel-vmm/petrel/plugins/internal/hostdev"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// ABIVersion is the Solo5 hvt ABI version this tender implements; images
// built for another version are refused.
const ABIVersion = 2

// progName prefixes every message, as solo5-hvt's messages are prefixed
// with its program name, so logs read the same whichever tender ran.
const progName = "solo5-hvt"

// Main runs the tender with the solo5-hvt command line args (without the
// program name):
//
//	[--mem=MB] [--net:NAME=TAP] [--net-mac:NAME=MAC] [--block:NAME=PATH]
//	[--block-sector-size:NAME=N] [--] IMAGE [ARGS...]
//
// plus --help and --version. It returns the process exit status: the
// guest's exit status when the guest halts, 0 for --help and --version, and
// 1 for a
// usage error, a refused image or device, a misbehaving guest, or
// SIGINT/SIGTERM (which print "Exiting on signal N").
func Main(args []string) int {
	return mainWith(args, os.Stdout, os.Stderr)
}

// mainWith is Main with explicit console and diagnostic streams.
func mainWith(args []string, stdout, stderr io.Writer) int {
	ta, err := solo5.ParseTenderCommandLine(args)
	switch {
	case errors.Is(err, solo5.ErrHelp):
		usage(stderr)
		return 0
	case errors.Is(err, solo5.ErrVersion):
		fmt.Fprintf(stderr, "petrel built-in hvt tender: ABI version %d\n", ABIVersion)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		usage(stderr)
		return 1
	}
	if err := run(ta, stdout); err != nil {
		if es, ok := err.(exitStatus); ok {
			return int(es)
		}
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return 1
	}
	return 0
}

// exitStatus is returned by run when the guest halted with a status.
type exitStatus int

// Error implements error.
func (e exitStatus) Error() string { return fmt.Sprintf("guest exited with status %d", int(e)) }

// usage prints the solo5-hvt usage text.
func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s [ CORE OPTIONS ] [ MODULE OPTIONS ] [ -- ] KERNEL [ ARGS ]\n", progName)
	fmt.Fprintf(w, "KERNEL is the filename of the unikernel to run.\n")
	fmt.Fprintf(w, "ARGS are optional arguments passed to the unikernel.\n")
	fmt.Fprintf(w, "Core options:\n")
	fmt.Fprintf(w, "  [ --mem=%d ] (guest memory in MB, rounded down to 2 MB, at most %d)\n", DefaultMemMB, MaxMemMB)
	fmt.Fprintf(w, "    --help (display this help)\n")
	fmt.Fprintf(w, "    --version (display version information)\n")
	fmt.Fprintf(w, "Compiled-in modules: net block\n")
	fmt.Fprintf(w, "Compiled-in module options:\n")
	fmt.Fprintf(w, "    [ --net:NAME=IFACE | @NN ] [ --net-mac:NAME=HWADDR ]\n")
	fmt.Fprintf(w, "    [ --block:NAME=PATH ] [ --block-sector-size:NAME=%d ]\n", hostdev.DefaultSectorSize)
}
