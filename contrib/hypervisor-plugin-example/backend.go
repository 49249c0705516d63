package main

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// name is the backend's name in petreld's configuration.
const name = "command"

// Settings keys of the backend's configuration block.
const (
	// settingProgram is the hypervisor program, a path or a name on
	// PATH. It is required.
	settingProgram = "program"
	// settingShim is the petrel-shim binary (default: beside the plugin,
	// then PATH).
	settingShim = "shim"
)

// What the backend's guests may ask for.
const (
	// target is the kind of guest the backend runs, as Capabilities and
	// Validate name it (`petrel doctor` lists it).
	target = "elf"
	// minMemoryMB and maxMemoryMB bound --memory.
	minMemoryMB, maxMemoryMB = 16, 16384
	// maxCmdline is the longest command line, the guest's arguments
	// joined with single spaces, that a guest takes: Linux's on x86 holds
	// 2048 bytes with its terminating NUL.
	maxCmdline = 2047
)

// backend implements hypervisor.Hypervisor. Like every backend it must be
// safe for concurrent calls, and keep nothing that it cannot find again
// from a VM's id: a crashed or upgraded plugin loses nothing.
type backend struct {
	// ShimBackend provides Recover, Wait, Stop (SIGTERM, then SIGKILL),
	// Destroy, Stats, StatsBatch and Console, and the run directories.
	hypervisor.ShimBackend
	version string

	mu        sync.Mutex
	program   string // settingProgram
	shim      string // settingShim
	pluginDir string
}

// newBackend returns an unconfigured backend; petreld configures it
// through Configure.
func newBackend(version string) *backend { return &backend{version: version} }

var _ hypervisor.Hypervisor = (*backend)(nil)

// Info identifies the plugin.
func (b *backend) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_HYPERVISOR, Name: name, Version: b.version,
		ApiVersions: []uint32{petrelplugin.ProtocolVersion}}, nil
}

// Configure takes the settings of the backend's block in petreld's
// configuration, refusing unknown ones so that a misspelt key does not go
// unnoticed, and the run directory under which each VM gets its own.
func (b *backend) Configure(_ context.Context, req *pluginv1.ConfigureRequest) error {
	s := req.GetSettings()
	for k := range s {
		if k != settingProgram && k != settingShim {
			return fmt.Errorf("%w: backend %s: unknown setting %q (known: %s, %s)", hypervisor.ErrInvalid, name, k, settingProgram, settingShim)
		}
	}
	if s[settingProgram] == "" {
		return fmt.Errorf("%w: backend %s: setting %s (the hypervisor program) is required", hypervisor.ErrInvalid, name, settingProgram)
	}
	if err := b.SetRunDir(req.GetRunDir()); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.program, b.shim, b.pluginDir = s[settingProgram], s[settingShim], req.GetPluginDir()
	return nil
}

// tools finds the hypervisor program and the shim. It looks again at
// every call, which costs little, so that what the operator installs
// after petreld started is found without a restart.
func (b *backend) tools() (program, shim string, programErr, shimErr error) {
	b.mu.Lock()
	prog, sh, dir := b.program, b.shim, b.pluginDir
	b.mu.Unlock()
	if prog == "" {
		return "", "", fmt.Errorf("%w: backend %s not configured", hypervisor.ErrUnavailable, name), nil
	}
	program, programErr = exec.LookPath(prog)
	if programErr != nil {
		programErr = fmt.Errorf("hypervisor program %s: %w", prog, programErr)
	}
	shim, shimErr = hypervisor.FindShim(sh, dir)
	return program, shim, programErr, shimErr
}

// Fingerprint reports whether VMs can run here and, for each thing
// missing, the setting or command that provides it: `petrel doctor`
// shows them.
func (b *backend) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	program, shim, programErr, shimErr := b.tools()
	attrs := map[string]string{"target": target}
	var problems []*pluginv1.Problem
	if programErr != nil {
		problems = append(problems, &pluginv1.Problem{Description: programErr.Error(),
			Fix: fmt.Sprintf("install the hypervisor, or set settings.%s in petreld's %q backend block to its path", settingProgram, name)})
	} else {
		attrs["program"] = program
	}
	if shimErr != nil {
		b.mu.Lock()
		dir := b.pluginDir
		b.mu.Unlock()
		problems = append(problems, &pluginv1.Problem{Description: shimErr.Error(),
			Fix: fmt.Sprintf("install petrel-shim in %s (or set settings.%s in petreld's %q backend block)", dir, settingShim, name)})
	} else {
		attrs["shim"] = shim
	}
	if len(problems) > 0 {
		var desc []string
		for _, p := range problems {
			desc = append(desc, p.GetDescription())
		}
		return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_UNHEALTHY, Description: strings.Join(desc, "; "),
			Attributes: attrs, Problems: problems}, nil
	}
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY, Description: "ready", Attributes: attrs}, nil
}

// Capabilities tells petreld what it may ask for. The shim pins and
// confines the VM's process to CPUs, so the backend supports both.
func (b *backend) Capabilities(context.Context) (*pluginv1.HypervisorCapabilities, error) {
	return &pluginv1.HypervisorCapabilities{Targets: []string{target}, SupportsNet: true, SupportsBlock: true,
		SupportsCpuPinning: true, ConfinesCpus: true, MinMemoryMb: minMemoryMB, MaxMemoryMb: maxMemoryMB}, nil
}

// Validate checks spec without starting anything. A spec that can never
// run is a refusal with a reason (the user's mistake); a host that cannot
// run it is an error.
func (b *backend) Validate(_ context.Context, spec *pluginv1.VMSpec) (*pluginv1.ValidateResponse, error) {
	if reason := validate(spec); reason != "" {
		return &pluginv1.ValidateResponse{Reason: reason}, nil
	}
	return &pluginv1.ValidateResponse{Ok: true, Target: target}, nil
}

// validate returns why spec cannot run, or "" when it can.
func validate(spec *pluginv1.VMSpec) string {
	if !hypervisor.ValidID(spec.GetId()) {
		return fmt.Sprintf("VM id %q is not of the form [a-z0-9-]{1,64}", spec.GetId())
	}
	if m := spec.GetMemoryMb(); m < minMemoryMB || m > maxMemoryMB {
		return fmt.Sprintf("memory %d MB is outside what backend %s accepts (%d-%d MB)", m, name, minMemoryMB, maxMemoryMB)
	}
	if err := checkKernel(spec.GetImagePath()); err != nil {
		return "image: " + err.Error()
	}
	if spec.GetInitrdPath() != "" || spec.GetKernelCmdline() != "" {
		return fmt.Sprintf("backend %s takes no initrd or kernel command line: give the guest arguments instead", name)
	}
	n := 0
	for i, a := range spec.GetArgs() {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Sprintf("argument %d contains a NUL byte, which a command line cannot carry", i+1)
		}
		n += len(a) + min(i, 1)
	}
	if n > maxCmdline {
		return fmt.Sprintf("the guest's arguments take %d bytes joined with spaces; its command line holds at most %d", n, maxCmdline)
	}
	seen := map[string]bool{}
	for _, d := range spec.GetNets() {
		if reason := checkDevice("net", d.GetName(), seen, d.GetHostIf(), d.GetMac()); reason != "" {
			return reason
		}
	}
	for _, d := range spec.GetBlocks() {
		if reason := checkDevice("block", d.GetName(), seen, d.GetPath()); reason != "" {
			return reason
		}
		if s := d.GetSectorSize(); s != 0 && s != 512 {
			return fmt.Sprintf("block device %q: sector size %d; backend %s has 512-byte sectors only", d.GetName(), s, name)
		}
	}
	return ""
}

// checkDevice returns why device dev of kind ("net" or "block") cannot
// be given to the hypervisor, or "": names are unique among the VM's
// devices, and no field holds the comma that separates them in the
// option.
func checkDevice(kind, dev string, seen map[string]bool, fields ...string) string {
	if seen[dev] {
		return fmt.Sprintf("device %q configured twice", dev)
	}
	seen[dev] = true
	for _, f := range append(fields, dev) {
		if strings.Contains(f, ",") {
			return fmt.Sprintf("%s device %q: %q contains a comma, which separates the fields of --%s", kind, dev, f, kind)
		}
	}
	return ""
}

// machines maps Go's architecture names to the ELF machines of kernels
// this host runs.
var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "riscv64": elf.EM_RISCV}

// checkKernel checks that path is an ELF executable for this host's
// machine, and not a Solo5 unikernel (which the hvt, spt and qemu
// backends run).
func checkKernel(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return fmt.Errorf("not an ELF kernel: %w", err)
	}
	if want, ok := machines[runtime.GOARCH]; !ok || ef.Machine != want {
		return fmt.Errorf("a kernel for %s, but this host is %s", ef.Machine, runtime.GOARCH)
	}
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return fmt.Errorf("ELF file of type %s, not an executable kernel", ef.Type)
	}
	if _, err := solo5.Read(f); err == nil {
		return errors.New("a Solo5 unikernel: run it with the hvt, spt or qemu backend")
	}
	return nil
}

// commandLine is the hypervisor's command line for spec.
func commandLine(program string, spec *pluginv1.VMSpec) []string {
	argv := []string{program, "--memory=" + strconv.FormatUint(uint64(spec.GetMemoryMb()), 10)}
	for _, n := range spec.GetNets() {
		a := "--net=" + n.GetName() + "," + n.GetHostIf()
		if n.GetMac() != "" {
			a += "," + n.GetMac()
		}
		argv = append(argv, a)
	}
	for _, d := range spec.GetBlocks() {
		argv = append(argv, "--block="+d.GetName()+","+d.GetPath())
	}
	argv = append(argv, "--", spec.GetImagePath())
	return append(argv, spec.GetArgs()...)
}

// Start launches the VM and returns once its process runs. StartShim
// makes it idempotent by id, as petreld needs: a Start repeated after a
// crash of the plugin finds the run the first one began.
func (b *backend) Start(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.Handle, error) {
	if reason := validate(spec); reason != "" {
		return nil, fmt.Errorf("%w: %s", hypervisor.ErrInvalid, reason)
	}
	program, shim, programErr, shimErr := b.tools()
	if err := errors.Join(programErr, shimErr); err != nil {
		return nil, fmt.Errorf("%w: backend %s: %v", hypervisor.ErrUnavailable, name, err)
	}
	argv := commandLine(program, spec)
	p, _, err := b.StartShim(ctx, spec, hypervisor.ShimLaunch{Shim: shim, Argv: argv})
	if err != nil {
		return nil, err
	}
	// The run directory, found again from the id, is all the backend
	// needs of a VM later: the handle carries no state of its own.
	return hypervisor.ShimHandle(spec.GetId(), nil, p, argv), nil
}
