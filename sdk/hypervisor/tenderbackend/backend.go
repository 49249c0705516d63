// Package tenderbackend is a complete hypervisor backend for Solo5
// tenders (solo5-hvt, solo5-spt, or a built-in tender with the same
// command line). Petrel's hvt and spt plugins are this package with a
// different Config, and third parties can build backends for other
// tenders the same way.
//
// The backend is stateless: every VM lives in its own directory
// <run_dir>/<id> under a per-VM shim (sdk/shim), so any instance of the
// plugin can serve any VM by its id, and a crashed or upgraded plugin
// loses nothing. What every such backend shares (run directories, Recover,
// Wait, Stop, Destroy, Stats and Console) is hypervisor.ShimBackend; this
// package adds what is particular to Solo5 tenders: finding the tender
// and its ABI version, checking images against it, and its command line.
package tenderbackend

import (
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/petrel-vmm/petrel/sdk/shim"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// Config describes one kind of tender.
type Config struct {
	// Name is the backend name, e.g. "hvt".
	Name string
	// Version is the plugin's version.
	Version string
	// Target is the Solo5 target the tender runs.
	Target solo5.Target
	// DefaultTender is the tender looked up on PATH when settings name
	// none, e.g. "solo5-hvt".
	DefaultTender string
	// NeedKVM makes Fingerprint, Validate and Start check that KVM is
	// usable (on Linux, unless the needs_kvm setting is "false"), so that
	// a host without it refuses at once instead of starting a tender that
	// cannot run.
	NeedKVM bool
	// MinMemoryMB and MaxMemoryMB bound --mem.
	MinMemoryMB, MaxMemoryMB uint32
	// Builtin, when not nil, returns the command (argv prefix) of a
	// built-in tender used with engine "builtin", or with "auto" when no
	// external tender is found.
	Builtin func() ([]string, error)
}

// HVT returns the Config of Solo5's hvt tender.
func HVT(version string, builtin func() ([]string, error)) Config {
	return Config{Name: "hvt", Version: version, Target: solo5.TargetHVT, DefaultTender: "solo5-hvt",
		NeedKVM: true, MinMemoryMB: 4, MaxMemoryMB: 4096, Builtin: builtin}
}

// SPT returns the Config of Solo5's spt tender. Like HVT it takes the
// command of a built-in tender, so that hosts without Solo5 installed (and
// without KVM, which spt does not need) still run spt unikernels.
func SPT(version string, builtin func() ([]string, error)) Config {
	return Config{Name: "spt", Version: version, Target: solo5.TargetSPT, DefaultTender: "solo5-spt",
		MinMemoryMB: 4, MaxMemoryMB: 4096, Builtin: builtin}
}

// Settings keys understood in the backend's configuration block.
const (
	// SettingTender is the external tender's path or name on PATH.
	SettingTender = "tender"
	// SettingEngine is "auto", "builtin" or "external" (also spelled as the
	// default tender's name, e.g. "solo5-hvt").
	SettingEngine = "engine"
	// SettingShim is the petrel-shim path.
	SettingShim = "shim"
	// SettingNeedsKVM, "false", tells a backend whose Config needs KVM that
	// its tender does not (a tender for another hypervisor, or a test
	// double); the default is "true".
	SettingNeedsKVM = "needs_kvm"
	// SettingSpareShim, "false", makes every create start its shim afresh
	// instead of keeping a spare shim waiting (shim.Launcher), which saves
	// the memory of one idle shim at the cost of a slower create; the
	// default is "true".
	SettingSpareShim = "spare_shim"
)

// Backend implements hypervisor.Hypervisor for a Solo5 tender.
type Backend struct {
	hypervisor.ShimBackend
	cfg Config

	mu        sync.Mutex
	settings  map[string]string
	pluginDir string
	tender    []string // argv prefix of the tender
	tenderErr error
	abi       uint32
	shimPath  string
	shimErr   error

	// launcher starts shims, keeping a spare one after the first create
	// (unless settings say otherwise); its spare ends with the plugin.
	launcher *shim.Launcher
}

// New returns a backend for cfg; petreld configures it through Configure.
func New(cfg Config) *Backend {
	return &Backend{cfg: cfg, settings: map[string]string{}, launcher: shim.NewLauncher()}
}

// Close stops the backend's spare shim, if it has one; VMs keep running.
// A plugin need not call it: the spare exits with the plugin's process.
func (b *Backend) Close() error { return b.launcher.Close() }

var _ hypervisor.Hypervisor = (*Backend)(nil)

// Info identifies the plugin.
func (b *Backend) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_HYPERVISOR, Name: b.cfg.Name, Version: b.cfg.Version, ApiVersions: []uint32{petrelplugin.ProtocolVersion}}, nil
}

// Configure records settings and resolves the tender and the shim.
func (b *Backend) Configure(_ context.Context, req *pluginv1.ConfigureRequest) error {
	for k := range req.GetSettings() {
		switch k {
		case SettingTender, SettingEngine, SettingShim:
		case SettingNeedsKVM, SettingSpareShim:
			if v := req.GetSettings()[k]; v != "true" && v != "false" {
				return fmt.Errorf("%w: backend %s: setting %s = %q: use true or false", hypervisor.ErrInvalid, b.cfg.Name, k, v)
			}
		default:
			return fmt.Errorf("%w: backend %s: unknown setting %q (known: tender, engine, shim, needs_kvm, spare_shim)", hypervisor.ErrInvalid, b.cfg.Name, k)
		}
	}
	if err := b.SetRunDir(req.GetRunDir()); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.settings = req.GetSettings()
	b.pluginDir = req.GetPluginDir()
	b.resolveLocked()
	return nil
}

// resolveLocked finds the tender, its ABI version and the shim.
func (b *Backend) resolveLocked() {
	b.tender, b.abi, b.tenderErr = b.findTender()
	b.shimPath, b.shimErr = hypervisor.FindShim(b.settings[SettingShim], b.pluginDir)
}

func (b *Backend) findTender() ([]string, uint32, error) {
	engine := b.settings[SettingEngine]
	if engine == "" {
		engine = "auto"
	}
	name := b.settings[SettingTender]
	if name == "" {
		name = b.cfg.DefaultTender
	}
	var argv []string
	switch engine {
	case "builtin":
		if b.cfg.Builtin == nil {
			return nil, 0, fmt.Errorf("backend %s has no built-in tender", b.cfg.Name)
		}
		cmd, err := b.cfg.Builtin()
		if err != nil {
			return nil, 0, fmt.Errorf("built-in tender: %w", err)
		}
		argv = cmd
	case "auto", "external", b.cfg.DefaultTender:
		path, err := exec.LookPath(name)
		switch {
		case err == nil:
			argv = []string{path}
		case engine == "auto" && b.cfg.Builtin != nil:
			cmd, berr := b.cfg.Builtin()
			if berr != nil {
				return nil, 0, fmt.Errorf("%s not found and built-in tender unusable: %w", name, berr)
			}
			argv = cmd
		default:
			return nil, 0, fmt.Errorf("tender %s not found (install Solo5's %s or set settings.tender in the %q backend block)", name, b.cfg.DefaultTender, b.cfg.Name)
		}
	default:
		return nil, 0, fmt.Errorf("unknown engine %q (use auto, builtin or external)", engine)
	}
	abi, err := tenderABI(argv)
	if err != nil {
		return nil, 0, err
	}
	return argv, abi, nil
}

var abiRE = regexp.MustCompile(`ABI version (\d+)`)

// tenderABI runs TENDER --version and reads "ABI version N" from its
// output (Solo5 tenders print it on stderr).
func tenderABI(argv []string) (uint32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], "--version")...)
	out, _ := cmd.CombinedOutput()
	m := abiRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s --version did not report an ABI version (output %q)", strings.Join(argv, " "), strings.TrimSpace(string(out)))
	}
	v, err := strconv.ParseUint(string(m[1]), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("tender ABI version %q: %w", m[1], err)
	}
	return uint32(v), nil
}

// Fingerprint reports whether VMs can run, and for each thing missing the
// one command or setting that provides it.
func (b *Backend) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tenderErr != nil || b.shimErr != nil {
		b.resolveLocked() // the operator may have installed something since
	}
	attrs := map[string]string{"target": b.cfg.Target.String()}
	var problems []*pluginv1.Problem
	if b.tenderErr != nil {
		problems = append(problems, &pluginv1.Problem{Description: b.tenderErr.Error(), Fix: b.tenderFixLocked()})
	} else {
		attrs["tender"] = strings.Join(b.tender, " ")
		attrs["tender.abi_version"] = strconv.FormatUint(uint64(b.abi), 10)
	}
	if b.shimErr != nil {
		problems = append(problems, &pluginv1.Problem{Description: b.shimErr.Error(),
			Fix: fmt.Sprintf("install petrel-shim in %s (or set settings.%s in the %q backend block)", b.pluginDir, SettingShim, b.cfg.Name)})
	} else {
		attrs["shim"] = b.shimPath
	}
	if b.needsKVMLocked() {
		if err := kvm.Probe(); err != nil {
			problems = append(problems, &pluginv1.Problem{Description: err.Error(), Fix: kvm.Fix(err)})
			attrs["kvm"] = "unusable"
		} else {
			attrs["kvm"] = "usable"
		}
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

// tenderFixLocked says how to get a tender when none was found: the
// built-in one where the backend has it, else Solo5's. Caller holds b.mu.
func (b *Backend) tenderFixLocked() string {
	if b.cfg.Builtin != nil {
		return fmt.Sprintf("set settings = { %s = \"builtin\" } in petreld's %q backend block (Petrel's built-in tender)", SettingEngine, b.cfg.Name)
	}
	return fmt.Sprintf("install Solo5's %s, or set settings.%s in petreld's %q backend block", b.cfg.DefaultTender, SettingTender, b.cfg.Name)
}

// needsKVM reports whether VMs of this backend need a usable KVM here:
// Linux hosts only (hvt on FreeBSD runs on vmm), and not when the
// needs_kvm setting says the tender does without.
func (b *Backend) needsKVM() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.needsKVMLocked()
}

// needsKVMLocked is needsKVM with b.mu held.
func (b *Backend) needsKVMLocked() bool {
	return b.cfg.NeedKVM && runtime.GOOS == "linux" && b.settings[SettingNeedsKVM] != "false"
}

// Capabilities describes the backend.
func (b *Backend) Capabilities(context.Context) (*pluginv1.HypervisorCapabilities, error) {
	return &pluginv1.HypervisorCapabilities{Targets: []string{b.cfg.Target.String()}, SupportsNet: true, SupportsBlock: true,
		SupportsCpuPinning: true, ConfinesCpus: true, MinMemoryMb: b.cfg.MinMemoryMB, MaxMemoryMb: b.cfg.MaxMemoryMB}, nil
}

// Validate checks spec against the image and the tender.
func (b *Backend) Validate(_ context.Context, spec *pluginv1.VMSpec) (*pluginv1.ValidateResponse, error) {
	res, _, err := b.validate(spec)
	return res, err
}

func refuse(format string, args ...any) (*pluginv1.ValidateResponse, []string, error) {
	return &pluginv1.ValidateResponse{Reason: fmt.Sprintf(format, args...)}, nil, nil
}

// validate returns the verdict and, when ok, the tender argv prefix.
func (b *Backend) validate(spec *pluginv1.VMSpec) (*pluginv1.ValidateResponse, []string, error) {
	if !hypervisor.ValidID(spec.GetId()) {
		return refuse("VM id %q is not of the form [a-z0-9-]{1,64}", spec.GetId())
	}
	if m := spec.GetMemoryMb(); m < b.cfg.MinMemoryMB || m > b.cfg.MaxMemoryMB {
		return refuse("memory %d MB is outside what %s accepts (%d-%d MB)", m, b.cfg.Name, b.cfg.MinMemoryMB, b.cfg.MaxMemoryMB)
	}
	im, err := solo5.ReadFile(spec.GetImagePath())
	if err != nil {
		return refuse("image: %v", err)
	}
	if im.Target != b.cfg.Target {
		return refuse("image is a Solo5 %s unikernel, but backend %s runs %s unikernels", im.Target, b.cfg.Name, b.cfg.Target)
	}
	if b.needsKVM() {
		if err := kvm.Probe(); err != nil {
			return nil, nil, fmt.Errorf("%w: backend %s needs KVM, which is unusable on this host (%v); build the unikernel for spt, which runs without KVM", hypervisor.ErrUnavailable, b.cfg.Name, err)
		}
	}
	if err := solo5.CheckArgs(spec.GetArgs()); err != nil {
		return refuse("%v", err)
	}
	var nets, blocks []string
	seen := map[string]bool{}
	for _, n := range spec.GetNets() {
		if seen[n.GetName()] {
			return refuse("device %q configured twice", n.GetName())
		}
		seen[n.GetName()] = true
		nets = append(nets, n.GetName())
	}
	for _, bl := range spec.GetBlocks() {
		if seen[bl.GetName()] {
			return refuse("device %q configured twice", bl.GetName())
		}
		seen[bl.GetName()] = true
		blocks = append(blocks, bl.GetName())
	}
	if err := solo5.ValidateDevices(im, nets, blocks); err != nil {
		return refuse("%v", err)
	}
	b.mu.Lock()
	tender, abi, terr := b.tender, b.abi, b.tenderErr
	if terr != nil {
		b.resolveLocked()
		tender, abi, terr = b.tender, b.abi, b.tenderErr
	}
	b.mu.Unlock()
	if terr != nil {
		return nil, nil, fmt.Errorf("%w: backend %s: %v", hypervisor.ErrUnavailable, b.cfg.Name, terr)
	}
	if im.ABIVersion != abi {
		return refuse("image needs Solo5 ABI version %d, the %s tender provides version %d", im.ABIVersion, b.cfg.Name, abi)
	}
	return &pluginv1.ValidateResponse{Ok: true, Target: im.Target.String(), AbiVersion: im.ABIVersion}, tender, nil
}

// handleState is the backend's part of a Handle.
type handleState struct {
	Dir string `json:"dir"`
}

// Start launches the VM under a new shim (hypervisor.ShimBackend's
// StartShim, which makes it idempotent by id).
func (b *Backend) Start(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.Handle, error) {
	res, tender, err := b.validate(spec)
	if err != nil {
		return nil, err
	}
	if !res.GetOk() {
		return nil, fmt.Errorf("%w: %s", hypervisor.ErrInvalid, res.GetReason())
	}
	b.mu.Lock()
	shimPath, shimErr := b.shimPath, b.shimErr
	spare := b.settings[SettingSpareShim] != "false"
	b.mu.Unlock()
	if shimErr != nil {
		return nil, fmt.Errorf("%w: %v", hypervisor.ErrUnavailable, shimErr)
	}
	ta := solo5.TenderArgs{MemMB: int(spec.GetMemoryMb()), Image: spec.GetImagePath(), Args: spec.GetArgs()}
	for _, n := range spec.GetNets() {
		ta.Nets = append(ta.Nets, solo5.NetArg{Name: n.GetName(), Iface: n.GetHostIf(), MAC: n.GetMac()})
	}
	for _, bl := range spec.GetBlocks() {
		ta.Blocks = append(ta.Blocks, solo5.BlockArg{Name: bl.GetName(), Path: bl.GetPath(), SectorSize: int(bl.GetSectorSize())})
	}
	argv := append(append([]string{}, tender...), ta.Argv()...)
	l := hypervisor.ShimLaunch{Shim: shimPath, Argv: argv}
	if spare {
		l.Launch = b.launcher.Launch
	}
	p, dir, err := b.StartShim(ctx, spec, l)
	if err != nil {
		return nil, err
	}
	state, _ := json.Marshal(handleState{Dir: dir})
	return hypervisor.ShimHandle(spec.GetId(), state, p, argv), nil
}
