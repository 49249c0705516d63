package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/plugins/catalog"
	"github.com/petrel-vmm/petrel/sdk/client"
	"github.com/petrel-vmm/petrel/sdk/kvm"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest/faketender"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// binDir holds petreld, petrel, petrel-shim and the plugins: $PETREL_BIN
// (make test sets it) or a fresh build in a temporary directory.
var binDir string

func TestMain(m *testing.M) {
	faketender.MaybeRun()
	code := func() int {
		if d := os.Getenv("PETREL_BIN"); d != "" {
			binDir = d
			return m.Run()
		}
		tmp, err := os.MkdirTemp("", "petrel-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		for _, b := range testBuilds() {
			if err := goBuild(filepath.Join(tmp, b.out), b.pkg, b.flags...); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		binDir = tmp
		return m.Run()
	}()
	os.Exit(code)
}

// testBuild is one binary TestMain builds: its name, its Go package and
// go build flags.
type testBuild struct {
	out, pkg string
	flags    []string
}

// testBuilds are the binaries TestMain builds: the commands, the plugins
// petreld's defaults enable (from the catalog, with the build flags it
// gives them; needPlugins builds the others when a test asks) and the
// example metrics plugin.
func testBuilds() []testBuild {
	bs := []testBuild{{"petrel", "./cmd/petrel", nil}, {"petreld", "./cmd/petreld", nil}, {"petrel-shim", "./cmd/petrel-shim", nil},
		{"petrel-endpoint", "./cmd/petrel-endpoint", nil}, {"petrel-kubelet", "./cmd/petrel-kubelet", nil},
		{"petrel-plugin-jsonl", "./contrib/metrics-plugin-example", nil}}
	for _, p := range catalog.All() {
		if p.Default {
			bs = append(bs, testBuild{p.Binary(), p.Package(), p.BuildFlags()})
		}
	}
	return bs
}

// goBuild builds pkg (relative to the repository's root) into out.
func goBuild(out, pkg string, flags ...string) error {
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// env is one petreld installation in a temporary directory.
type env struct {
	t       testing.TB
	dir     string
	dataDir string
	runDir  string
	config  string
	socket  string

	// netns, when set, is the network namespace petreld runs in.
	netns string
	// withoutKVM runs petreld as on a host without /dev/kvm
	// (contrib/scripts/without-kvm.sh).
	withoutKVM bool

	mu  sync.Mutex
	cmd *exec.Cmd
	log *bytes.Buffer
}

func newEnv(t *testing.T) *env { return newEnvTB(t) }

// realBackend is the backend real-guest tests boot Petrel's guests on:
// hvt with its built-in tender where KVM is usable, and spt with its
// built-in tender otherwise, so that every host runs them.
// PETREL_TEST_BACKEND=spt (or hvt) chooses instead.
func realBackend() (name, why string) {
	realOnce.Do(func() {
		switch b := os.Getenv("PETREL_TEST_BACKEND"); {
		case b == "hvt" || b == "spt":
			realName, realWhy = b, "PETREL_TEST_BACKEND="+b
		case kvm.Probe() != nil:
			realName, realWhy = "spt", fmt.Sprintf("KVM is unusable (%v)", kvm.Probe())
		default:
			realName, realWhy = "hvt", "KVM is usable"
		}
	})
	return realName, realWhy
}

var (
	realOnce          sync.Once
	realName, realWhy string
)

// newBuiltinEnv is an installation whose hvt and spt backends use the
// built-in tenders, for real guests.
func newBuiltinEnv(t *testing.T) *env {
	backend, why := realBackend()
	t.Logf("real guests run on %s: %s", backend, why)
	e := newEnvTB(t)
	e.useBuiltinTenders()
	return e
}

// useBuiltinTenders switches the installation's hvt and spt backends from
// the fake tenders to the built-in ones; petreld reads it at its next
// start.
func (e *env) useBuiltinTenders() {
	e.t.Helper()
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		e.t.Fatal(err)
	}
	fixed := string(cfg)
	for _, block := range []string{
		fmt.Sprintf("settings = { tender = %q, engine = \"external\", needs_kvm = \"false\" }", filepath.Join(e.dir, "solo5-hvt")),
		fmt.Sprintf("settings = { tender = %q }", filepath.Join(e.dir, "solo5-spt")),
	} {
		next := strings.Replace(fixed, block, `settings = { engine = "builtin" }`, 1)
		if next == fixed {
			e.t.Fatalf("could not switch %q to the built-in tender", block)
		}
		fixed = next
	}
	if err := os.WriteFile(e.config, []byte(fixed), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// guest returns the path of one of Petrel's test unikernels built for the
// real backend, built once per test binary ($PETREL_GUESTS when make
// built them already).
func guest(t testing.TB, name string) string {
	t.Helper()
	backend, _ := realBackend()
	return guestFor(t, name, backend)
}

// guestFor returns the path of test unikernel name built for a target.
func guestFor(t testing.TB, name, target string) string {
	t.Helper()
	guestsOnce.Do(func() {
		if d := os.Getenv("PETREL_GUESTS"); d != "" {
			guestsDir = d
			return
		}
		if _, err := exec.LookPath("gcc"); err != nil {
			guestsErr = fmt.Errorf("needs gcc to build the test unikernels: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "petrel-guests-")
		if err != nil {
			guestsErr = err
			return
		}
		out, err := exec.Command("make", "-s", "-C", "../../contrib/guests", "OUT="+dir).CombinedOutput()
		if err != nil {
			guestsErr = fmt.Errorf("build guests: %v\n%s", err, out)
			return
		}
		guestsDir = dir
	})
	if guestsErr != nil {
		t.Fatal(guestsErr)
	}
	p := filepath.Join(guestsDir, name+"."+target)
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	guestsOnce sync.Once
	guestsDir  string
	guestsErr  error
)

func newEnvTB(t testing.TB) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (petreld manages processes and sockets under its run directory)")
	}
	dir, err := os.MkdirTemp("/tmp", "pt")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, dataDir: filepath.Join(dir, "data"), runDir: filepath.Join(dir, "run")}
	e.socket = filepath.Join(e.runDir, "petreld.sock")
	hvt, err := faketender.WriteWrapper(dir, "solo5-hvt")
	if err != nil {
		t.Fatal(err)
	}
	spt, err := faketender.WriteWrapper(dir, "solo5-spt")
	if err != nil {
		t.Fatal(err)
	}
	e.config = filepath.Join(dir, "petreld.hcl")
	cfg := fmt.Sprintf(`
data_dir = %q
run_dir = %q
plugin_dir = %q
stop_timeout = "2s"
restart_backoff_min = "100ms"
restart_backoff_max = "400ms"
plugin_health_interval = "1s"
backend "hvt" {
  settings = { tender = %q, engine = "external", needs_kvm = "false" }
}
backend "spt" {
  settings = { tender = %q }
}
`, e.dataDir, e.runDir, binDir, hvt, spt)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cleanup)
	return e
}

// inNetns makes petreld run in a fresh network namespace with a bridge
// br0 (MTU 1400, address 10.77.0.1/24), removed when the test ends.
func (e *env) inNetns() {
	e.t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		e.t.Skip("needs ip (iproute2) to set up a network namespace")
	}
	e.netns = "petrel-it-" + filepath.Base(e.dir)
	e.sh("ip", "netns", "add", e.netns)
	e.t.Cleanup(func() { exec.Command("ip", "netns", "delete", e.netns).Run() })
	e.sh("ip", "-n", e.netns, "link", "set", "lo", "up")
	e.sh("ip", "-n", e.netns, "link", "add", "br0", "type", "bridge")
	e.sh("ip", "-n", e.netns, "link", "set", "br0", "mtu", "1400", "up")
	e.sh("ip", "-n", e.netns, "addr", "add", "10.77.0.1/24", "dev", "br0")
}

// sh runs a setup command and fails the test if it fails.
func (e *env) sh(name string, args ...string) string {
	e.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// instanceID is the instance id petreld gave its data directory.
func (e *env) instanceID() string {
	e.t.Helper()
	info, err := store.ReadInfo(e.dataDir)
	if err != nil || info.InstanceID == "" {
		e.t.Fatalf("instance id of %s: %+v, %v", e.dataDir, info, err)
	}
	return info.InstanceID
}

// links lists the interfaces in the namespace, with their details.
func (e *env) links() string {
	out, _ := exec.Command("ip", "-n", e.netns, "-d", "link", "show").CombinedOutput()
	return string(out)
}

// start runs petreld and waits for its socket.
func (e *env) start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = &bytes.Buffer{}
	cmd := exec.Command(filepath.Join(binDir, "petreld"), "--config", e.config, "--log-level", "debug")
	if e.netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", e.netns}, cmd.Args...)...)
	}
	if e.withoutKVM {
		cmd = exec.Command(withoutKVMScript(e.t), cmd.Args...)
	}
	cmd.Stdout, cmd.Stderr = e.log, e.log
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", e.socket); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("petreld did not come up:\n%s", e.log)
}

// withoutKVMScript returns the script that runs a command as on a host
// without /dev/kvm, skipping the test where it cannot work.
func withoutKVMScript(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux) to hide /dev/kvm from petreld:", err)
	}
	p, err := filepath.Abs("../../contrib/scripts/without-kvm.sh")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// kill9 kills petreld with SIGKILL.
func (e *env) kill9() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		e.cmd.Process.Kill()
		e.cmd.Wait()
		e.cmd = nil
	}
}

// stop stops petreld gracefully.
func (e *env) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		e.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { e.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			e.cmd.Process.Kill()
			<-done
		}
		e.cmd = nil
	}
}

func (e *env) pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cmd.Process.Pid
}

func (e *env) cleanup() {
	// Destroy whatever a failed test left, then stop the daemon; its log
	// is complete (and no longer written) only then.
	if e.cmd != nil {
		for _, vm := range e.infoAll() {
			e.petrel("destroy", vm.Name)
		}
	}
	e.stop()
	if (e.t.Failed() || os.Getenv("PETREL_SHOW_LOG") != "") && e.log != nil {
		e.t.Logf("petreld log:\n%s", e.log)
	}
	for _, p := range processesUnder(e.dir) {
		syscall.Kill(p, syscall.SIGKILL)
	}
	os.RemoveAll(e.dir)
}

// result is a CLI invocation's outcome.
type result struct {
	out, err string
	code     int
}

func (e *env) petrel(args ...string) result {
	return runCLI(exec.Command(filepath.Join(binDir, "petrel"), append([]string{"--socket", e.socket}, args...)...))
}

// runCLI runs a command of the CLI and collects its outcome.
func runCLI(cmd *exec.Cmd) result {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return result{out: out.String(), err: errb.String(), code: code}
}

func (e *env) mustPetrel(args ...string) string {
	e.t.Helper()
	r := e.petrel(args...)
	if r.code != 0 {
		e.t.Fatalf("petrel %v: exit %d: %s%s", args, r.code, r.out, r.err)
	}
	return r.out
}

type vmInfo struct {
	Name       string   `json:"name"`
	State      string   `json:"state"`
	Backend    string   `json:"backend"`
	Pid        int      `json:"pid"`
	ShimPid    int      `json:"shim_pid"`
	ExitCode   *int     `json:"exit_code"`
	ExitSignal *int32   `json:"exit_signal"`
	Restarts   int      `json:"restarts"`
	Args       []string `json:"args"`
	Message    string   `json:"message"`
	Command    []string `json:"command"`
	Nets       []struct {
		Tap string `json:"tap"`
	} `json:"nets"`
}

func (e *env) infoAll() []vmInfo {
	r := e.petrel("info", "--json")
	var vms []vmInfo
	if r.code == 0 {
		json.Unmarshal([]byte(r.out), &vms)
	}
	return vms
}

func (e *env) info(name string) vmInfo {
	e.t.Helper()
	out := e.mustPetrel("info", name, "--json")
	var vms []vmInfo
	if err := json.Unmarshal([]byte(out), &vms); err != nil || len(vms) != 1 {
		e.t.Fatalf("info %s: %v: %s", name, err, out)
	}
	return vms[0]
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// image writes a Solo5 image for target with the given devices.
func (e *env) image(name string, target solo5.Target, devices ...solo5.Device) string {
	e.t.Helper()
	b, err := solo5.Build(solo5.BuildSpec{Target: target, ABIVersion: faketender.ABIVersion, Devices: devices})
	if err != nil {
		e.t.Fatal(err)
	}
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is not alive.
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// processesUnder lists live processes whose command line mentions dir.
func processesUnder(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", en.Name(), "cmdline"))
		if err != nil || !alive(pid) {
			continue
		}
		// A shim that was a spare names its VM's directory by its working
		// directory, not its command line.
		cwd, _ := os.Readlink(filepath.Join("/proc", en.Name(), "cwd"))
		if bytes.Contains(b, []byte(dir)) || strings.HasPrefix(cwd, dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// children lists live processes whose parent is ppid and whose command
// line contains substr.
func children(ppid int, substr string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", en.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(ppid) || f[0] == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", en.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte(substr)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// runDirEntries lists what is left in the VM runtime directories.
func (e *env) runDirEntries() []string {
	var left []string
	filepath.Walk(filepath.Join(e.runDir, "vms"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, p)
		}
		if err == nil && fi.IsDir() && strings.Count(strings.TrimPrefix(p, e.runDir), "/") >= 3 {
			left = append(left, p+"/")
		}
		return nil
	})
	return left
}

// apiClient drives petreld through the Go client, for loops where
// starting the CLI each time would dominate.
type apiClient struct {
	c      *client.Client
	images map[string]string
}

func (e *env) client() *apiClient {
	e.t.Helper()
	c, err := client.Dial(e.socket)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &apiClient{c: c, images: map[string]string{}}
}

// create deploys image as name, with NAME:BRIDGE network attachments.
func (a *apiClient) create(name, image string, nets ...string) error {
	ctx := context.Background()
	sha, ok := a.images[image]
	if !ok {
		ref, err := a.c.UploadImageFile(ctx, image, nil)
		if err != nil {
			return err
		}
		sha = ref.GetSha256()
		a.images[image] = sha
	}
	req := &daemonv1.CreateRequest{Name: name, ImageSha256: sha, MemoryMb: 16, Args: []string{"run=forever"}}
	for _, n := range nets {
		nm, br, _ := strings.Cut(n, ":")
		req.Nets = append(req.Nets, &daemonv1.NetAttachment{Name: nm, Bridge: br})
	}
	_, err := a.c.API.Create(ctx, req)
	return err
}

func (a *apiClient) destroy(name string) error {
	_, err := a.c.API.Destroy(context.Background(), &daemonv1.DestroyRequest{Name: name})
	return err
}

// pluginBuildMu serialises building missing plugins into binDir.
var pluginBuildMu sync.Mutex

// needPlugins makes sure binDir holds petrel-plugin-NAME for each of
// Petrel's plugins named: the test binary's own build directory gets them
// built on demand, as the catalog says; a $PETREL_BIN without them (make
// build puts them there) skips the test.
func needPlugins(t *testing.T, names ...string) {
	t.Helper()
	pluginBuildMu.Lock()
	defer pluginBuildMu.Unlock()
	for _, n := range names {
		p, ok := catalog.Lookup(n)
		if !ok {
			t.Fatalf("%s is not one of Petrel's plugins (plugins/catalog/plugins.txt)", n)
		}
		bin := filepath.Join(binDir, p.Binary())
		if _, err := os.Stat(bin); err == nil {
			continue
		}
		if os.Getenv("PETREL_BIN") != "" {
			t.Skipf("%s is missing from $PETREL_BIN (make build puts it there)", bin)
		}
		if err := goBuild(bin, p.Package(), p.BuildFlags()...); err != nil {
			t.Fatal(err)
		}
	}
}
