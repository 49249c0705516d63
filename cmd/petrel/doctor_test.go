package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/core/vmrecord"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

func mkdirs(t *testing.T, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, r checkResult, st checkStatus, substr string) {
	t.Helper()
	if r.Status != st || !strings.Contains(r.Message, substr) {
		t.Errorf("got %s %q, want %s containing %q", r.Status, r.Message, st, substr)
	}
}

func TestCheckTenders(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	env := defaultHostEnv("", "", dir)
	rs := checkTenders(context.Background(), env)
	if len(rs) != 2 {
		t.Fatalf("%d results, want 2", len(rs))
	}
	expect(t, rs[0], statusOK, "built-in tender")
	expect(t, rs[1], statusOK, "solo5-spt not on PATH: the spt backend uses Petrel's built-in spt tender")

	// Solo5 tenders print their version on stderr.
	writeFile(t, filepath.Join(dir, "solo5-hvt"), "#!/bin/sh\necho 'solo5-hvt v0.9.1' >&2\necho 'ABI version 2' >&2\nexit 1\n", 0o755)
	writeFile(t, filepath.Join(dir, "solo5-spt"), "#!/bin/sh\necho 'usage: something else'\n", 0o755)
	rs = checkTenders(context.Background(), env)
	expect(t, rs[0], statusOK, "(Solo5 0.9.1, ABI version 2)")
	expect(t, rs[1], statusFail, "did not report an ABI version (\"usage: something else\")")
}

// TestCheckBackends checks what doctor says a host can run, with and
// without KVM, plugins, solo5-spt and QEMU.
func TestCheckBackends(t *testing.T) {
	dir := t.TempDir()
	onPath := map[string]string{}
	env := hostEnv{pluginDirs: []string{dir}, lookPath: func(name string) (string, error) {
		if p, ok := onPath[name]; ok {
			return p, nil
		}
		return "", errors.New("not found")
	}}
	expect(t, checkBackends(env, true), statusFail, "this host can run no VMs: hvt (petrel-plugin-hvt not installed); spt (petrel-plugin-spt not installed)")
	for _, p := range []string{"hvt", "spt", "qemu"} {
		writeFile(t, filepath.Join(dir, "petrel-plugin-"+p), "", 0o755)
	}
	expect(t, checkBackends(env, true), statusOK, "this host runs hvt (on KVM), spt (with Petrel's built-in tender, no KVM needed); not qemu (apt install qemu-system-x86)")
	onPath["qemu-system-x86_64"] = "/usr/bin/qemu-system-x86_64"
	onPath["solo5-spt"] = "/usr/local/bin/solo5-spt"
	expect(t, checkBackends(env, true), statusOK, "this host runs hvt (on KVM), spt (with /usr/local/bin/solo5-spt, no KVM needed), qemu (virtio unikernels and Linux guests on KVM)")
	delete(onPath, "solo5-spt")
	expect(t, checkBackends(env, false), statusOK, "this host runs spt (with Petrel's built-in tender, no KVM needed), qemu (virtio unikernels and Linux guests under TCG, software emulation); not hvt (needs a usable /dev/kvm)")
}

func TestCheckPlugins(t *testing.T) {
	empty, dir := t.TempDir(), t.TempDir()
	env := hostEnv{pluginDirs: []string{empty, dir}, lookPath: func(string) (string, error) { return "", errors.New("not found") }}
	rs := checkPlugins(env, "1.0")
	if len(rs) != 1 {
		t.Fatalf("got %v", rs)
	}
	expect(t, rs[0], statusFail, "no plugins")

	writeFile(t, filepath.Join(dir, "petrel-plugin-hvt"), "#!/bin/sh\n", 0o755)
	writeFile(t, filepath.Join(dir, "petrel-plugin-influx"), "#!/bin/sh\n", 0o644)
	rs = checkPlugins(env, "1.0")
	if len(rs) != 3 {
		t.Fatalf("got %v", rs)
	}
	expect(t, rs[0], statusOK, "petrel-plugin-hvt (version unknown)")
	expect(t, rs[1], statusFail, "not an executable file")
	expect(t, rs[2], statusFail, "petrel-shim is neither in")

	writeFile(t, filepath.Join(dir, "petrel-plugin-influx"), "#!/bin/sh\n", 0o777)
	writeFile(t, filepath.Join(dir, "petrel-shim"), "#!/bin/sh\n", 0o755)
	rs = checkPlugins(env, "1.0")
	expect(t, rs[1], statusFail, "writable by others")
	expect(t, rs[2], statusOK, "petrel-shim")
}

func TestBinaryVersion(t *testing.T) {
	for flags, want := range map[string]string{
		"-X main.version=v1.2.3 -X github.com/x/daemon.Version=v1.2.3": "v1.2.3",
		"-s -w -X=main.version=abc":                                    "abc",
		"-X 'main.version=quoted'":                                     "quoted",
		"-s -w":                                                        "",
		"-X":                                                           "",
	} {
		if got := ldflagsVersion(flags); got != want {
			t.Errorf("ldflagsVersion(%q) = %q, want %q", flags, got, want)
		}
	}
	// A script has no Go build information.
	p := filepath.Join(t.TempDir(), "script")
	writeFile(t, p, "#!/bin/sh\n", 0o755)
	if v := binaryVersion(p); v != "" {
		t.Errorf("version of a script: %q", v)
	}
	// The test binary is a Go binary; it must be read without error.
	if _, err := os.Stat(os.Args[0]); err == nil {
		_ = binaryVersion(os.Args[0])
	}
}

// fakeDaemon answers Version and Plugins; other methods are not called.
type fakeDaemon struct {
	daemonv1.DaemonClient
	versionErr error
	api        uint32
	plugins    []*daemonv1.Plugin
}

func (f *fakeDaemon) Version(context.Context, *daemonv1.VersionRequest, ...grpc.CallOption) (*daemonv1.VersionResponse, error) {
	if f.versionErr != nil {
		return nil, f.versionErr
	}
	return &daemonv1.VersionResponse{Version: "1.0", ApiVersion: f.api}, nil
}

func (f *fakeDaemon) Plugins(context.Context, *daemonv1.PluginsRequest, ...grpc.CallOption) (*daemonv1.PluginsResponse, error) {
	return &daemonv1.PluginsResponse{Plugins: f.plugins}, nil
}

func TestCheckDaemon(t *testing.T) {
	ctx := context.Background()
	rs := checkDaemon(ctx, &fakeDaemon{versionErr: status.Error(codes.Unavailable, "dial unix /x: connect: no such file or directory")}, "/x")
	expect(t, rs[0], statusFail, "systemctl start petreld")
	rs = checkDaemon(ctx, &fakeDaemon{versionErr: status.Error(codes.Unavailable, "connect: permission denied")}, "/x")
	expect(t, rs[0], statusFail, "join the socket's group")
	rs = checkDaemon(ctx, &fakeDaemon{api: 2}, "/x")
	expect(t, rs[0], statusFail, "daemon API v2, this petrel v1")
	rs = checkDaemon(ctx, &fakeDaemon{api: 1, plugins: []*daemonv1.Plugin{
		{Name: "hvt", Kind: "hypervisor", Version: "1.0", Health: "healthy"},
		{Name: "spt", Kind: "hypervisor", Health: "degraded", Description: "solo5-spt not found"},
		{Name: "influx", Kind: "metrics", Health: "down", Restarts: 3},
		{Name: "qemu", Kind: "hypervisor", Health: "unhealthy", Description: "qemu-system-x86_64 not found"},
		{Name: "jsonl", Health: "not enabled"},
	}}, "/x")
	if len(rs) != 6 {
		t.Fatalf("got %v", rs)
	}
	expect(t, rs[0], statusOK, "petreld 1.0 at /x (daemon API v1)")
	expect(t, rs[1], statusOK, "plugin hvt (hypervisor) 1.0 healthy")
	expect(t, rs[2], statusWarn, "degraded: solo5-spt not found")
	expect(t, rs[3], statusFail, "down (petreld's log says why, restarted 3 times)")
	expect(t, rs[4], statusWarn, "unhealthy: qemu-system-x86_64 not found")
	expect(t, rs[5], statusOK, "not enabled")
}

func TestCheckSocket(t *testing.T) {
	dir := t.TempDir()
	if rs := checkSocket(filepath.Join(dir, "none.sock")); len(rs) != 0 {
		t.Errorf("a missing socket gave %v", rs)
	}
	file := filepath.Join(dir, "file")
	writeFile(t, file, "", 0o600)
	expect(t, checkSocket(file)[0], statusFail, "not a socket")
	sock := filepath.Join(dir, "petreld.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	for _, c := range []struct {
		mode os.FileMode
		st   checkStatus
		want string
	}{
		{0o666, statusFail, "writable by everyone"},
		{0o660, statusOK, "group can manage"},
		{0o600, statusOK, "mode 0600"},
	} {
		if err := os.Chmod(sock, c.mode); err != nil {
			t.Fatal(err)
		}
		expect(t, checkSocket(sock)[0], c.st, c.want)
	}
}

func TestCheckDataDir(t *testing.T) {
	dir := t.TempDir()
	expect(t, checkDataDir(filepath.Join(dir, "none")), statusWarn, "does not exist yet")
	writeFile(t, filepath.Join(dir, "file"), "", 0o600)
	expect(t, checkDataDir(filepath.Join(dir, "file")), statusFail, "not a directory")
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	expect(t, checkDataDir(data), statusFail, "chmod 700")
	if err := os.Chmod(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		expect(t, checkDataDir(data), statusOK, "owned by root")
	} else {
		expect(t, checkDataDir(data), statusWarn, "chown root")
	}
}

func TestCheckState(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	expect(t, checkState(dir), statusOK, "no state yet")
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(vmrecord.Collection, "web", vmrecord.Record{Name: "web", ImageSHA256: strings.Repeat("a", 64)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	expect(t, checkState(dir), statusWarn, "image "+strings.Repeat("a", 64)+" is missing")
	writeFile(t, filepath.Join(dir, "meta.json"), fmt.Sprintf(`{"schema":%d}`, store.SchemaVersion+1), 0o600)
	expect(t, checkState(dir), statusFail, "newer than")
	writeFile(t, filepath.Join(dir, "meta.json"), `{"schema":1}`, 0o600)
	os.Remove(filepath.Join(dir, "vms", "web.json"))
	expect(t, checkState(dir), statusOK, "petreld migrates it to")
	writeFile(t, filepath.Join(dir, "meta.json"), `{"schema":`, 0o600)
	expect(t, checkState(dir), statusFail, "meta.json")
}

func TestCheckCgroups(t *testing.T) {
	root := t.TempDir()
	env := hostEnv{cgroupDir: root}
	expect(t, checkCgroups(env), statusWarn, "no cgroup file system")
	mkdirs(t, root, "cpu")
	expect(t, checkCgroups(env), statusOK, "v1 (legacy")
	writeFile(t, filepath.Join(root, "unified", "cgroup.controllers"), "", 0o444)
	expect(t, checkCgroups(env), statusOK, "hybrid")
	writeFile(t, filepath.Join(root, "cgroup.controllers"), "cpu io", 0o444)
	expect(t, checkCgroups(env), statusOK, "v2 (unified")
}

// TestDoctorCommand runs the whole command against a daemon that is not
// there: it still checks the host, reports the daemon as FAIL and exits 1.
func TestDoctorCommand(t *testing.T) {
	dir := t.TempDir()
	var out, errw bytes.Buffer
	a := &app{socket: filepath.Join(dir, "petreld.sock"), out: &out, errw: &errw}
	cmd := a.doctorCmd()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetArgs([]string{"--json", "--data-dir", dir, "--plugin-dir", dir})
	cmd.SetOut(&out)
	cmd.SetErr(&errw)
	err := cmd.Execute()
	if err == nil {
		t.Fatal("doctor succeeded without a daemon")
	}
	if code, msg := classify(err, a.socket, false); code != exitError || !strings.Contains(msg, "checks failed") {
		t.Errorf("exit %d %q, want %d and a count of failed checks", code, msg, exitError)
	}
	var rs []checkResult
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	seen := map[string]checkStatus{}
	for _, r := range rs {
		if _, dup := seen[r.Check]; !dup {
			seen[r.Check] = r.Status
		}
	}
	for _, c := range []string{"kvm", "tun", "bridges", "tender", "plugin", "daemon", "data-dir", "cgroups"} {
		if _, ok := seen[c]; !ok {
			t.Errorf("no %s check in %s", c, out.String())
		}
	}
	if seen["daemon"] != statusFail || seen["plugin"] != statusFail {
		t.Errorf("daemon %s and plugin %s, want both FAIL", seen["daemon"], seen["plugin"])
	}

	out.Reset()
	printChecks(&out, []checkResult{ok("kvm", "fine"), fail("daemon", "down")})
	if want := "OK    kvm       fine\nFAIL  daemon    down\n"; out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
}
