package integration

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// envInt reads a positive integer from the environment, or returns def.
func envInt(t testing.TB, name string, def int64) int64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// chaos is one random walk of operations and crashes against one
// petreld installation.
type chaos struct {
	t      *testing.T
	e      *env
	m      *model
	rng    *rand.Rand
	img    string // image without devices
	netImg string // image with the network device service0
	small  string // a small file to upload into block devices
	vms    []string
	disks  []string
	// counts of what the walk did, for the log.
	ops, crashes map[string]int
}

// crash kinds.
const (
	crashDaemon = "kill -9 petreld"
	crashPlugin = "kill -9 plugin"
	crashShim   = "kill -9 shim"
)

// TestChaos: a seeded random walk of creates (with and without a tap),
// destroys, restarts, block uploads and console followers, during which
// petreld, a plugin or a shim is killed with SIGKILL at random points;
// after every crash, and at the end, every invariant must hold.
// PETREL_CHAOS_ITERATIONS sets the length (default 30), PETREL_CHAOS_SEED
// replays a walk.
func TestChaos(t *testing.T) {
	iterations := int(envInt(t, "PETREL_CHAOS_ITERATIONS", 30))
	seed := envInt(t, "PETREL_CHAOS_SEED", 1)
	t.Logf("chaos: %d iterations, seed %d (replay with PETREL_CHAOS_SEED=%d)", iterations, seed, seed)

	// Crashes hit shims, plugins and petreld at any point, in the middle of
	// operations included. PETREL_CHAOS_GENTLE=1 limits plugin kills to
	// the gaps between operations and spares shims, to tell a crash bug
	// from another failure when replaying a seed.
	full := os.Getenv("PETREL_CHAOS_GENTLE") == ""
	if !full {
		t.Log("gentle mode: no shim kills, plugin kills only between operations")
	}

	e := newEnv(t)
	netns := true
	if _, err := exec.LookPath("ip"); err != nil {
		t.Log("no ip (iproute2): the walk creates no taps")
		netns = false
	} else {
		e.inNetns()
	}
	e.start()
	c := &chaos{
		t: t, e: e, m: newModel(), rng: rand.New(rand.NewSource(seed)),
		img: e.image("c.hvt", solo5.TargetHVT), small: filepath.Join(e.dir, "small.img"),
		vms:   []string{"chaos:a", "chaos:b", "chaos:c", "chaos:d", "solo", "team:x:y"},
		disks: []string{"chaos:disk0", "chaos:disk1"},
		ops:   map[string]int{}, crashes: map[string]int{},
	}
	if netns {
		c.netImg = e.image("cn.hvt", solo5.TargetHVT, netImage...)
	}
	data := make([]byte, 200<<10)
	for i := range data {
		data[i] = byte(i * 31)
	}
	if err := os.WriteFile(c.small, data, 0o600); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	for i := 0; i < iterations; i++ {
		op, what := c.pickOp()
		tapCreate := strings.HasSuffix(strings.TrimSuffix(what, " --force"), "with a tap")
		kind := ""
		switch r := c.rng.Intn(100); {
		case r < 12:
			kind = crashDaemon
		case r < 20:
			kind = crashPlugin
		case r < 28 && full:
			kind = crashShim
		}
		if kind == "" {
			op()
			continue
		}
		if kind == crashPlugin && !full {
			if c.crash(kind, c.rng.Int()) {
				c.crashes[kind]++
				t.Logf("iteration %d: %s before %s", i, kind, what)
				c.waitPlugins()
			}
			checkInvariants(t, e, c.m, 20*time.Second)
			op()
			continue
		}
		if kind == crashDaemon && tapCreate && !full {
			op()
			c.crash(kind, 0)
			c.crashes[kind]++
			t.Logf("iteration %d: %s after %s", i, kind, what)
			e.start()
			checkInvariants(t, e, c.m, 20*time.Second)
			continue
		}
		// The crash lands at a random point of the operation.
		delay := time.Duration(c.rng.Intn(80)) * time.Millisecond
		victim := c.rng.Int()
		done := make(chan struct{})
		go func() {
			defer close(done)
			op()
		}()
		time.Sleep(delay)
		if c.crash(kind, victim) {
			c.crashes[kind]++
			t.Logf("iteration %d: %s during %s (after %v)", i, kind, what, delay)
		}
		<-done
		if kind == crashDaemon {
			e.start()
		}
		checkInvariants(t, e, c.m, 20*time.Second)
	}
	checkInvariants(t, e, c.m, 20*time.Second)
	t.Logf("chaos: %d iterations in %v; operations %v; crashes %v", iterations, time.Since(start).Round(time.Millisecond), c.ops, c.crashes)

	// Everything can be removed, and then nothing is left.
	for _, n := range c.vms {
		c.m.destroyed(n, e.petrel("destroy", n).code)
	}
	for _, d := range c.disks {
		e.petrel("block", "destroy", d)
	}
	checkInvariants(t, e, c.m, 20*time.Second)
	if vms := e.infoAll(); len(vms) != 0 {
		t.Fatalf("VMs left after destroying all: %+v", vms)
	}
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("runtime files left: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(e.dataDir, "block", "*")); len(left) != 0 {
		t.Fatalf("block files left: %v", left)
	}
}

// pickOp chooses the next operation; it returns a function that runs it
// (safe to call on another goroutine: it records outcomes in the model
// and never fails the test) and a description.
func (c *chaos) pickOp() (func(), string) {
	e, m := c.e, c.m
	vm := c.vms[c.rng.Intn(len(c.vms))]
	disk := c.disks[c.rng.Intn(len(c.disks))]
	r := c.rng.Intn(100)
	switch {
	case r < 40:
		args := []string{"create", vm, c.img, "--mem", "16"}
		what := "create " + vm
		if c.netImg != "" && c.rng.Intn(2) == 0 {
			args = []string{"create", vm, c.netImg, "--mem", "16", "--net", "service0:br0"}
			what += " with a tap"
		}
		if c.rng.Intn(5) == 0 {
			args = append(args, "--arg", "exit=0", "--arg", "run=100ms")
		} else {
			args = append(args, "--arg", "run=forever", "--arg", "lines=2")
		}
		if c.rng.Intn(6) == 0 {
			args = append(args, "--force")
			what += " --force"
		}
		c.ops["create"]++
		return func() { m.created(vm, e.petrel(args...).code) }, what
	case r < 65:
		c.ops["destroy"]++
		return func() { m.destroyed(vm, e.petrel("destroy", vm).code) }, "destroy " + vm
	case r < 75:
		c.ops["restart"]++
		return func() { e.petrel("restart", vm, "--arg", "run=forever") }, "restart " + vm
	case r < 87:
		c.ops["block"]++
		remove := c.rng.Intn(3) == 0
		return func() {
			if e.petrel("block", "create", disk, "1", "--data", c.small).code == 5 {
				if remove {
					e.petrel("block", "destroy", disk)
				} else {
					e.petrel("block", "upload", disk, c.small)
				}
			}
		}, "block create/upload " + disk
	default:
		c.ops["console"]++
		follow := time.Duration(100+c.rng.Intn(300)) * time.Millisecond
		return func() {
			cmd := exec.Command(filepath.Join(binDir, "petrel"), "--socket", e.socket, "console", vm, "--follow")
			if err := cmd.Start(); err != nil {
				return
			}
			time.Sleep(follow)
			cmd.Process.Kill()
			cmd.Wait()
		}, "console --follow " + vm
	}
}

// crash kills the process kind names, chosen among its candidates by
// victim; it reports whether there was one to kill.
func (c *chaos) crash(kind string, victim int) bool {
	switch kind {
	case crashDaemon:
		c.e.kill9()
		return true
	case crashPlugin:
		plugins := children(c.e.pid(), "petrel-plugin-")
		if len(plugins) == 0 {
			return false
		}
		return syscall.Kill(plugins[victim%len(plugins)], syscall.SIGKILL) == nil
	case crashShim:
		var shims []int
		for _, pid := range processesUnder(c.e.dir) {
			if processKind(pid) == "shim" {
				shims = append(shims, pid)
			}
		}
		if len(shims) == 0 {
			return false
		}
		return syscall.Kill(shims[victim%len(shims)], syscall.SIGKILL) == nil
	}
	return false
}

// waitPlugins waits until petreld has restarted its killed plugin.
func (c *chaos) waitPlugins() {
	want := 2 // hvt and spt
	if c.netImg != "" {
		want++ // bridge
	}
	time.Sleep(100 * time.Millisecond) // let the killed plugin die
	waitFor(c.t, "plugins restarted", 20*time.Second, func() bool {
		return len(children(c.e.pid(), "petrel-plugin-")) >= want
	})
}

// mountTmpfs mounts a tmpfs with the given options on dir for the rest of
// the test, or skips when the host does not allow it. The unmount runs
// after petreld has been stopped and the VMs removed.
func mountTmpfs(t *testing.T, e *env, dir, opts string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("needs to mount a tmpfs (mount -t tmpfs -o %s): %v: %s", opts, err, out)
	}
	t.Cleanup(func() {
		if e.cmd != nil {
			for _, vm := range e.infoAll() {
				e.petrel("destroy", vm.Name)
			}
		}
		e.stop()
		for _, p := range processesUnder(e.dir) {
			syscall.Kill(p, syscall.SIGKILL)
		}
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
}

// fill writes to path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			break
		}
	}
	// Fill the last partial block too.
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			return
		}
	}
}

// TestChaosDiskFull: with the data directory's file system full, a
// create fails with a clear error and changes nothing; running VMs and
// the store are untouched, and once space is freed everything works.
func TestChaosDiskFull(t *testing.T) {
	e := newEnv(t)
	mountTmpfs(t, e, e.dataDir, "size=2m,mode=0700")
	e.start()
	m := newModel()
	img := e.image("f.hvt", solo5.TargetHVT)
	other := e.image("g.hvt", solo5.TargetHVT)
	// The same image with a different digest: a new upload.
	if f, err := os.OpenFile(other, os.O_APPEND|os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	} else {
		f.Write([]byte("another image"))
		f.Close()
	}
	m.created("before", e.petrel("create", "before", img, "--arg", "run=forever").code)
	checkInvariants(t, e, m, 10*time.Second)

	filler := filepath.Join(e.dataDir, "filler")
	fill(t, filler)
	for _, c := range []struct {
		what string
		args []string
	}{
		{"a VM record", []string{"create", "full", img, "--arg", "run=forever"}},
		{"a new image", []string{"create", "full2", other, "--arg", "run=forever"}},
		{"a block device", []string{"block", "create", "fulldisk", "1", "--data", img}},
	} {
		r := e.petrel(c.args...)
		if r.code == 0 {
			t.Fatalf("%s on a full disk succeeded: %s", c.what, r.out)
		}
		if !strings.Contains(r.err, "no space left on device") && !strings.Contains(r.err, "block storage would exceed") {
			t.Errorf("%s on a full disk: exit %d with an unclear error %q", c.what, r.code, r.err)
		}
		if len(c.args) > 1 && c.args[0] == "create" {
			m.created(c.args[1], r.code)
		}
	}
	if r := e.petrel("info", "full"); r.code != 4 {
		t.Fatalf("a create that failed on a full disk left a VM: exit %d %s", r.code, r.out)
	}
	m.destroyed("full", 0)
	m.destroyed("full2", 0)

	// The store stays readable while full, and after space is freed.
	if vms := e.infoAll(); len(vms) != 1 || vms[0].Name != "before" || vms[0].State != "running" {
		t.Fatalf("VMs while the disk is full: %+v", vms)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, e, m, 10*time.Second)
	m.created("after", e.petrel("create", "after", other, "--arg", "run=forever").code)
	e.kill9()
	e.start()
	checkInvariants(t, e, m, 10*time.Second)
	if got := e.info("after"); got.State != "running" {
		t.Fatalf("VM created after space was freed: %+v", got)
	}
}

// startFails runs petreld expecting it to refuse to start, and returns
// its exit code and output.
func startFails(t *testing.T, e *env) (int, string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(binDir, "petreld"), "--config", e.config)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), out.String()
		}
		return 0, out.String()
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("petreld kept running on a read-only data directory:\n%s", out.String())
		return 0, ""
	}
}

// TestChaosReadOnlyDataDir: petreld refuses to start on a read-only data
// directory with an error that says so, leaves the VMs running, and once
// the directory is writable again reattaches to them.
func TestChaosReadOnlyDataDir(t *testing.T) {
	e := newEnv(t)
	mountTmpfs(t, e, e.dataDir, "size=8m,mode=0700")
	e.start()
	m := newModel()
	img := e.image("r.hvt", solo5.TargetHVT)
	m.created("keeper", e.petrel("create", "keeper", img, "--arg", "run=forever").code)
	vm := e.info("keeper")
	e.stop()

	if out, err := exec.Command("mount", "-o", "remount,ro", e.dataDir).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v: %s", err, out)
	}
	code, out := startFails(t, e)
	if code == 0 {
		t.Fatalf("petreld exited 0 on a read-only data directory:\n%s", out)
	}
	if !strings.Contains(out, "read-only file system") || !strings.Contains(out, e.dataDir) {
		t.Errorf("petreld's error does not name the read-only data directory:\n%s", out)
	}
	if !alive(vm.Pid) || !alive(vm.ShimPid) {
		t.Fatal("the VM died while petreld could not start")
	}

	if out, err := exec.Command("mount", "-o", "remount,rw", e.dataDir).CombinedOutput(); err != nil {
		t.Fatalf("remount read-write: %v: %s", err, out)
	}
	e.start()
	checkInvariants(t, e, m, 10*time.Second)
	if got := e.info("keeper"); got.Pid != vm.Pid || got.State != "running" {
		t.Fatalf("after the data directory became writable: %+v (was pid %d)", got, vm.Pid)
	}
}

// TestChaosRestartDuringPluginCrash: `petrel restart` while the spt plugin
// is killed with SIGKILL 10–90 ms later, again and again, with a second
// VM that exits with code 3 and restarts on its own meanwhile. A start cut
// short by the crash is made again on the restarted plugin, which adopts
// the run the first attempt began: every restart succeeds, no VM that
// restarts on failure is ever failed, and no VM ever has two tenders or
// shims. PETREL_CHAOS_ITERATIONS sets the number of kills (default 20),
// PETREL_CHAOS_SEED the delays.
func TestChaosRestartDuringPluginCrash(t *testing.T) {
	iterations := int(envInt(t, "PETREL_CHAOS_ITERATIONS", 20))
	seed := envInt(t, "PETREL_CHAOS_SEED", 1)
	t.Logf("%d kills, seed %d (replay with PETREL_CHAOS_SEED=%d)", iterations, seed, seed)
	rng := rand.New(rand.NewSource(seed))
	e := newEnv(t)
	e.start()
	api := e.client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := api.c.API.Events(ctx, &daemonv1.EventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan string, 100)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			if ev.GetType() == "failed" {
				failed <- ev.GetName() + ": " + ev.GetMessage()
			}
		}
	}()
	img := e.image("r.spt", solo5.TargetSPT)
	m := newModel()
	m.created("r1", e.petrel("create", "r1", img, "--backend", "spt", "--arg", "run=forever", "--restart-on-fail").code)
	m.created("r2", e.petrel("create", "r2", img, "--backend", "spt", "--arg", "exit=3", "--arg", "run=400ms", "--restart-on-fail").code)
	checkInvariants(t, e, m, 20*time.Second)

	for i := range iterations {
		var plugin int
		waitFor(t, "the spt plugin", 20*time.Second, func() bool {
			p := children(e.pid(), "petrel-plugin-spt")
			if len(p) != 1 {
				return false
			}
			plugin = p[0]
			return true
		})
		delay := time.Duration(10+rng.Intn(81)) * time.Millisecond
		done := make(chan result, 1)
		go func() { done <- e.petrel("restart", "r1", "--arg", "run=forever") }()
		time.Sleep(delay)
		if err := syscall.Kill(plugin, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.code != 0 {
			t.Errorf("kill %d, %v into the restart: exit %d: %s", i+1, delay, r.code, r.err)
		}
		checkInvariants(t, e, m, 20*time.Second)
		if vm := e.info("r1"); vm.State != "running" {
			t.Fatalf("kill %d, %v into the restart: r1 is %s: %s", i+1, delay, vm.State, vm.Message)
		}
		select {
		case f := <-failed:
			t.Fatalf("kill %d, %v into the restart: a VM was failed: %s", i+1, delay, f)
		default:
		}
	}
	for _, n := range []string{"r1", "r2"} {
		m.destroyed(n, e.petrel("destroy", n).code)
	}
	checkInvariants(t, e, m, 20*time.Second)
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("runtime files left: %v", left)
	}
}
