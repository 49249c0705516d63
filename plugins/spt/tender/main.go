package tender

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/petrel-vmm/petrel/plugins/internal/hostdev"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// ABIVersion is the Solo5 spt ABI version this tender implements; images
// built for another version are refused.
const ABIVersion = 2

// progName prefixes every message, as solo5-spt's messages are prefixed
// with its program name, so logs read the same whichever tender ran.
const progName = "solo5-spt"

// Main runs the tender with the solo5-spt command line args (without the
// program name):
//
//	[--mem=MB] [--net:NAME=TAP] [--net-mac:NAME=MAC] [--block:NAME=PATH]
//	[--block-sector-size:NAME=N] [--] IMAGE [ARGS...]
//
// plus --help and --version. The process ends as the guest ended: with
// the guest's exit status when the guest exits (255 when it aborts), or
// killed by the same signal when the guest is killed by one (a fault, a
// forbidden system call, or a signal forwarded to it). Once the guest
// runs, Main does not return: the tender execs a small waiter in its place
// that does that (or, when it cannot, waits itself and returns the status
// or kills itself). Main returns 0 for --help and --version, and 1 for a
// usage error or a refused image or device, after a one-line message on
// stderr.
//
// Main locks the calling goroutine to its thread for good: the guest
// process is tied to that thread's life, which the waiter continues.
func Main(args []string) int {
	runtime.LockOSThread()
	return mainWith(args, os.Stderr)
}

// mainWith is Main with an explicit diagnostic stream.
func mainWith(args []string, stderr io.Writer) int {
	ta, err := solo5.ParseTenderCommandLine(args)
	switch {
	case errors.Is(err, solo5.ErrHelp):
		usage(stderr)
		return 0
	case errors.Is(err, solo5.ErrVersion):
		fmt.Fprintf(stderr, "petrel built-in spt tender: ABI version %d\n", ABIVersion)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		usage(stderr)
		return 1
	}
	end, err := run(ta)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return 1
	}
	if end.signal != 0 {
		dieBySignal(end.signal)
		return 128 + end.signal
	}
	return end.status
}

// guestEnd is how the guest process ended: with an exit status, or killed
// by signal (when signal is not 0).
type guestEnd struct {
	status, signal int
}

// usage prints the solo5-spt usage text.
func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s [ CORE OPTIONS ] [ MODULE OPTIONS ] [ -- ] KERNEL [ ARGS ]\n", progName)
	fmt.Fprintf(w, "KERNEL is the filename of the unikernel to run.\n")
	fmt.Fprintf(w, "ARGS are optional arguments passed to the unikernel.\n")
	fmt.Fprintf(w, "Core options:\n")
	fmt.Fprintf(w, "  [ --mem=%d ] (guest memory in MB; guest addresses are the tender's own,\n", DefaultMemMB)
	fmt.Fprintf(w, "    so at most what fits below the tender's lowest mapping)\n")
	fmt.Fprintf(w, "    --help (display this help)\n")
	fmt.Fprintf(w, "    --version (display version information)\n")
	fmt.Fprintf(w, "Compiled-in modules: net block\n")
	fmt.Fprintf(w, "Compiled-in module options:\n")
	fmt.Fprintf(w, "    [ --net:NAME=IFACE | @NN ] [ --net-mac:NAME=HWADDR ]\n")
	fmt.Fprintf(w, "    [ --block:NAME=PATH ] [ --block-sector-size:NAME=%d ]\n", hostdev.DefaultSectorSize)
}
