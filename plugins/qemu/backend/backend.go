// Package backend is Petrel's QEMU hypervisor backend: it runs Solo5
// virtio unikernels and Linux guests under qemu-system-x86_64, with KVM
// where KVM can run the guest and TCG (software emulation) elsewhere.
//
// Like the Solo5 tender backends it is stateless: every VM lives in its
// own directory <run_dir>/<id> under a per-VM shim (sdk/shim) that is
// QEMU's parent and captures its serial console, and everything the
// backend needs later (the guest kind, the accelerator, QEMU's QMP socket,
// a recorded failure) is in that directory. Any instance of the plugin can
// therefore serve any VM by its id. hypervisor.ShimBackend provides what
// it shares with every such backend (run directories, Stats, Console);
// Start, Stop, Recover and Destroy add QEMU's part to the base's, and
// Wait decodes QEMU's exit status.
//
// QEMU does not always end when its guest fails: a KVM internal error (an
// instruction the host's KVM cannot emulate, common with the software
// kvm_pvm) or a kernel panic reported through pvpanic leave QEMU running
// with a paused guest. A monitor goroutine per running VM polls QMP
// query-status; when the guest is in such a state it records the reason in
// the VM directory and kills QEMU, and Wait reports exit code 1 with that
// reason as the message.
package backend

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/kvm"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Name is the backend's name in petreld's configuration.
const Name = "qemu"

// Settings keys understood in the backend's configuration block.
const (
	// SettingQEMU is the QEMU binary, a path or a name on PATH
	// (default qemu-system-x86_64).
	SettingQEMU = "qemu"
	// SettingShim is the petrel-shim path (default: beside the plugin,
	// then PATH).
	SettingShim = "shim"
	// SettingLinuxAccel chooses the accelerator of Linux guests: "auto"
	// (default: KVM when it works and is not kvm_pvm, else TCG), "kvm"
	// or "tcg".
	SettingLinuxAccel = "linux_accel"
	// SettingUnikernelAccel chooses the accelerator of Solo5 virtio
	// unikernels: "auto" (default: KVM when it works, else TCG), "kvm"
	// or "tcg".
	SettingUnikernelAccel = "unikernel_accel"
	// SettingMachine is the QEMU machine type, a PC type ("q35", the
	// default, "pc", or a versioned one such as "pc-q35-7.2"): the
	// guest's devices are PCI devices.
	SettingMachine = "machine"
	// SettingFirmware is "auto" (default: qboot when installed, which
	// boots -kernel guests much faster than SeaBIOS, except for Solo5
	// unikernels with devices, which need the PCI resources SeaBIOS
	// assigns and qboot does not), "qboot", "seabios" (QEMU's default)
	// or a firmware path.
	SettingFirmware = "firmware"
	// SettingKVMCPU is the -cpu model under KVM (default "host", with
	// "-arch-capabilities" added on kvm_pvm, where QEMU aborts setting
	// that MSR otherwise).
	SettingKVMCPU = "kvm_cpu"
	// SettingTCGCPU is the -cpu model under TCG (default: QEMU's).
	SettingTCGCPU = "tcg_cpu"
	// SettingSandbox is "auto" (default: QEMU's seccomp sandbox when
	// this QEMU supports it), "on" or "off".
	SettingSandbox = "sandbox"
	// SettingExtraArgs are further QEMU arguments, split on white space,
	// appended to every command line.
	SettingExtraArgs = "extra_args"
)

var knownSettings = []string{SettingQEMU, SettingShim, SettingLinuxAccel, SettingUnikernelAccel, SettingMachine,
	SettingFirmware, SettingKVMCPU, SettingTCGCPU, SettingSandbox, SettingExtraArgs}

// Memory bounds in MB. Linux kernels below LinuxMinMemoryMB triple-fault
// early and QEMU then exits 0 as if the guest had powered off, so they are
// refused up front.
const (
	MinMemoryMB      = 16
	LinuxMinMemoryMB = 128
)

// settings are the parsed configuration.
type settings struct {
	qemu, shim               string
	linuxAccel, unikernelAcc string
	machine, firmware        string
	kvmCPU, tcgCPU           string
	kvmCPUSet                bool
	sandbox                  string
	extra                    []string
}

var machineRE = regexp.MustCompile(`^(q35|pc|pc-(q35|i440fx)-[0-9.]+)$`)

// parseSettings checks the settings map and fills in defaults.
func parseSettings(m map[string]string) (settings, error) {
	for k := range m {
		known := false
		for _, s := range knownSettings {
			known = known || k == s
		}
		if !known {
			return settings{}, fmt.Errorf("unknown setting %q (known: %s)", k, strings.Join(knownSettings, ", "))
		}
	}
	get := func(k, def string) string {
		if v := strings.TrimSpace(m[k]); v != "" {
			return v
		}
		return def
	}
	s := settings{
		qemu: get(SettingQEMU, "qemu-system-x86_64"), shim: get(SettingShim, ""),
		linuxAccel: get(SettingLinuxAccel, "auto"), unikernelAcc: get(SettingUnikernelAccel, "auto"),
		machine: get(SettingMachine, "q35"), firmware: get(SettingFirmware, "auto"),
		kvmCPU: get(SettingKVMCPU, "host"), tcgCPU: get(SettingTCGCPU, ""),
		kvmCPUSet: strings.TrimSpace(m[SettingKVMCPU]) != "",
		sandbox:   get(SettingSandbox, "auto"), extra: strings.Fields(m[SettingExtraArgs]),
	}
	for k, v := range map[string]string{SettingLinuxAccel: s.linuxAccel, SettingUnikernelAccel: s.unikernelAcc} {
		if v != "auto" && v != accelKVM && v != accelTCG {
			return settings{}, fmt.Errorf("setting %s = %q: use auto, kvm or tcg", k, v)
		}
	}
	if !machineRE.MatchString(s.machine) {
		return settings{}, fmt.Errorf("setting %s = %q: use a PC machine type (q35, pc, pc-q35-X.Y or pc-i440fx-X.Y)", SettingMachine, s.machine)
	}
	if s.sandbox != "auto" && s.sandbox != "on" && s.sandbox != "off" {
		return settings{}, fmt.Errorf("setting %s = %q: use auto, on or off", SettingSandbox, s.sandbox)
	}
	return s, nil
}

// Backend implements hypervisor.Hypervisor with QEMU.
type Backend struct {
	hypervisor.ShimBackend
	version string

	mu        sync.Mutex
	cfg       settings
	pluginDir string
	host      host
	sandbox   bool
	firmware  string
	fwErr     error

	monMu    sync.Mutex
	monitors map[string]*monitor
	poll     time.Duration
}

var _ hypervisor.Hypervisor = (*Backend)(nil)

// New returns an unconfigured backend; petreld configures it through
// Configure.
func New(version string) *Backend {
	return &Backend{version: version, monitors: map[string]*monitor{}, poll: defaultPoll}
}

// Close stops the failure monitors of this backend instance; the VMs keep
// running under their shims, and another instance watches them again
// from Recover or Wait. It is for programs and tests that embed the
// backend and outlive it.
func (b *Backend) Close() {
	b.monMu.Lock()
	mons := make([]*monitor, 0, len(b.monitors))
	for _, m := range b.monitors {
		mons = append(mons, m)
	}
	b.monMu.Unlock()
	for _, m := range mons {
		m.stop()
	}
}

// Info identifies the plugin.
func (b *Backend) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_HYPERVISOR, Name: Name, Version: b.version, ApiVersions: []uint32{petrelplugin.ProtocolVersion}}, nil
}

// Configure records settings and probes the host: QEMU, its version,
// whether KVM works with it and whether it is kvm_pvm, the firmware and
// the shim.
func (b *Backend) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error {
	cfg, err := parseSettings(req.GetSettings())
	if err != nil {
		return fmt.Errorf("%w: backend %s: %v", hypervisor.ErrInvalid, Name, err)
	}
	if err := b.SetRunDir(req.GetRunDir()); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfg = cfg
	b.pluginDir = req.GetPluginDir()
	b.resolveLocked(ctx)
	return nil
}

// resolveLocked probes the host for the current settings.
func (b *Backend) resolveLocked(ctx context.Context) {
	h := host{pvm: kvmPVM(), qboot: findQboot()}
	h.shim, h.shimErr = hypervisor.FindShim(b.cfg.shim, b.pluginDir)
	if p, err := exec.LookPath(b.cfg.qemu); err != nil {
		h.qemuErr = fmt.Errorf("QEMU %s not found (install Debian's qemu-system-x86 or set settings.%s): %w", b.cfg.qemu, SettingQEMU, err)
	} else {
		h.qemu = p
		h.version, h.qemuErr = qemuVersion(ctx, p)
	}
	if h.qemuErr == nil {
		h.kvmErr = probeKVM(ctx, h.qemu)
	} else {
		h.kvmErr = h.qemuErr
	}
	b.host = h
	b.firmware, b.fwErr = b.chooseFirmwareLocked()
	switch b.cfg.sandbox {
	case "on":
		b.sandbox = true
	case "off":
		b.sandbox = false
	default:
		b.sandbox = h.qemuErr == nil && probeSandbox(ctx, h.qemu) == nil
	}
}

// chooseFirmwareLocked resolves the firmware setting to a -bios file ("" for
// QEMU's default).
func (b *Backend) chooseFirmwareLocked() (string, error) {
	switch fw := b.cfg.firmware; fw {
	case "auto":
		return b.host.qboot, nil
	case "seabios", "default":
		return "", nil
	case "qboot":
		if b.host.qboot == "" {
			return "", fmt.Errorf("firmware qboot not found in %s", strings.Join(qemuDataDirs, ", "))
		}
		return b.host.qboot, nil
	default:
		if _, err := os.Stat(fw); err != nil {
			return "", fmt.Errorf("firmware: %w", err)
		}
		return fw, nil
	}
}

// view is a consistent copy of the configuration and the host facts.
type view struct {
	cfg      settings
	host     host
	firmware string // -bios file, "" for QEMU's default
	fwErr    error
	sandbox  bool
	// pluginDir is where petreld found the plugin (and looks for the shim).
	pluginDir string
}

// snapshot returns the configuration and host facts, probing again first
// when something was missing (the operator may have installed it since).
func (b *Backend) snapshot(ctx context.Context) (view, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.RunDir() == "" {
		return view{}, fmt.Errorf("%w: backend not configured", hypervisor.ErrUnavailable)
	}
	if b.host.qemuErr != nil || b.host.shimErr != nil || b.fwErr != nil {
		b.resolveLocked(ctx)
	}
	return view{cfg: b.cfg, host: b.host, firmware: b.firmware, fwErr: b.fwErr, sandbox: b.sandbox, pluginDir: b.pluginDir}, nil
}

// chooseAccel picks the accelerator for a guest of target, and a warning
// for the console when the guest runs under TCG.
func chooseAccel(cfg settings, h host, target string) (accel, warning string, err error) {
	setting, key := cfg.unikernelAcc, SettingUnikernelAccel
	if target == TargetLinux {
		setting, key = cfg.linuxAccel, SettingLinuxAccel
	}
	switch setting {
	case accelKVM:
		if h.kvmErr != nil {
			return "", "", fmt.Errorf("%s = kvm, but %v", key, h.kvmErr)
		}
		return accelKVM, "", nil
	case accelTCG:
		return accelTCG, fmt.Sprintf("running under TCG, QEMU's software emulation (slow), because %s = tcg", key), nil
	}
	switch {
	case h.kvmErr != nil:
		return accelTCG, fmt.Sprintf("running under TCG, QEMU's software emulation (slow), because %v", h.kvmErr), nil
	case target == TargetLinux && h.pvm:
		return accelTCG, fmt.Sprintf("running under TCG, QEMU's software emulation (slow): this host's KVM is kvm_pvm, which cannot run Linux kernels (set %s = kvm to try anyway)", key), nil
	}
	return accelKVM, "", nil
}

// cpuModel is the -cpu argument for accel.
func cpuModel(cfg settings, h host, accel string) string {
	if accel == accelTCG {
		return cfg.tcgCPU
	}
	if h.pvm && !cfg.kvmCPUSet {
		return cfg.kvmCPU + ",-arch-capabilities"
	}
	return cfg.kvmCPU
}

// Fingerprint reports whether VMs can run, QEMU's version, whether KVM
// works with it, whether it is kvm_pvm and which accelerator each kind of
// guest gets; each thing missing is a problem with the one command or
// setting that provides it (KVM, when guests fall back to TCG, too).
func (b *Backend) Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error) {
	v, err := b.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	cfg, h, fw, fwErr := v.cfg, v.host, v.firmware, v.fwErr
	attrs := map[string]string{
		"targets": TargetVirtio + "," + TargetLinux, "machine": cfg.machine,
		"kvm.pvm": strconv.FormatBool(h.pvm), "sandbox": strconv.FormatBool(v.sandbox),
	}
	var problems, warnings []string
	var fixes []*pluginv1.Problem
	if h.qemuErr != nil {
		problems = append(problems, h.qemuErr.Error())
		fix := ""
		if h.qemu == "" { // not found, rather than found and broken
			fix = installQEMU()
		}
		fixes = append(fixes, &pluginv1.Problem{Description: h.qemuErr.Error(), Fix: fix})
	} else {
		attrs["qemu"] = h.qemu
		attrs["qemu.version"] = h.version
	}
	if h.shimErr != nil {
		problems = append(problems, h.shimErr.Error())
		fixes = append(fixes, &pluginv1.Problem{Description: h.shimErr.Error(),
			Fix: fmt.Sprintf("install petrel-shim in %s (or set settings.%s in the \"qemu\" backend block)", v.pluginDir, SettingShim)})
	} else {
		attrs["shim"] = h.shim
	}
	if fwErr != nil {
		problems = append(problems, fwErr.Error())
		fixes = append(fixes, &pluginv1.Problem{Description: fwErr.Error(),
			Fix: fmt.Sprintf("set settings.%s = \"auto\" in the \"qemu\" backend block", SettingFirmware)})
	} else if fw != "" {
		attrs["firmware"] = fw
	} else {
		attrs["firmware"] = "default"
	}
	if h.kvmErr != nil {
		attrs["kvm"] = "unusable"
		attrs["kvm.error"] = h.kvmErr.Error()
		if h.qemuErr == nil {
			fixes = append(fixes, &pluginv1.Problem{Description: h.kvmErr.Error() + ": guests run under TCG, QEMU's software emulation (slow)", Fix: kvm.Fix(h.kvmErr)})
		}
	} else {
		attrs["kvm"] = "usable"
	}
	if h.qemuErr == nil {
		for _, t := range []string{TargetVirtio, TargetLinux} {
			accel, warn, err := chooseAccel(cfg, h, t)
			if err != nil {
				problems = append(problems, err.Error())
				fixes = append(fixes, &pluginv1.Problem{Description: err.Error(), Fix: kvm.Fix(h.kvmErr)})
				continue
			}
			attrs["accel."+t] = accel
			if warn != "" {
				warnings = append(warnings, t+" guests: "+warn)
			}
		}
	}
	if len(problems) > 0 {
		return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_UNHEALTHY, Description: strings.Join(problems, "; "),
			Attributes: attrs, Problems: fixes}, nil
	}
	desc := "ready"
	if len(warnings) > 0 {
		desc = "ready; " + strings.Join(warnings, "; ")
	}
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY, Description: desc, Attributes: attrs, Problems: fixes}, nil
}

// installQEMU is the command that installs QEMU for x86-64 guests on
// this host's system.
func installQEMU() string {
	if runtime.GOOS == "freebsd" {
		return "pkg install qemu"
	}
	return "apt install qemu-system-x86"
}

// Capabilities describes the backend.
func (b *Backend) Capabilities(context.Context) (*pluginv1.HypervisorCapabilities, error) {
	return &pluginv1.HypervisorCapabilities{Targets: []string{TargetVirtio, TargetLinux}, SupportsNet: true, SupportsBlock: true,
		SupportsCpuPinning: true, ConfinesCpus: true, MinMemoryMb: MinMemoryMB, MaxMemoryMb: maxMemoryMB()}, nil
}
