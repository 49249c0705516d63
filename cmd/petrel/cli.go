package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// Exit codes, one per failure class, so scripts can react without parsing
// messages. Documented in `petrel --help`.
const (
	exitOK          = 0
	exitError       = 1  // anything not covered below
	exitUsage       = 2  // bad flags or arguments
	exitUnreachable = 3  // petreld not running or socket not accessible
	exitNotFound    = 4  // no such VM
	exitExists      = 5  // a VM of that name exists
	exitInvalid     = 6  // the request can never work (name, image, memory...)
	exitUnavailable = 7  // backend not usable on this host
	exitDenied      = 8  // permission denied
	exitBusy        = 9  // a block device is in use
	exitLimit       = 10 // refused by a resource policy or another limit
	exitRolledBack  = 11 // an update failed and the previous image runs again
)

const exitCodeHelp = `Exit codes:
  0  success
  1  other error (such as a registry petreld cannot reach)
  2  usage error (unknown command, flag or help topic; bad value or arguments)
  3  petreld unreachable (not running, or no access to its socket)
  4  no such VM or block device
  5  a VM of that name already exists (use --force to replace it)
  6  invalid request (name, image, manifest, memory, backend...)
  7  backend not usable on this host (missing tender, no /dev/kvm...)
  8  permission denied
  9  block device in use (by a VM or a transfer)
  10 refused by a resource policy (or another limit, such as console followers)
  11 update rolled back (the new image failed; the previous one runs again)`

// usageError marks mistakes in the command line itself.
type usageError struct{ error }

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

type app struct {
	socket string
	out    io.Writer
	errw   io.Writer
	remote remoteFlags

	// midLine is set while a progress bar's line on errw is unfinished.
	midLine bool
}

func run(args []string, stdout, stderr io.Writer) int {
	a := &app{out: stdout, errw: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	code, msg := classify(err, a.socketPath(), a.remote.destination != "")
	a.endProgress()
	fmt.Fprintf(stderr, "petrel: %s\n", msg)
	return code
}

func (a *app) socketPath() string {
	if a.remote.destination != "" {
		return a.remote.destination
	}
	return client.SocketPath(a.socket)
}

// classify maps an error to an exit code and a one-line message.
func classify(err error, socket string, remote bool) (int, string) {
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage, ue.Error()
	}
	var rb rolledBack
	if errors.As(err, &rb) {
		return exitRolledBack, rb.Error()
	}
	var ii invalidInput
	if errors.As(err, &ii) {
		return exitInvalid, ii.Error()
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return exitInvalid, err.Error()
		}
		return exitError, err.Error()
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		if strings.HasPrefix(msg, "registry ") {
			return exitError, msg // petreld answered: its registry did not
		}
		if strings.Contains(msg, "permission denied") {
			return exitDenied, fmt.Sprintf("cannot connect to petreld at %s: permission denied", socket)
		}
		if remote {
			return exitUnreachable, fmt.Sprintf("cannot connect to the petrel endpoint at %s (is petrel-endpoint running and reachable?): %s", socket, msg)
		}
		return exitUnreachable, fmt.Sprintf("cannot connect to petreld at %s (is it running? set --socket or %s)", socket, client.SocketEnv)
	case codes.NotFound:
		return exitNotFound, msg
	case codes.AlreadyExists:
		return exitExists, msg
	case codes.InvalidArgument:
		return exitInvalid, msg
	case codes.ResourceExhausted:
		return exitLimit, msg
	case codes.FailedPrecondition:
		return exitUnavailable, msg
	case codes.PermissionDenied, codes.Unauthenticated:
		return exitDenied, msg
	case codes.Aborted:
		return exitBusy, msg
	}
	return exitError, msg
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "petrel",
		Short: "Deploy and manage unikernels through petreld",
		Long: `petrel talks to petreld, Petrel's daemon, over its unix socket.

Typical use:
  petrel create web ./web.hvt --mem 64 --arg=--port=80   deploy a unikernel
  petrel console web --follow                            watch its console
  petrel info                                            list every VM
  petrel destroy web                                     stop and remove it

VM names are paths of labels ([a-z0-9.-], 1-63 characters) joined by ':',
for example "team:web:frontend". Upper case is refused, not lower-cased.

` + exitCodeHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&a.socket, "socket", "", "`PATH` of petreld's socket (default $"+client.SocketEnv+" or "+client.DefaultSocket+")")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{flagError(cmd, err)} })
	root.AddCommand(a.createCmd(), a.destroyCmd(), a.restartCmd(), a.infoCmd(), a.consoleCmd(),
		a.eventsCmd(), a.versionCmd(), a.pluginsCmd(), a.blockCmd(), a.bridgesCmd(), a.policyCmd(), a.statsCmd(), a.caCmd())
	root.AddCommand(a.imageCmd(), a.updateCmd())
	root.AddCommand(a.doctorCmd(), a.stateCmd(), a.uiCmd(), a.genDocsCmd())
	a.addRemote(root)
	a.completions(root)
	root.SetUsageFunc(usage)
	root.SetHelpCommand(a.helpCmd())
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	strict(root)
	return root
}

// args wraps cobra's positional-argument checks as usage errors.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func (a *app) dial() (*client.Client, error) {
	if a.remote.destination != "" {
		return a.remoteDial()
	}
	return client.Dial(a.socketPath())
}

// session is what most commands start with: a context cancelled by Ctrl-C
// and a client of the daemon; done releases both.
func (a *app) session() (context.Context, *client.Client, func(), error) {
	ctx, cancel := signalContext()
	c, err := a.dial()
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return ctx, c, func() { c.Close(); cancel() }, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), ioctlGetTermios)
	return err == nil
}

func (a *app) createCmd() *cobra.Command {
	var (
		backend, imageName string
		mem                = sizeFlag{Max: math.MaxUint32, Positive: true, ZeroHint: "a VM needs memory; leave --mem out for petreld's default (32 MB)"}
		cpus               []uint
		vmArgs             []string
		restartOnFail      bool
		exitCodes          []int
		startup            int32
		force              bool
		jsonOut            bool
		blocks             []string
		nets               []string
		initrd, cmdline    string
	)
	cmd := &cobra.Command{
		Use:   "create NAME IMAGE",
		Short: "Deploy a unikernel image as a VM",
		Long: `Upload IMAGE (a Solo5 unikernel) to petreld and start it as VM NAME.
The image is named by its SHA-256 first and sent only when petreld does
not hold it already, so deploying the same image again transfers nothing.

IMAGE is a file, or an OCI registry reference naming its registry host
(registry.example.org/team/web:1.4, localhost:5000/web@sha256:...): an
existing file wins, and anything that is neither is refused. petreld
pulls a reference itself, with its own credentials (registry_config), and
only when its store lacks the digest; the VM records the reference and
digest, for petrel update and petrel info --check-updates.

The image is checked before anything starts: it must be a Solo5 image for
the chosen backend, and the devices its manifest declares must be exactly
the ones given on the command line. The arguments (--arg, with --cmdline
in front for a Linux guest) must fit a guest's command line: at most 8191
bytes joined with single spaces (Solo5's 8192 with the terminating NUL);
longer ones are refused as invalid (exit 6).

Restart on failure (--restart-on-fail) never restarts after a signal or
after exit code 1 or 60-64; otherwise on any exit code, or only on those
given with --exit-code.`,
		Example: `  petrel create hello ./hello.hvt
  petrel create web registry.example.org/team/web:1.4 --mem 64
  petrel create web ./web.hvt --mem 64 --cpu 1 --arg=--ipv4=10.0.0.2/24 --restart-on-fail
  petrel create web ./web.hvt --net service0:br0 --block storage:disk
  petrel create web ./web-v2.hvt --force
  petrel create linux ./vmlinuz --backend qemu --initrd ./initrd.cpio --cmdline "console=ttyS0" --mem 256`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			var netAtts []*daemonv1.NetAttachment
			for _, n := range nets {
				att, err := parseNetFlag(n)
				if err != nil {
					return usageError{err}
				}
				netAtts = append(netAtts, att)
			}
			var atts []*daemonv1.BlockAttachment
			for _, b := range blocks {
				att, err := parseBlockFlag(b)
				if err != nil {
					return usageError{err}
				}
				atts = append(atts, att)
			}
			imageRef, err := imageSource(pos[1])
			if err != nil {
				return err
			}
			if initrd != "" {
				if err := regularFile("--initrd", initrd); err != nil {
					return err
				}
			}
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			imageFile := pos[1]
			var pulled *daemonv1.PulledImage
			if imageRef != "" {
				// A name the create would refuse is refused before the
				// pull, which may be long.
				if !force {
					if err := nameFree(ctx, c, pos[0]); err != nil {
						return err
					}
				}
				// petreld pulls the reference; pulling it first here shows
				// the transfer's progress, and the create then names it
				// with the digest pulled.
				if pulled, err = a.pull(ctx, c, imageRef); err != nil {
					return err
				}
				imageFile = ""
			}
			req := &daemonv1.CreateRequest{
				Name: pos[0], Backend: backend, MemoryMb: uint32(mem.MB), Args: vmArgs,
				Restart: &daemonv1.RestartPolicy{OnFailure: restartOnFail}, Startup: startup, Force: force,
				ImageName: filepath.Base(pos[1]),
			}
			if imageRef != "" {
				req.ImageRef, req.ImageName, req.ImageSha256 = imageRef, imageRef, pulled.GetSha256()
			}
			if imageName != "" {
				req.ImageName = imageName
			}
			for _, c := range cpus {
				req.Cpus = append(req.Cpus, uint32(c))
			}
			for _, e := range exitCodes {
				req.Restart.ExitCodes = append(req.Restart.ExitCodes, int32(e))
			}
			req.Blocks = atts
			req.Nets = netAtts
			req.KernelCmdline = cmdline
			// Digests first: an image petreld holds already is not sent.
			vm, err := c.CreateFromFiles(ctx, req, imageFile, initrd, a.uploadProgress)
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(a.out, vmJSON(vm))
			}
			fmt.Fprintf(a.out, "created %s (backend %s, pid %d)\n", vm.GetName(), vm.GetBackend(), vm.GetPid())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&backend, "backend", "", "hypervisor backend, e.g. hvt or spt (default: the host's default_backend)")
	f.Var(&mem, "mem", "memory: "+sizeHelp+" (default: petreld's, 32 MB)")
	f.UintSliceVar(&cpus, "cpu", nil, "pin the VM to this host CPU (repeatable)")
	f.StringArrayVar(&vmArgs, "arg", nil, "argument passed to the unikernel (repeatable, in order)")
	f.BoolVar(&restartOnFail, "restart-on-fail", false, "restart the VM when it fails")
	f.IntSliceVar(&exitCodes, "exit-code", nil, "restart only on this exit code (repeatable; implies --restart-on-fail)")
	f.Int32Var(&startup, "startup", 0, "startup priority when petreld boots (lower starts first)")
	f.BoolVar(&force, "force", false, "replace an existing VM of the same name")
	f.StringVar(&initrd, "initrd", "", "initial ramdisk, for Linux guests (backend qemu)")
	f.StringVar(&cmdline, "cmdline", "", "kernel command line, for Linux guests (backend qemu)")
	f.StringArrayVar(&nets, "net", nil, "attach a network device to a host bridge: NAME:BRIDGE[@MAC] (repeatable; NAME from the image's manifest; MAC derived from the VM and device names when not given)")
	f.StringArrayVar(&blocks, "block", nil, "attach a block device: NAME[:DEVICE][@SECTOR] (repeatable; NAME from the image's manifest, DEVICE a device label in the VM's path)")
	f.StringVar(&imageName, "image-name", "", "name to record for the image (default: the file name)")
	f.BoolVar(&jsonOut, "json", false, "print the created VM as JSON")
	return cmd
}

// uploadProgress is the progress bar of an image upload (none unless on
// a terminal).
func (a *app) uploadProgress(path string) func(sent, total int64) {
	return a.progressBar("uploading " + filepath.Base(path))
}

func (a *app) destroyCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "destroy NAME",
		Short:   "Stop a VM and remove it, whatever its state",
		Example: "  petrel destroy web",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: pos[0]}); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "destroyed %s\n", pos[0])
			return nil
		},
	}
}

func (a *app) restartCmd() *cobra.Command {
	var vmArgs []string
	cmd := &cobra.Command{
		Use:   "restart NAME",
		Short: "Stop a VM and start it again, optionally with new arguments",
		Long: `Stop VM NAME (SIGTERM, then SIGKILL after the stop timeout) and start it
again from the same image. With --arg, the given arguments replace the old
ones; without, the VM keeps its arguments.`,
		Example: "  petrel restart web\n  petrel restart web --arg=--verbose",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			req := &daemonv1.RestartRequest{Name: pos[0]}
			if cmd.Flags().Changed("arg") {
				req.ReplaceArgs, req.Args = true, vmArgs
			}
			vm, err := c.API.Restart(ctx, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "restarted %s (pid %d)\n", vm.GetName(), vm.GetPid())
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&vmArgs, "arg", nil, "new argument for the unikernel (repeatable; replaces all old ones)")
	return cmd
}

// vmView is the JSON shape of a VM in `petrel info --json`.
type vmView struct {
	Name       string      `json:"name"`
	State      string      `json:"state"`
	Backend    string      `json:"backend"`
	Image      string      `json:"image,omitempty"`
	ImageSHA   string      `json:"image_sha256"`
	MemoryMB   uint32      `json:"memory_mb"`
	CPUs       []uint32    `json:"cpus"`
	Args       []string    `json:"args"`
	Pid        int64       `json:"pid,omitempty"`
	ShimPid    int64       `json:"shim_pid,omitempty"`
	ExitCode   *int32      `json:"exit_code,omitempty"`
	ExitSignal *int32      `json:"exit_signal,omitempty"`
	Restarts   uint32      `json:"restarts"`
	RestartOn  bool        `json:"restart_on_fail"`
	ExitCodes  []int32     `json:"restart_exit_codes,omitempty"`
	Startup    int32       `json:"startup"`
	CreatedAt  string      `json:"created_at"`
	StartedAt  string      `json:"started_at,omitempty"`
	ExitedAt   string      `json:"exited_at,omitempty"`
	Message    string      `json:"message,omitempty"`
	Command    []string    `json:"command,omitempty"`
	Nets       []netView   `json:"nets"`
	Blocks     []blockView `json:"blocks"`
	// ImageRef and ImageDigest: the OCI reference the image came from and
	// the manifest digest it named; ImageLatest is what it names now and
	// ImageCheck why that is unknown (info --check-updates only).
	ImageRef    string `json:"image_ref,omitempty"`
	ImageDigest string `json:"image_digest,omitempty"`
	ImageLatest string `json:"image_latest,omitempty"`
	ImageCheck  string `json:"image_check_error,omitempty"`
}

// netView is a VM network device in JSON output.
type netView struct {
	Name   string `json:"name"`
	Bridge string `json:"bridge"`
	MAC    string `json:"mac"`
	Tap    string `json:"tap"`
}

// blockView is a VM block device in JSON output.
type blockView struct {
	Name       string `json:"name"`
	Device     string `json:"device"`
	SectorSize uint32 `json:"sector_size,omitempty"`
}

func ts(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

// vmRow is a VM's row in petrel info's table.
func vmRow(vm *daemonv1.VM) []string {
	exit := "-"
	if vm.GetHasExit() {
		exit = fmt.Sprint(vm.GetExitCode())
		if vm.GetExitSignal() != 0 {
			exit = fmt.Sprintf("signal %d", vm.GetExitSignal())
		}
	}
	pid := "-"
	if vm.GetPid() != 0 {
		pid = fmt.Sprint(vm.GetPid())
	}
	cpus := "-"
	if len(vm.GetCpus()) > 0 {
		cpus = strings.Trim(strings.ReplaceAll(fmt.Sprint(vm.GetCpus()), " ", ","), "[]")
	}
	return []string{vm.GetName(), vm.GetState(), vm.GetBackend(), fmt.Sprintf("%dM", vm.GetMemoryMb()), cpus, pid, exit,
		fmt.Sprint(vm.GetRestarts()), vm.GetImageName()}
}

func vmJSON(vm *daemonv1.VM) vmView {
	v := vmView{
		Name: vm.GetName(), State: vm.GetState(), Backend: vm.GetBackend(), Image: vm.GetImageName(),
		ImageSHA: vm.GetImageSha256(), MemoryMB: vm.GetMemoryMb(), CPUs: vm.GetCpus(), Args: vm.GetArgs(),
		Pid: vm.GetPid(), ShimPid: vm.GetShimPid(), Restarts: vm.GetRestarts(),
		RestartOn: vm.GetRestart().GetOnFailure(), ExitCodes: vm.GetRestart().GetExitCodes(), Startup: vm.GetStartup(),
		CreatedAt: ts(vm.GetCreatedAtNs()), StartedAt: ts(vm.GetStartedAtNs()), ExitedAt: ts(vm.GetExitedAtNs()),
		Message: vm.GetMessage(), Command: vm.GetArgv(), ImageRef: vm.GetImageRef(), ImageDigest: vm.GetImageDigest(),
	}
	if v.CPUs == nil {
		v.CPUs = []uint32{}
	}
	if v.Args == nil {
		v.Args = []string{}
	}
	v.Nets, v.Blocks = []netView{}, []blockView{}
	for _, n := range vm.GetNets() {
		v.Nets = append(v.Nets, netView{Name: n.GetName(), Bridge: n.GetBridge(), MAC: n.GetMac(), Tap: n.GetHostIf()})
	}
	for _, b := range vm.GetBlocks() {
		v.Blocks = append(v.Blocks, blockView{Name: b.GetName(), Device: b.GetDevice(), SectorSize: b.GetSectorSize()})
	}
	if vm.GetHasExit() {
		code, sig := vm.GetExitCode(), vm.GetExitSignal()
		v.ExitCode = &code
		if sig != 0 {
			v.ExitSignal = &sig
		}
	}
	return v
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// imageStatus is what info says of a VM's image from a registry: its
// reference and digest and, when checked, whether the tag moved on.
func imageStatus(vm *daemonv1.VM, st *daemonv1.ImageStatus) string {
	s := fmt.Sprintf("image: %s@%s", vm.GetImageRef(), vm.GetImageDigest())
	switch {
	case st == nil:
		return s
	case st.GetError() != "":
		return s + " (registry unreachable: " + st.GetError() + ")"
	case st.GetLatest() == st.GetCurrent():
		return s + " (up to date)"
	}
	return s + " (newer digest " + st.GetLatest() + " available)"
}

func (a *app) infoCmd() *cobra.Command {
	var jsonOut, checkUpdates bool
	cmd := &cobra.Command{
		Use:   "info [NAME|PATH]",
		Short: "Show VMs: one by name, every VM under a path, or all",
		Long: `Show VMs with their state (starting, running, exited, restarting, failed,
lost), backend, memory, pinned CPUs, pid, last exit and restart count.

A VM is lost when its shim vanished (killed outright) without recording
how the guest ended: its exit is unknown, so it shows no exit code ("-",
and no exit_code in JSON) rather than a 0 that would read as success.

A VM created from a registry reference shows it with the digest it runs
("image: REF@sha256:..."). With --check-updates, petreld asks each
registry (at most 3 seconds each, in parallel) what the reference names
now, and info adds "up to date", "newer digest sha256:... available" or
"registry unreachable: ..."; without it, info never waits on a registry.

With --json, prints a list of objects with at least name, state, backend,
exit_code (once the VM has exited, never for a lost VM) and restarts;
image_ref and image_digest for an image from a registry, and with
--check-updates image_latest or image_check_error.`,
		Example: "  petrel info\n  petrel info team:web --json\n  petrel info web --check-updates",
		Args:    args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			req := &daemonv1.InfoRequest{}
			if len(pos) == 1 {
				req.Name = pos[0]
			}
			res, err := c.API.Info(ctx, req)
			if err != nil {
				return err
			}
			checked := map[string]*daemonv1.ImageStatus{}
			if checkUpdates {
				cres, err := c.API.CheckImage(ctx, &daemonv1.CheckImageRequest{Name: req.GetName()})
				if err != nil {
					return err
				}
				for _, st := range cres.GetImages() {
					checked[st.GetName()] = st
				}
			}
			vms := listing[*daemonv1.VM]{
				columns: []string{"NAME", "STATE", "BACKEND", "MEM", "CPUS", "PID", "EXIT", "RESTARTS", "IMAGE"},
				row:     vmRow,
				json: func(vm *daemonv1.VM) (any, error) {
					v := vmJSON(vm)
					if st := checked[vm.GetName()]; st != nil {
						v.ImageLatest, v.ImageCheck = st.GetLatest(), st.GetError()
					}
					return v, nil
				},
			}
			if err := vms.print(a.out, jsonOut, res.GetVms()); err != nil || jsonOut {
				return err
			}
			for _, vm := range res.GetVms() {
				for _, n := range vm.GetNets() {
					fmt.Fprintf(a.out, "  %s: net %s on bridge %s, tap %s, mac %s\n", vm.GetName(), n.GetName(), n.GetBridge(), n.GetHostIf(), n.GetMac())
				}
				for _, b := range vm.GetBlocks() {
					fmt.Fprintf(a.out, "  %s: block %s on device %s\n", vm.GetName(), b.GetName(), b.GetDevice())
				}
				if vm.GetImageRef() != "" {
					fmt.Fprintf(a.out, "  %s: %s\n", vm.GetName(), imageStatus(vm, checked[vm.GetName()]))
				}
				if vm.GetMessage() != "" && vm.GetState() != "running" {
					fmt.Fprintf(a.out, "  %s: %s\n", vm.GetName(), vm.GetMessage())
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().BoolVar(&checkUpdates, "check-updates", false, "ask the registries whether the references of VMs name newer images")
	return cmd
}

// missedFormat is the line printed in place of console lines a follower
// lost; scripts recognise it by its form, "[petrel: N lines missed]".
const missedFormat = "[petrel: %d lines missed]"

func (a *app) consoleCmd() *cobra.Command {
	var (
		since    string
		count    lineCount
		follow   bool
		jsonOut  bool
		stamps   bool
		noStamps bool
	)
	cmd := &cobra.Command{
		Use:   "console NAME",
		Short: "Show a VM's console output, optionally following it live",
		Long: `Show the console lines petreld keeps for VM NAME (also after it exited),
selected by time (--since: a duration back from now such as 10m, 1h30m or
2d, or an RFC 3339 time) and/or number (--count, or --tail as docker and
kubectl spell it: the last N lines), and with --follow keep printing new
lines until the VM exits or Ctrl-C.

Each line starts with the time petreld received it (UTC); --timestamps=false
or --no-timestamps prints the text only.

A follower that reads more slowly than the VM writes never slows the VM:
it loses lines instead, and a line of its own, without a timestamp, says
how many at the place they were lost:

  [petrel: 1234 lines missed]

(with --json, an object whose "dropped" is the count).`,
		Example: "  petrel console web\n  petrel console web --tail 20 --follow\n  petrel console web --since 10m --no-timestamps\n  petrel console web --since 2026-11-24T10:00:00Z",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			req := &daemonv1.ConsoleRequest{Name: pos[0], Count: count.n, Follow: follow, Batch: true, Packed: true}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return usageError{err}
				}
				req.SinceNs = t.UnixNano()
			}
			f := cmd.Flags()
			if f.Changed("timestamps") && f.Changed("no-timestamps") && stamps == noStamps {
				return usageError{fmt.Errorf("--timestamps=%t and --no-timestamps=%t contradict each other; give one", stamps, noStamps)}
			}
			if f.Changed("no-timestamps") {
				stamps = !noStamps
			}
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			stream, err := c.API.Console(ctx, req)
			if err != nil {
				return err
			}
			// Output is formatted into one buffer and written once per
			// message, which carries many lines when the console is busy.
			w := bufio.NewWriterSize(a.out, 64<<10)
			enc := json.NewEncoder(w)
			var out []byte
			print := func(l *client.ConsoleLine) error {
				switch {
				case jsonOut:
					return enc.Encode(map[string]any{"time": ts(l.TimeNs), "text": l.Text, "truncated": l.Truncated, "dropped": l.Dropped})
				case l.Dropped > 0:
					out = fmt.Appendf(out, missedFormat+"\n", l.Dropped)
				case !stamps:
					out = append(append(out, l.Text...), '\n')
				default:
					out = time.Unix(0, l.TimeNs).UTC().AppendFormat(out, "2006-01-02T15:04:05.000Z")
					out = append(append(append(out, ' '), l.Text...), '\n')
				}
				return nil
			}
			var lines []client.ConsoleLine
			for {
				m, err := stream.Recv()
				if errors.Is(err, io.EOF) || (err != nil && ctx.Err() != nil) {
					return w.Flush()
				}
				if err != nil {
					_ = w.Flush()
					return err
				}
				clear(lines)
				if lines, err = client.AppendConsoleLines(lines[:0], m); err != nil {
					_ = w.Flush()
					return err
				}
				out = out[:0]
				for i := range lines {
					if err := print(&lines[i]); err != nil {
						return err
					}
				}
				if _, err := w.Write(out); err != nil {
					return err
				}
				if err := w.Flush(); err != nil {
					return err
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "only lines since `WHEN`: a duration ago (10m, 1h30m, 2d) or an RFC 3339 time")
	f.Var(&count, "count", "only the last N lines, or all")
	f.VarP(&count, "tail", "n", "the same as --count, as docker and kubectl spell it")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	f.BoolVar(&jsonOut, "json", false, "print one JSON object per line")
	f.BoolVarP(&stamps, "timestamps", "t", true, "start each line with the time petreld received it")
	f.BoolVar(&noStamps, "no-timestamps", false, "print the text only (--timestamps=false)")
	return cmd
}

func (a *app) eventsCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "events [PATH]",
		Short: "Stream lifecycle events of VMs (under PATH) and plugins",
		Long: `Print events as they happen until Ctrl-C: created, started, exited (with
code or signal), restarted, destroyed, failed, plugin-crashed and
plugin-restarted.`,
		Example: "  petrel events\n  petrel events team:web --json",
		Args:    args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			req := &daemonv1.EventsRequest{}
			if len(pos) == 1 {
				req.Path = pos[0]
			}
			stream, err := c.API.Events(ctx, req)
			if err != nil {
				return err
			}
			for {
				e, err := stream.Recv()
				if errors.Is(err, io.EOF) || (err != nil && ctx.Err() != nil) {
					return nil
				}
				if err != nil {
					return err
				}
				if jsonOut {
					if err := json.NewEncoder(a.out).Encode(map[string]any{"time": ts(e.GetTimeNs()), "type": e.GetType(), "name": e.GetName(),
						"exit_code": e.GetExitCode(), "exit_signal": e.GetExitSignal(), "message": e.GetMessage()}); err != nil {
						return err
					}
					continue
				}
				line := fmt.Sprintf("%s %-16s %s", time.Unix(0, e.GetTimeNs()).UTC().Format(time.RFC3339), e.GetType(), e.GetName())
				if e.GetMessage() != "" {
					line += "  " + e.GetMessage()
				}
				fmt.Fprintln(a.out, line)
			}
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print one JSON object per event")
	return cmd
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client's and the daemon's versions",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.out, "petrel %s\n", version)
			c, err := a.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			v, err := c.API.Version(ctx, &daemonv1.VersionRequest{})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "petreld %s (daemon API v%d)\n", v.GetVersion(), v.GetApiVersion())
			return nil
		},
	}
}

func (a *app) pluginsCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "plugins",
		Short: "List petreld's plugins and their health on this host",
		Long: `List petreld's plugins: for each its kind, version, health, restarts and
what it reports (a backend's tender or accelerator, what it misses), then
the plugin binaries no configuration block enables.

That list is the host owner's (petreld's own socket, or a certificate the
root CA signed). Anyone else, a delegate through petrel-endpoint, sees
petreld's health summary instead: each enabled plugin's name, kind,
health and, for a backend, the targets it runs (NAME KIND HEALTH TARGETS;
with --json, those four keys), and a line on stderr saying so.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, done, err := a.session()
			if err != nil {
				return err
			}
			defer done()
			res, err := client.ListPlugins(ctx, c.API)
			if err != nil {
				return err
			}
			if res.Summary {
				missing := "VERSION, RESTARTS and DETAILS"
				if jsonOut {
					missing = "version, path, restarts, description and attributes"
				}
				fmt.Fprintf(a.errw, "petrel: petreld's health summary: %s are reserved to the host's owner\n", missing)
				return pluginSummary.print(a.out, jsonOut, res.Plugins)
			}
			plugins := listing[*daemonv1.Plugin]{
				columns: []string{"NAME", "KIND", "VERSION", "HEALTH", "RESTARTS", "DETAILS"},
				row: func(p *daemonv1.Plugin) []string {
					var keys []string
					for k := range p.GetAttributes() {
						keys = append(keys, k)
					}
					sort.Strings(keys)
					details := p.GetDescription()
					for _, k := range keys {
						details += fmt.Sprintf(" %s=%s", k, p.GetAttributes()[k])
					}
					return []string{p.GetName(), p.GetKind(), p.GetVersion(), p.GetHealth(), fmt.Sprint(p.GetRestarts()), strings.TrimSpace(details)}
				},
				json: func(p *daemonv1.Plugin) (any, error) {
					return map[string]any{"name": p.GetName(), "kind": p.GetKind(), "version": p.GetVersion(),
						"path": p.GetPath(), "health": p.GetHealth(), "description": p.GetDescription(),
						"attributes": p.GetAttributes(), "restarts": p.GetRestarts()}, nil
				},
			}
			return plugins.print(a.out, jsonOut, res.Plugins)
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// pluginSummary is how `petrel plugins` shows petreld's health summary,
// which is what a caller other than the host's owner may read: only the
// columns the summary has, with each backend's targets, which tell a
// delegate what it may deploy there.
var pluginSummary = listing[*daemonv1.Plugin]{
	columns: []string{"NAME", "KIND", "HEALTH", "TARGETS"},
	row: func(p *daemonv1.Plugin) []string {
		return []string{p.GetName(), p.GetKind(), p.GetHealth(), strings.Join(p.GetTargets(), ",")}
	},
	json: func(p *daemonv1.Plugin) (any, error) {
		targets := p.GetTargets()
		if targets == nil {
			targets = []string{}
		}
		return map[string]any{"name": p.GetName(), "kind": p.GetKind(), "health": p.GetHealth(), "targets": targets}, nil
	},
}
