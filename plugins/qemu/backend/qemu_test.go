package backend

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/plugins/qemu/testguest"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/kvm"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

func TestMain(m *testing.M) {
	sdktest.MaybeRunShim()
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// shared holds what every test reuses: the shim wrapper, the virtio image,
// and the Linux kernel with its initramfs, built once per test binary.
var shared struct {
	once     sync.Once
	dir      string
	err      error
	virtio   string
	linux    testguest.Linux
	initrd   string
	linuxErr error
}

func setup(t testing.TB) {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("/tmp", "pqt")
		if shared.err != nil {
			return
		}
		if _, shared.err = sdktest.WriteShimWrapper(shared.dir); shared.err != nil {
			return
		}
		shared.virtio = filepath.Join(shared.dir, "guest.virtio")
		if shared.err = testguest.WriteVirtioImage(shared.virtio); shared.err != nil {
			return
		}
		shared.linux, shared.linuxErr = testguest.FindLinux()
		if shared.linuxErr == nil {
			shared.initrd = filepath.Join(shared.dir, "initrd.gz")
			shared.linuxErr = shared.linux.WriteInitramfs(shared.initrd)
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
}

// needQEMU skips the test when QEMU is missing.
func needQEMU(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not found: install Debian's qemu-system-x86")
	}
	setup(t)
}

// needLinux skips the test when the Linux guest's parts are missing.
func needLinux(t testing.TB) {
	t.Helper()
	needQEMU(t)
	if shared.linuxErr != nil {
		t.Skip("Linux guest unavailable:", shared.linuxErr)
	}
}

// served returns a configured backend behind the real gRPC boundary, and
// the backend itself. Its monitors stop when the test ends.
func served(t testing.TB, runDir string, settings map[string]string) (hypervisor.Hypervisor, *Backend) {
	t.Helper()
	b := New("test")
	t.Cleanup(b.Close)
	hv := sdktest.ServeHypervisor(t, b)
	if err := hv.Configure(context.Background(), &pluginv1.ConfigureRequest{Settings: settings, RunDir: runDir, PluginDir: shared.dir}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return hv, b
}

// runDir returns a short run directory (socket paths are limited), removed
// when the test ends.
func runDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "pqr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// seq numbers VM ids within the test binary.
var seq atomic.Int64

// linuxSpec is a spec for the Linux guest with extra command-line words.
func linuxSpec(args ...string) *pluginv1.VMSpec {
	return &pluginv1.VMSpec{Id: "lx-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(seq.Add(1), 10), Name: "test:linux",
		ImagePath: shared.linux.Kernel, InitrdPath: shared.initrd, KernelCmdline: "quiet", Args: args,
		MemoryMb: 192, ConsoleLines: 2000, ConsoleBytes: 1 << 20}
}

// virtioSpec is a spec for the virtio guest.
func virtioSpec(args ...string) *pluginv1.VMSpec {
	return &pluginv1.VMSpec{Id: "uk-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(seq.Add(1), 10), Name: "test:virtio",
		ImagePath: shared.virtio, Args: args, MemoryMb: 32, ConsoleLines: 200, ConsoleBytes: 1 << 16}
}

// awaitLine follows the console of id until a line contains want, and
// returns every line seen.
func awaitLine(t testing.TB, hv hypervisor.Hypervisor, id, want string, timeout time.Duration) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var lines []string
	errFound := errors.New("found")
	err := hv.Console(ctx, &pluginv1.ConsoleRequest{Id: id, Follow: true}, func(l *pluginv1.ConsoleLine) error {
		lines = append(lines, l.GetText())
		if strings.Contains(l.GetText(), want) {
			return errFound
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "found") {
		t.Fatalf("console of %s never showed %q (%v); it showed:\n%s", id, want, err, strings.Join(lines, "\n"))
	}
	return lines
}

// consoleText returns the console history of id.
func consoleText(t testing.TB, hv hypervisor.Hypervisor, id string) []string {
	var lines []string
	err := hv.Console(context.Background(), &pluginv1.ConsoleRequest{Id: id}, func(l *pluginv1.ConsoleLine) error {
		lines = append(lines, l.GetText())
		return nil
	})
	if err != nil {
		t.Errorf("Console(%s): %v", id, err)
	}
	return lines
}

// wait waits for the VM's exit with a deadline.
func wait(t testing.TB, hv hypervisor.Hypervisor, id string, timeout time.Duration) *pluginv1.ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, err := hv.Wait(ctx, id)
	if err != nil {
		t.Fatalf("Wait(%s): %v", id, err)
	}
	return st
}

// destroyLater destroys the VM when the test ends.
func destroyLater(t testing.TB, hv hypervisor.Hypervisor, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := hv.Destroy(ctx, id); err != nil {
			t.Errorf("Destroy(%s): %v", id, err)
		}
	})
}

// TestConformanceVirtio runs the SDK's conformance suite with the virtio
// guest, under the accelerator the backend picks for unikernels here.
func TestConformanceVirtio(t *testing.T) {
	needQEMU(t)
	sdktest.HypervisorSuite{
		New:       func(t *testing.T) hypervisor.Hypervisor { b := New("test"); t.Cleanup(b.Close); return b },
		PluginDir: shared.dir,
		Image:     func(*testing.T) string { return shared.virtio },
		WrongImage: func(t *testing.T) string {
			b, err := solo5.Build(solo5.BuildSpec{Target: solo5.TargetHVT, ABIVersion: 1})
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "hvt")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		},
		Marker:     testguest.VirtioMarker,
		RunForever: []string{testguest.VirtioRunForever},
		ExitWith:   func(code int) []string { return []string{testguest.VirtioExit(code)} },
		MemoryMB:   32,
	}.Run(t)
}

// TestLinuxMarkerAndExit boots the Linux guest, sees its marker and gets
// the exit code it reports through isa-debug-exit.
func TestLinuxMarkerAndExit(t *testing.T) {
	t.Parallel()
	needLinux(t)
	hv, _ := served(t, runDir(t), nil)
	spec := linuxSpec(testguest.ParamExit + "=7")
	ctx := context.Background()
	res, err := hv.Validate(ctx, spec)
	if err != nil || !res.GetOk() || res.GetTarget() != TargetLinux {
		t.Fatalf("Validate = %v, %v", res, err)
	}
	h, err := hv.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	destroyLater(t, hv, spec.GetId())
	if h.GetPid() == 0 || len(h.GetArgv()) == 0 || !strings.Contains(strings.Join(h.GetArgv(), " "), "-initrd "+shared.initrd) {
		t.Fatalf("handle %v", h)
	}
	awaitLine(t, hv, spec.GetId(), testguest.LinuxMarker, 60*time.Second)
	st := wait(t, hv, spec.GetId(), 60*time.Second)
	if st.GetCode() != 7 || st.GetSignal() != 0 || !strings.Contains(st.GetMessage(), "isa-debug-exit") {
		t.Fatalf("exit %v; want code 7 through isa-debug-exit", st)
	}
}

// TestLinuxGracefulStop stops a Linux guest through its ACPI power button
// and checks it powered off by itself (exit 0) well before the timeout.
// The guest also has a block device, whose serial and sector size it
// reports.
func TestLinuxGracefulStop(t *testing.T) {
	t.Parallel()
	needLinux(t)
	hv, _ := served(t, runDir(t), nil)
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := linuxSpec()
	spec.Blocks = []*pluginv1.BlockDevice{{Name: "data", Path: disk, SectorSize: 4096}}
	ctx := context.Background()
	if _, err := hv.Start(ctx, spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	destroyLater(t, hv, spec.GetId())
	lines := awaitLine(t, hv, spec.GetId(), testguest.LinuxReady, 60*time.Second)
	var block string
	for _, l := range lines {
		if strings.HasPrefix(l, testguest.LinuxBlock) {
			block = l
		}
	}
	if want := testguest.LinuxBlock + " vda data 4096 2048"; block != want {
		t.Errorf("block device line %q, want %q", block, want)
	}
	st, err := hv.Stats(ctx, spec.GetId())
	if err != nil || st.GetRssBytes() <= 0 || st.GetThreads() < 2 {
		t.Fatalf("Stats = %v, %v", st, err)
	}
	start := time.Now()
	if err := hv.Stop(ctx, spec.GetId(), 30*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	took := time.Since(start)
	ex := wait(t, hv, spec.GetId(), 10*time.Second)
	if ex.GetCode() != 0 || ex.GetSignal() != 0 || ex.GetMessage() != "guest powered off" {
		t.Fatalf("exit after graceful stop = %v; want a clean power-off; console:\n%s", ex, strings.Join(consoleText(t, hv, spec.GetId()), "\n"))
	}
	if took > 20*time.Second {
		t.Fatalf("graceful stop took %v", took)
	}
	var pressed bool
	hv.Console(ctx, &pluginv1.ConsoleRequest{Id: spec.GetId()}, func(l *pluginv1.ConsoleLine) error {
		pressed = pressed || strings.Contains(l.GetText(), testguest.LinuxPowerButton)
		return nil
	})
	if !pressed {
		t.Fatal("the guest never saw the power button")
	}
	t.Logf("graceful stop took %v", took)
}

// TestLinuxStopFallsBackToKill stops a guest that ignores the power button:
// Stop kills QEMU once the timeout has passed.
func TestLinuxStopFallsBackToKill(t *testing.T) {
	t.Parallel()
	needLinux(t)
	hv, _ := served(t, runDir(t), nil)
	spec := linuxSpec(testguest.ParamPowerButton + "=ignore")
	ctx := context.Background()
	if _, err := hv.Start(ctx, spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	destroyLater(t, hv, spec.GetId())
	awaitLine(t, hv, spec.GetId(), testguest.LinuxReady, 60*time.Second)
	start := time.Now()
	if err := hv.Stop(ctx, spec.GetId(), 2*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took := time.Since(start); took < 2*time.Second || took > 15*time.Second {
		t.Fatalf("Stop took %v; want about the 2 s timeout", took)
	}
	ex := wait(t, hv, spec.GetId(), 10*time.Second)
	if ex.GetSignal() != 9 {
		t.Fatalf("exit %v; want SIGKILL", ex)
	}
}

// TestLinuxPanicReported makes the guest kernel panic: pvpanic pauses it,
// and the monitor reports the panic as a failure with the kernel's reason.
func TestLinuxPanicReported(t *testing.T) {
	t.Parallel()
	needLinux(t)
	hv, _ := served(t, runDir(t), nil)
	spec := linuxSpec(testguest.ParamPanic + "=1")
	if _, err := hv.Start(context.Background(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	destroyLater(t, hv, spec.GetId())
	ex := wait(t, hv, spec.GetId(), 90*time.Second)
	if ex.GetCode() != 1 || ex.GetSignal() != 0 || !strings.Contains(ex.GetMessage(), "guest-panicked") ||
		!strings.Contains(ex.GetMessage(), "Kernel panic - not syncing: sysrq triggered crash") {
		t.Fatalf("exit %v; want a reported kernel panic", ex)
	}
	t.Logf("reported: %s", ex.GetMessage())
}

// TestKVMInternalErrorReported runs a guest that executes int3 under KVM.
// kvm_pvm cannot emulate it, and QEMU pauses the guest with a KVM internal
// error; the backend must report that as a failure with its reason.
func TestKVMInternalErrorReported(t *testing.T) {
	needQEMU(t)
	if err := kvm.Probe(); err != nil {
		t.Skip("needs a usable KVM:", err)
	}
	if !kvmPVM() {
		t.Skip("needs a KVM that cannot emulate int3 in a guest without an IDT (kvm_pvm, /sys/module/kvm_pvm); a hardware KVM delivers it as a triple fault")
	}
	hv, _ := served(t, runDir(t), map[string]string{SettingUnikernelAccel: "kvm"})
	spec := virtioSpec(testguest.VirtioCrash)
	if _, err := hv.Start(context.Background(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	destroyLater(t, hv, spec.GetId())
	ex := wait(t, hv, spec.GetId(), 60*time.Second)
	if ex.GetCode() != 1 || !strings.Contains(ex.GetMessage(), "KVM internal error") || !strings.Contains(ex.GetMessage(), "emulation failure") {
		t.Fatalf("exit %v; want a reported KVM internal error", ex)
	}
	t.Logf("reported: %s", ex.GetMessage())
}

// TestStartReportsQEMUErrors gives QEMU a device it does not know: Start
// fails with QEMU's message and leaves nothing behind.
func TestStartReportsQEMUErrors(t *testing.T) {
	needQEMU(t)
	rd := runDir(t)
	hv, _ := served(t, rd, map[string]string{SettingExtraArgs: "-device petrel-no-such-device"})
	_, err := hv.Start(context.Background(), virtioSpec(testguest.VirtioRunForever))
	if err == nil || !strings.Contains(err.Error(), "petrel-no-such-device") {
		t.Fatalf("Start = %v; want QEMU's complaint about the device", err)
	}
	if entries, _ := os.ReadDir(rd); len(entries) != 0 {
		t.Fatalf("failed start left %d entries in the run directory", len(entries))
	}
}

// TestFingerprint checks what the backend reports about this host.
func TestFingerprint(t *testing.T) {
	needQEMU(t)
	hv, _ := served(t, runDir(t), nil)
	fp, err := hv.Fingerprint(context.Background())
	if err != nil || fp.GetHealth() != pluginv1.Health_HEALTH_HEALTHY {
		t.Fatalf("Fingerprint = %v, %v", fp, err)
	}
	a := fp.GetAttributes()
	out, _ := exec.Command("qemu-system-x86_64", "--version").Output()
	if a["qemu.version"] == "" || !strings.Contains(string(out), a["qemu.version"]) {
		t.Errorf("qemu.version %q not in %q", a["qemu.version"], out)
	}
	if a["kvm.pvm"] != strconv.FormatBool(kvmPVM()) {
		t.Errorf("kvm.pvm = %q", a["kvm.pvm"])
	}
	if kvmPVM() && a["accel.linux"] != accelTCG {
		t.Errorf("accel.linux = %q on kvm_pvm; want tcg", a["accel.linux"])
	}
	if a["kvm"] == "usable" && a["accel.virtio"] != accelKVM {
		t.Errorf("accel.virtio = %q with usable KVM", a["accel.virtio"])
	}
	t.Logf("fingerprint: %s %v", fp.GetDescription(), a)
}

// TestLinuxGuestWarnsAboutTCG checks the console warning of a guest
// running under TCG.
func TestLinuxGuestWarnsAboutTCG(t *testing.T) {
	t.Parallel()
	needLinux(t)
	hv, _ := served(t, runDir(t), map[string]string{SettingLinuxAccel: "tcg"})
	spec := linuxSpec(testguest.ParamExit + "=3")
	if _, err := hv.Start(context.Background(), spec); err != nil {
		t.Fatalf("Start: %v", err)
	}
	destroyLater(t, hv, spec.GetId())
	lines := awaitLine(t, hv, spec.GetId(), "petrel: running under TCG", 30*time.Second)
	if len(lines) != 1 {
		t.Errorf("the warning is not the first console line: %q", lines)
	}
	if ex := wait(t, hv, spec.GetId(), 60*time.Second); ex.GetCode() != 3 {
		t.Fatalf("exit %v; want 3", ex)
	}
}

// TestVirtioDevicesAndPinning runs the virtio guest with a block device
// declared in its manifest (so it gets SeaBIOS, which assigns PCI
// resources) and pinned to one host CPU.
func TestVirtioDevicesAndPinning(t *testing.T) {
	needQEMU(t)
	if runtime.NumCPU() < 2 {
		t.Skip("the pinning check needs a second CPU")
	}
	hv, _ := served(t, runDir(t), map[string]string{SettingUnikernelAccel: "tcg"})
	img := filepath.Join(t.TempDir(), "storage.virtio")
	if err := testguest.WriteVirtioImage(img, solo5.Device{Name: "storage", Type: solo5.DeviceBlock}); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := virtioSpec(testguest.VirtioRunForever)
	spec.ImagePath = img
	spec.Blocks = []*pluginv1.BlockDevice{{Name: "storage", Path: disk}}
	spec.Cpus = []uint32{1}
	ctx := context.Background()
	h, err := hv.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	destroyLater(t, hv, spec.GetId())
	argv := strings.Join(h.GetArgv(), " ")
	if strings.Contains(argv, "-bios") || !strings.Contains(argv, "virtio-blk-pci,drive=blk0,serial=storage") || !strings.Contains(argv, "-smp 1") {
		t.Fatalf("argv %s", argv)
	}
	awaitLine(t, hv, spec.GetId(), testguest.VirtioMarker, 30*time.Second)
	status, err := os.ReadFile("/proc/" + strconv.FormatInt(h.GetPid(), 10) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "Cpus_allowed_list:\t1\n") {
		t.Fatalf("QEMU not pinned to CPU 1:\n%s", status)
	}
}
