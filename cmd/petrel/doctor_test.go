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
	"github.com/petrel-vmm/petrel/plugins/catalog"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
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

// TestBackendNeedsCoverCatalog: without petreld, doctor knows what each
// of Petrel's backends (the catalog's hypervisor plugins) needs, and
// describes no backend the catalog lacks: adding a backend to the catalog
// without saying what it needs here fails.
func TestBackendNeedsCoverCatalog(t *testing.T) {
	listed := map[string]bool{}
	for _, p := range catalog.OfKind(catalog.Hypervisor) {
		listed[p.Name] = true
		if backendNeeds[p.Name] == nil {
			t.Errorf("the catalog lists the backend %s, but doctor's backendNeeds does not say what it needs", p.Name)
		}
	}
	for name := range backendNeeds {
		if !listed[name] {
			t.Errorf("backendNeeds describes %s, which is no hypervisor plugin of the catalog", name)
		}
	}
}

// TestOwnPlugins: doctor holds the catalog's plugins to petrel's version,
// and third-party plugins to none.
func TestOwnPlugins(t *testing.T) {
	for _, p := range catalog.All() {
		if !isOwnBinary("/usr/libexec/petrel/" + p.Binary()) {
			t.Errorf("%s is not taken for one of Petrel's own plugins", p.Binary())
		}
	}
	if isOwnBinary("/usr/libexec/petrel/petrel-plugin-jsonl") || !isOwnBinary("/usr/libexec/petrel/petrel-shim") {
		t.Error("petrel-plugin-jsonl taken for Petrel's own, or petrel-shim not")
	}
}

func TestCheckPlugins(t *testing.T) {
	empty, dir := t.TempDir(), t.TempDir()
	env := hostEnv{pluginDirs: []string{empty, dir}, lookPath: func(string) (string, error) { return "", errors.New("not found") }}
	ctx := context.Background()
	rs := checkPlugins(ctx, env, "1.0")
	if len(rs) != 1 {
		t.Fatalf("got %v", rs)
	}
	expect(t, rs[0], statusFail, "no plugins")

	writeFile(t, filepath.Join(dir, "petrel-plugin-hvt"), "#!/bin/sh\n", 0o755)
	writeFile(t, filepath.Join(dir, "petrel-plugin-influx"), "#!/bin/sh\n", 0o644)
	rs = checkPlugins(ctx, env, "1.0")
	if len(rs) != 3 {
		t.Fatalf("got %v", rs)
	}
	expect(t, rs[0], statusOK, "petrel-plugin-hvt (version unknown: it does not answer --version")
	expect(t, rs[1], statusFail, "not an executable file")
	expect(t, rs[2], statusFail, "petrel-shim is neither in")

	// Plugins and the shim say their versions (as Petrel's answer
	// --version with the one their Info reports).
	env.run = defaultHostEnv("", "", dir).run
	writeFile(t, filepath.Join(dir, "petrel-plugin-hvt"), "#!/bin/sh\necho petrel-plugin-hvt 1.0\n", 0o755)
	writeFile(t, filepath.Join(dir, "petrel-plugin-influx"), "#!/bin/sh\n", 0o777)
	writeFile(t, filepath.Join(dir, "petrel-shim"), "#!/bin/sh\necho petrel-shim 0.9\n", 0o755)
	rs = checkPlugins(ctx, env, "1.0")
	expect(t, rs[0], statusOK, "petrel-plugin-hvt 1.0")
	expect(t, rs[1], statusFail, "writable by others")
	expect(t, rs[2], statusWarn, "petrel-shim is version 0.9, petrel is 1.0")
}

func TestCheckQEMU(t *testing.T) {
	dir := t.TempDir()
	env := defaultHostEnv("", "", dir)
	env.lookPath = func(string) (string, error) { return "", errors.New("not found") }
	expect(t, checkQEMU(context.Background(), env), statusOK, "only the qemu backend needs it (virtio unikernels, Linux guests); to use it, apt install qemu-system-x86")
	qemu := filepath.Join(dir, "qemu-system-x86_64")
	writeFile(t, qemu, "#!/bin/sh\necho 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)'\n", 0o755)
	env.lookPath = func(string) (string, error) { return qemu, nil }
	expect(t, checkQEMU(context.Background(), env), statusOK, qemu+" (QEMU 7.2.15)")
	writeFile(t, qemu, "#!/bin/sh\necho 'error while loading shared libraries' >&2; exit 127\n", 0o755)
	expect(t, checkQEMU(context.Background(), env), statusWarn, "--version failed")
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
	if v := buildVersion(p); v != "" {
		t.Errorf("version of a script: %q", v)
	}
	// The test binary is a Go binary; it must be read without error.
	if _, err := os.Stat(os.Args[0]); err == nil {
		_ = buildVersion(os.Args[0])
	}
	// --version answers win; one that does not name the binary is not
	// taken for a version.
	env := defaultHostEnv("", "", "")
	writeFile(t, p, "#!/bin/sh\necho script 2.0\n", 0o755)
	if v := binaryVersion(context.Background(), env, p); v != "2.0" {
		t.Errorf("version of a script answering --version: %q", v)
	}
	writeFile(t, p, "#!/bin/sh\necho This binary is a plugin.\n", 0o755)
	if v := binaryVersion(context.Background(), env, p); v != "" {
		t.Errorf("version of a script answering something else: %q", v)
	}
}

// fakeDaemon answers Version, Host, Plugins and PluginHealth; other
// methods are not called.
type fakeDaemon struct {
	daemonv1.DaemonClient
	versionErr error
	api        uint32
	host       *daemonv1.HostResponse
	hostErr    error
	plugins    []*daemonv1.Plugin
	// pluginsErr is Plugins' answer when set, and summary PluginHealth's.
	pluginsErr error
	summary    []*daemonv1.PluginHealthEntry
}

func (f *fakeDaemon) Version(context.Context, *daemonv1.VersionRequest, ...grpc.CallOption) (*daemonv1.VersionResponse, error) {
	if f.versionErr != nil {
		return nil, f.versionErr
	}
	return &daemonv1.VersionResponse{Version: "1.0", ApiVersion: f.api}, nil
}

func (f *fakeDaemon) Host(context.Context, *daemonv1.HostRequest, ...grpc.CallOption) (*daemonv1.HostResponse, error) {
	if f.host == nil && f.hostErr == nil {
		return nil, status.Error(codes.Unimplemented, "unknown method Host")
	}
	return f.host, f.hostErr
}

func (f *fakeDaemon) Plugins(context.Context, *daemonv1.PluginsRequest, ...grpc.CallOption) (*daemonv1.PluginsResponse, error) {
	if f.pluginsErr != nil {
		return nil, f.pluginsErr
	}
	return &daemonv1.PluginsResponse{Plugins: f.plugins}, nil
}

func (f *fakeDaemon) PluginHealth(context.Context, *daemonv1.PluginHealthRequest, ...grpc.CallOption) (*daemonv1.PluginHealthResponse, error) {
	return &daemonv1.PluginHealthResponse{Plugins: f.summary}, nil
}

func TestAskDaemon(t *testing.T) {
	ctx := context.Background()
	view, rs := askDaemon(ctx, &fakeDaemon{versionErr: status.Error(codes.Unavailable, "dial unix /x: connect: no such file or directory")}, "/x")
	if view != nil {
		t.Errorf("a daemon that does not answer gave %+v", view)
	}
	expect(t, rs[0], statusFail, "systemctl start petreld")
	_, rs = askDaemon(ctx, &fakeDaemon{versionErr: status.Error(codes.Unavailable, "connect: permission denied")}, "/x")
	expect(t, rs[0], statusFail, "join the socket's group")
	_, rs = askDaemon(ctx, &fakeDaemon{api: 2, host: &daemonv1.HostResponse{}}, "/x")
	expect(t, rs[0], statusFail, "daemon API v2, this petrel v1")

	// A petreld from before Host: its plugins count, its directories are
	// guessed, and doctor says so.
	view, rs = askDaemon(ctx, &fakeDaemon{api: 1, plugins: []*daemonv1.Plugin{{Name: "hvt"}}}, "/x")
	if view == nil || view.host != nil || len(view.plugins) != 1 || len(rs) != 2 {
		t.Fatalf("older daemon: %+v, %v", view, rs)
	}
	expect(t, rs[0], statusOK, "petreld 1.0 at /x (daemon API v1)")
	expect(t, rs[1], statusWarn, "does not report its configuration: the checks below look at the defaults")

	view, rs = askDaemon(ctx, &fakeDaemon{api: 1, host: &daemonv1.HostResponse{DataDir: "/srv/petrel"}}, "/x")
	if view == nil || view.host.GetDataDir() != "/srv/petrel" || len(rs) != 1 {
		t.Fatalf("current daemon: %+v, %v", view, rs)
	}
}

// TestDoctorDelegate: to a delegate, which petreld shows neither its
// configuration nor its full plugin list, doctor says so once and checks
// the backends and plugins from the health summary: what each runs and
// whether it is healthy, with no versions, restarts or problems made up.
func TestDoctorDelegate(t *testing.T) {
	reserved := func(m string) error {
		return status.Errorf(codes.PermissionDenied, "%s describes the host and is reserved to its owner; certificate domain \"alice\"", m)
	}
	d := &fakeDaemon{api: 1, hostErr: reserved("Host"), pluginsErr: reserved("Plugins"), summary: []*daemonv1.PluginHealthEntry{
		{Name: "hvt", Kind: "hypervisor", Health: "healthy", Targets: []string{"hvt"}},
		{Name: "qemu", Kind: "hypervisor", Health: "unhealthy"},
		{Name: "spt", Kind: "hypervisor", Health: "down"},
		{Name: "influx", Kind: "metrics", Health: "degraded"},
	}}
	view, rs := askDaemon(context.Background(), d, "host.example.org:1025")
	if view == nil || !view.summary || len(view.plugins) != 4 || len(rs) != 3 {
		t.Fatalf("delegate: %+v, %v", view, rs)
	}
	expect(t, rs[1], statusWarn, "petreld does not show its configuration to this caller")
	expect(t, rs[2], statusOK, "health summary: their versions, paths and what they miss are reserved to the host's owner")

	rs = checkDaemonBackends(view)
	if len(rs) != 4 {
		t.Fatalf("backends: %v", rs)
	}
	expect(t, rs[0], statusOK, "hvt runs hvt")
	expect(t, rs[1], statusWarn, "qemu cannot run VMs: petreld reports what it misses to the host's owner only")
	expect(t, rs[2], statusFail, "spt is down: its plugin exited (the host's owner finds why in petreld's log)")
	expect(t, rs[3], statusOK, "petreld runs hvt (hvt); not qemu (unhealthy), spt (its plugin is down)")

	rs = checkDaemonPlugins(context.Background(), hostEnv{}, view, "1.0", false)
	if len(rs) != 4 {
		t.Fatalf("plugins: %v", rs)
	}
	expect(t, rs[0], statusOK, "hvt (hypervisor) healthy")
	expect(t, rs[1], statusWarn, "qemu (hypervisor) unhealthy; petreld reports what it misses to the host's owner only")
	expect(t, rs[2], statusFail, "spt (hypervisor) down: not running (the host's owner finds why in petreld's log)")
	expect(t, rs[3], statusWarn, "influx (metrics) degraded; petreld reports what it misses to the host's owner only")
	for _, r := range rs {
		if strings.Contains(r.Message, "version") || strings.Contains(r.Message, "restarted") {
			t.Errorf("a line claims what the summary does not say: %+v", r)
		}
	}
}

// backendPlugins are what a petreld with hvt on KVM, spt with the built-in
// tender and qemu without QEMU reports.
var backendPlugins = []*daemonv1.Plugin{
	{Name: "hvt", Kind: "hypervisor", Version: "1.0", Health: "healthy", Path: "/p/petrel-plugin-hvt", Targets: []string{"hvt"},
		Attributes: map[string]string{"target": "hvt", "tender": "/usr/local/bin/solo5-hvt", "tender.abi_version": "2", "kvm": "usable", "shim": "/p/petrel-shim"}},
	{Name: "spt", Kind: "hypervisor", Version: "1.0", Health: "healthy", Path: "/p/petrel-plugin-spt", Targets: []string{"spt"},
		Attributes: map[string]string{"target": "spt", "tender": "/p/petrel-plugin-spt tender", "tender.abi_version": "2"}},
	{Name: "qemu", Kind: "hypervisor", Version: "1.0", Health: "unhealthy", Path: "/p/petrel-plugin-qemu",
		Description: "QEMU qemu-system-x86_64 not found",
		Problems:    []*pluginv1.Problem{{Description: "QEMU qemu-system-x86_64 not found", Fix: "apt install qemu-system-x86"}}},
	{Name: "influx", Kind: "metrics", Version: "0.9", Health: "down", Restarts: 3, Path: "/p/petrel-plugin-influx"},
	{Name: "jsonl", Health: "not enabled", Path: "/p/petrel-plugin-jsonl"},
}

// TestCheckDaemonBackends: each enabled backend is described from its own
// fingerprint, and what it misses comes with the command that fixes it;
// the summary follows the daemon, not this petrel's guess.
func TestCheckDaemonBackends(t *testing.T) {
	view := &daemonView{host: &daemonv1.HostResponse{Backends: []string{"hvt", "spt", "qemu"}, DefaultBackend: "hvt"}, plugins: backendPlugins}
	rs := checkDaemonBackends(view)
	if len(rs) != 4 {
		t.Fatalf("got %v", rs)
	}
	expect(t, rs[0], statusOK, "hvt runs Solo5 hvt unikernels with /usr/local/bin/solo5-hvt (Solo5 ABI 2), on KVM")
	expect(t, rs[1], statusOK, "spt runs Solo5 spt unikernels with Petrel's built-in tender (Solo5 ABI 2), without KVM")
	expect(t, rs[2], statusWarn, "qemu cannot run VMs: QEMU qemu-system-x86_64 not found; fix: apt install qemu-system-x86")
	expect(t, rs[3], statusOK, "petreld runs hvt (solo5-hvt, on KVM), spt (built-in tender, without KVM); not qemu (apt install qemu-system-x86)")

	qemu := &daemonv1.Plugin{Name: "qemu", Kind: "hypervisor", Health: "healthy",
		Attributes: map[string]string{"qemu": "/usr/bin/qemu-system-x86_64", "qemu.version": "7.2.15", "accel.virtio": "tcg", "accel.linux": "tcg"},
		Problems:   []*pluginv1.Problem{{Description: "KVM unusable: open /dev/kvm: no such file or directory: guests run under TCG", Fix: "modprobe kvm_intel"}}}
	view = &daemonView{host: &daemonv1.HostResponse{Backends: []string{"qemu", "hvt"}, DefaultBackend: "hvt"},
		plugins: []*daemonv1.Plugin{qemu, {Name: "hvt", Kind: "hypervisor", Health: "unhealthy", Description: "open /dev/kvm: no such file or directory"}}}
	rs = checkDaemonBackends(view)
	expect(t, rs[0], statusOK, "qemu runs Solo5 virtio unikernels under TCG (software emulation, slow) and Linux guests under TCG (software emulation, slow) with /usr/bin/qemu-system-x86_64 (QEMU 7.2.15); KVM unusable")
	expect(t, rs[0], statusOK, "fix: modprobe kvm_intel")
	expect(t, rs[1], statusWarn, "hvt cannot run VMs: open /dev/kvm")
	expect(t, rs[2], statusWarn, "the default backend hvt cannot run VMs")

	view = &daemonView{host: &daemonv1.HostResponse{Backends: []string{"hvt"}}, plugins: []*daemonv1.Plugin{{Name: "hvt", Health: "down"}}}
	rs = checkDaemonBackends(view)
	expect(t, rs[0], statusFail, "hvt is down")
	expect(t, rs[1], statusFail, "petreld can run no VMs on this host")
}

func TestCheckDaemonPlugins(t *testing.T) {
	view := &daemonView{plugins: backendPlugins}
	rs := checkDaemonPlugins(context.Background(), hostEnv{}, view, "1.0", false)
	if len(rs) != 5 {
		t.Fatalf("got %v", rs)
	}
	expect(t, rs[0], statusOK, "hvt (hypervisor) 1.0 healthy: /p/petrel-plugin-hvt")
	expect(t, rs[2], statusWarn, "qemu (hypervisor) 1.0 unhealthy: /p/petrel-plugin-qemu; the backend line above says what it misses")
	expect(t, rs[3], statusFail, "influx (metrics) 0.9 down")
	expect(t, rs[4], statusOK, "jsonl (version unknown) not enabled: /p/petrel-plugin-jsonl")
}

func TestCheckConfig(t *testing.T) {
	h := &daemonv1.HostResponse{ConfigFile: "/etc/petrel/petreld.hcl", DataDir: "/srv/petrel", RunDir: "/run/p", PluginDir: "/opt/petrel",
		Backends: []string{"hvt", "spt"}, DefaultBackend: "spt", Networks: []string{"bridge"}, Metrics: []string{"influx"}}
	expect(t, checkConfig(h), statusOK, "/etc/petrel/petreld.hcl: data_dir /srv/petrel, run_dir /run/p, plugin_dir /opt/petrel; backends hvt, spt (default); network bridge; metrics influx")
	expect(t, checkConfig(&daemonv1.HostResponse{}), statusFail, "the embedded defaults and flags (no --config)")
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
// there: it says it checks the defaults, still checks the host, reports
// the daemon as FAIL and exits 1.
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
	for _, c := range []string{"kvm", "tun", "bridges", "tender", "qemu", "plugin", "backends", "daemon", "data-dir", "cgroups"} {
		if _, ok := seen[c]; !ok {
			t.Errorf("no %s check in %s", c, out.String())
		}
	}
	if seen["daemon"] != statusFail || seen["plugin"] != statusFail {
		t.Errorf("daemon %s and plugin %s, want both FAIL", seen["daemon"], seen["plugin"])
	}
	if rs[0].Check != "daemon" || !strings.Contains(rs[0].Message, "the checks below look at the defaults (data directory "+dir) {
		t.Errorf("the first line does not say the defaults are checked: %+v", rs[0])
	}

	out.Reset()
	printChecks(&out, []checkResult{ok("kvm", "fine"), fail("daemon", "down")})
	if want := "OK    kvm       fine\nFAIL  daemon    down\n"; out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
}

// daemonServer is a petreld that answers what doctor asks.
type daemonServer struct {
	daemonv1.UnimplementedDaemonServer
	host    *daemonv1.HostResponse
	plugins []*daemonv1.Plugin
}

func (d *daemonServer) Version(context.Context, *daemonv1.VersionRequest) (*daemonv1.VersionResponse, error) {
	return &daemonv1.VersionResponse{Version: "7.7", ApiVersion: daemonAPIVersion}, nil
}

func (d *daemonServer) Host(context.Context, *daemonv1.HostRequest) (*daemonv1.HostResponse, error) {
	return d.host, nil
}

func (d *daemonServer) Plugins(context.Context, *daemonv1.PluginsRequest) (*daemonv1.PluginsResponse, error) {
	return &daemonv1.PluginsResponse{Plugins: d.plugins}, nil
}

// TestDoctorFollowsDaemon runs the whole command against a petreld whose
// directories are not the defaults: doctor checks its data directory and
// plugins, with the versions petreld reports, and describes its backends
// from their fingerprints instead of looking for tenders on PATH.
func TestDoctorFollowsDaemon(t *testing.T) {
	dir := t.TempDir()
	data, plugins := filepath.Join(dir, "data"), filepath.Join(dir, "plugins")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	hvt, shim := filepath.Join(plugins, "petrel-plugin-hvt"), filepath.Join(plugins, "petrel-shim")
	writeFile(t, hvt, "#!/bin/sh\n", 0o755)
	writeFile(t, shim, "#!/bin/sh\necho petrel-shim 7.7\n", 0o755)
	sock := filepath.Join(dir, "petreld.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	daemonv1.RegisterDaemonServer(srv, &daemonServer{
		host: &daemonv1.HostResponse{ConfigFile: filepath.Join(dir, "petreld.hcl"), DataDir: data, RunDir: dir, PluginDir: plugins,
			Socket: sock, Backends: []string{"hvt"}, DefaultBackend: "hvt"},
		plugins: []*daemonv1.Plugin{{Name: "hvt", Kind: "hypervisor", Version: "7.7", Health: "healthy", Path: hvt,
			Attributes: map[string]string{"target": "hvt", "tender": hvt + " tender", "kvm": "usable", "shim": shim}}},
	})
	go srv.Serve(lis)
	defer srv.Stop()

	var out, errw bytes.Buffer
	a := &app{socket: sock, out: &out, errw: &errw}
	cmd := a.doctorCmd()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetArgs([]string{"--json"})
	cmd.SetOut(&out)
	cmd.SetErr(&errw)
	_ = cmd.Execute() // the host's own checks may fail here
	var rs []checkResult
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	byCheck := map[string][]checkResult{}
	for _, r := range rs {
		byCheck[r.Check] = append(byCheck[r.Check], r)
	}
	if len(byCheck["tender"]) != 0 || len(byCheck["qemu"]) != 0 {
		t.Errorf("with petreld answering, doctor looked for tenders and QEMU on PATH:\n%s", out.String())
	}
	for _, c := range []struct {
		check, want string
		st          checkStatus
	}{
		{"daemon", "petreld 7.7 at " + sock, statusOK},
		{"config", "petreld.hcl: data_dir " + data, statusOK},
		{"backend", "hvt runs Solo5 hvt unikernels with Petrel's built-in tender, on KVM", statusOK},
		{"backends", "petreld runs hvt (built-in tender, on KVM)", statusOK},
		{"plugin", "hvt (hypervisor) 7.7 healthy: " + hvt, statusOK},
		{"plugin", shim + " 7.7", statusOK},
		{"data-dir", data + " mode 0700", statusOK},
	} {
		found := false
		for _, r := range byCheck[c.check] {
			found = found || (r.Status == c.st && strings.Contains(r.Message, c.want))
		}
		if !found && !(c.check == "data-dir" && os.Geteuid() != 0) {
			t.Errorf("no %s %s line containing %q in:\n%s", c.st, c.check, c.want, out.String())
		}
	}
	if strings.Contains(out.String(), defaultDataDir) {
		t.Errorf("doctor checked the default data directory though petreld uses %s:\n%s", data, out.String())
	}
}
