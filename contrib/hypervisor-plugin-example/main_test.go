package main

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// envFake makes the test binary act as the fake hypervisor program.
const envFake = "PETREL_EXAMPLE_FAKE_HYPERVISOR"

// TestMain lets the test binary stand in for petrel-shim and for the
// hypervisor program, so that the tests need neither installed. The
// program is the shim's child and inherits its environment, so it is
// looked for first.
func TestMain(m *testing.M) {
	if os.Getenv(envFake) != "" {
		os.Exit(fakeHypervisor(os.Args[1:]))
	}
	sdktest.MaybeRunShim()
	os.Exit(m.Run())
}

// marker is the console line the fake hypervisor prints first.
const marker = "fake hypervisor: booting"

// fakeHypervisor parses the command line the backend gives its program
// strictly, prints marker, and then runs until a signal ends it, or, with
// the guest argument exit=N, exits with N at once.
func fakeHypervisor(args []string) int {
	mem, kernel := 0, ""
	var guest []string
	for i, a := range args {
		if a == "--" {
			if i+1 < len(args) {
				kernel, guest = args[i+1], args[i+2:]
			}
			break
		}
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "--memory":
			mem, _ = strconv.Atoi(v)
		case "--net", "--block":
		default:
			fmt.Fprintf(os.Stderr, "fake hypervisor: unknown option %q\n", a)
			return 2
		}
	}
	if mem <= 0 || kernel == "" {
		fmt.Fprintf(os.Stderr, "fake hypervisor: usage: --memory=MB [OPTIONS] -- KERNEL [ARGS...] (got %q)\n", args)
		return 2
	}
	if _, err := os.Stat(kernel); err != nil {
		fmt.Fprintf(os.Stderr, "fake hypervisor: %v\n", err)
		return 1
	}
	fmt.Printf("%s %s with %d MB, arguments %q\n", marker, kernel, mem, guest)
	for _, a := range guest {
		if v, ok := strings.CutPrefix(a, "exit="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	for {
		time.Sleep(time.Hour)
	}
}

// hostMachine is the ELF machine of this host's kernels; the test skips
// on hosts solo5.Build cannot write images for.
func hostMachine(t *testing.T) elf.Machine {
	t.Helper()
	switch runtime.GOARCH {
	case "amd64":
		return elf.EM_X86_64
	case "arm64":
		return elf.EM_AARCH64
	}
	t.Skipf("no test kernels for %s", runtime.GOARCH)
	return 0
}

// otherMachine is an ELF machine this host does not run.
func otherMachine(t *testing.T) elf.Machine {
	if hostMachine(t) == elf.EM_X86_64 {
		return elf.EM_AARCH64
	}
	return elf.EM_X86_64
}

// writeImage writes an ELF executable for machine; with target set, a
// Solo5 unikernel, else a plain kernel.
func writeImage(t *testing.T, machine elf.Machine, target solo5.Target) string {
	t.Helper()
	spec := solo5.BuildSpec{Machine: machine, NoABINote: true, NoManifest: true}
	if target != 0 {
		spec = solo5.BuildSpec{Machine: machine, Target: target, ABIVersion: 2}
	}
	b, err := solo5.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "kernel")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// helpers writes, in a new directory, petrel-shim and the fake hypervisor
// program as scripts that run this test binary, and returns the
// directory (to pass as the plugin directory) and the program's path.
func helpers(t *testing.T) (dir, program string) {
	t.Helper()
	dir = t.TempDir()
	if _, err := sdktest.WriteShimWrapper(dir); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	program = filepath.Join(dir, "fake-hypervisor")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 exec %q \"$@\"\n", envFake, exe)
	if err := os.WriteFile(program, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, program
}

// suite runs the SDK's hypervisor conformance suite on the backends
// newHV returns.
func suite(t *testing.T, newHV func(t *testing.T) hypervisor.Hypervisor) {
	dir, program := helpers(t)
	machine := hostMachine(t)
	sdktest.HypervisorSuite{
		New:          newHV,
		Settings:     map[string]string{settingProgram: program},
		PluginDir:    dir,
		Image:        func(t *testing.T) string { return writeImage(t, machine, 0) },
		WrongImage:   func(t *testing.T) string { return writeImage(t, otherMachine(t), 0) },
		Marker:       marker,
		RunForever:   []string{"console=ttyS0"},
		ExitWith:     func(code int) []string { return []string{"exit=" + strconv.Itoa(code)} },
		MemoryMB:     64,
		MaxArgsBytes: maxCmdline,
	}.Run(t)
}

// TestConformance runs the suite on the backend in this process.
func TestConformance(t *testing.T) {
	suite(t, func(*testing.T) hypervisor.Hypervisor { return newBackend("test") })
}

// TestBuiltPlugin builds the plugin as its README says and runs the
// suite on the binary, started and reached through go-plugin the way
// petreld does: one plugin process per backend the suite asks for.
func TestBuiltPlugin(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go toolchain not on PATH; skipping the build test")
	}
	bin := filepath.Join(t.TempDir(), "petrel-plugin-command")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	suite(t, func(t *testing.T) hypervisor.Hypervisor {
		client := plugin.NewClient(petrelplugin.ClientConfig(bin, petrelplugin.HypervisorPluginSets(nil), hclog.NewNullLogger()))
		t.Cleanup(client.Kill)
		rpc, err := client.Client()
		if err != nil {
			t.Fatalf("start plugin: %v", err)
		}
		raw, err := rpc.Dispense(petrelplugin.HypervisorService)
		if err != nil {
			t.Fatalf("dispense: %v", err)
		}
		return raw.(hypervisor.Hypervisor)
	})
}

// TestValidate checks the refusals a spec can meet, each with its reason.
func TestValidate(t *testing.T) {
	kernel := writeImage(t, hostMachine(t), 0)
	good := func() *pluginv1.VMSpec {
		return &pluginv1.VMSpec{Id: "vm-1", ImagePath: kernel, MemoryMb: 64, Args: []string{"a", "b"},
			Nets:   []*pluginv1.NetDevice{{Name: "service", HostIf: "tap0", Mac: "02:00:00:00:00:01"}},
			Blocks: []*pluginv1.BlockDevice{{Name: "disk", Path: "/var/disk.img", SectorSize: 512}}}
	}
	long := make([]string, 1024) // 1024 one-byte arguments joined: 2047 bytes, the limit
	for i := range long {
		long[i] = "x"
	}
	for _, c := range []struct {
		name   string
		change func(*pluginv1.VMSpec)
		reason string // "" when the spec is good
	}{
		{"good", func(*pluginv1.VMSpec) {}, ""},
		{"longest command line", func(s *pluginv1.VMSpec) { s.Args = long }, ""},
		{"command line too long", func(s *pluginv1.VMSpec) { s.Args = append(long, "") }, "2048 bytes joined with spaces"},
		{"bad id", func(s *pluginv1.VMSpec) { s.Id = "VM 1" }, "is not of the form"},
		{"too little memory", func(s *pluginv1.VMSpec) { s.MemoryMb = 8 }, "memory 8 MB is outside"},
		{"too much memory", func(s *pluginv1.VMSpec) { s.MemoryMb = 1 << 20 }, "is outside"},
		{"missing image", func(s *pluginv1.VMSpec) { s.ImagePath = "/nonexistent" }, "no such file"},
		{"other machine", func(s *pluginv1.VMSpec) { s.ImagePath = writeImage(t, otherMachine(t), 0) }, "but this host is " + runtime.GOARCH},
		{"Solo5 unikernel", func(s *pluginv1.VMSpec) { s.ImagePath = writeImage(t, hostMachine(t), solo5.TargetHVT) }, "a Solo5 unikernel"},
		{"initrd", func(s *pluginv1.VMSpec) { s.InitrdPath = kernel }, "takes no initrd"},
		{"NUL", func(s *pluginv1.VMSpec) { s.Args = []string{"a\x00b"} }, "argument 1 contains a NUL"},
		{"device twice", func(s *pluginv1.VMSpec) { s.Blocks[0].Name = "service" }, `device "service" configured twice`},
		{"comma", func(s *pluginv1.VMSpec) { s.Blocks[0].Path = "/a,b" }, "contains a comma"},
		{"sector size", func(s *pluginv1.VMSpec) { s.Blocks[0].SectorSize = 4096 }, "sector size 4096"},
	} {
		spec := good()
		c.change(spec)
		res, err := newBackend("test").Validate(context.Background(), spec)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.reason == "" && (!res.GetOk() || res.GetTarget() != target) {
			t.Errorf("%s: Validate = %v; want ok, target %s", c.name, res, target)
		}
		if c.reason != "" && (res.GetOk() || !strings.Contains(res.GetReason(), c.reason)) {
			t.Errorf("%s: Validate = %v; want a refusal saying %q", c.name, res, c.reason)
		}
	}
}

// TestCommandLine checks the hypervisor's command line, devices included
// (the conformance suite starts VMs without any).
func TestCommandLine(t *testing.T) {
	spec := &pluginv1.VMSpec{ImagePath: "/k", MemoryMb: 64, Args: []string{"-x", "y"},
		Nets:   []*pluginv1.NetDevice{{Name: "service", HostIf: "tap0", Mac: "02:00:00:00:00:01"}, {Name: "admin", HostIf: "tap1"}},
		Blocks: []*pluginv1.BlockDevice{{Name: "disk", Path: "/d.img"}}}
	want := []string{"/bin/hv", "--memory=64", "--net=service,tap0,02:00:00:00:00:01", "--net=admin,tap1",
		"--block=disk,/d.img", "--", "/k", "-x", "y"}
	if got := commandLine("/bin/hv", spec); !slices.Equal(got, want) {
		t.Fatalf("commandLine = %q\nwant %q", got, want)
	}
}

// TestFingerprintProblems: a missing program and a missing shim are
// reported one problem each, with the setting that provides it.
func TestFingerprintProblems(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("PATH", empty)
	b := newBackend("test")
	req := &pluginv1.ConfigureRequest{RunDir: t.TempDir(), PluginDir: empty, Settings: map[string]string{settingProgram: "no-such-hypervisor"}}
	if err := b.Configure(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	fp, err := b.Fingerprint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fp.GetHealth() != pluginv1.Health_HEALTH_UNHEALTHY || len(fp.GetProblems()) != 2 {
		t.Fatalf("Fingerprint = %v; want unhealthy with two problems", fp)
	}
	for i, want := range []string{"set settings.program", "install petrel-shim in " + empty} {
		if fix := fp.GetProblems()[i].GetFix(); !strings.Contains(fix, want) {
			t.Errorf("problem %d: fix %q lacks %q", i, fix, want)
		}
	}
	if _, err := b.Start(context.Background(), &pluginv1.VMSpec{Id: "vm-1", ImagePath: writeImage(t, hostMachine(t), 0), MemoryMb: 64}); !errors.Is(err, hypervisor.ErrUnavailable) {
		t.Errorf("Start without program and shim = %v; want ErrUnavailable", err)
	}
}

// TestConfigure checks the settings Configure refuses.
func TestConfigure(t *testing.T) {
	for _, s := range []map[string]string{{}, {settingProgram: "hv", "programme": "hv"}} {
		err := newBackend("test").Configure(context.Background(), &pluginv1.ConfigureRequest{RunDir: t.TempDir(), Settings: s})
		if !errors.Is(err, hypervisor.ErrInvalid) {
			t.Errorf("Configure(%v) = %v; want ErrInvalid", s, err)
		}
	}
}
