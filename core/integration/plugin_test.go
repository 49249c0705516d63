package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestPluginCrashLeavesVMs: a plugin killed with SIGKILL is restarted, its
// VMs keep running untouched, events report it, and the VM can still be
// managed afterwards.
func TestPluginCrashLeavesVMs(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("p.hvt", solo5.TargetHVT)

	events := exec.Command(filepath.Join(binDir, "petrel"), "--socket", e.socket, "events")
	pipe, _ := events.StdoutPipe()
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { events.Process.Kill(); events.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(what string) {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("event stream ended before %q", what)
				}
				if strings.Contains(l, what) {
					return
				}
			case <-deadline:
				t.Fatalf("no event %q", what)
			}
		}
	}
	time.Sleep(200 * time.Millisecond) // let the subscription register

	e.mustPetrel("create", "vm", img, "--arg", "run=forever", "--arg", "lines=1")
	expect("created")
	expect("started")
	vm := e.info("vm")
	plugins := children(e.pid(), "petrel-plugin-hvt")
	if len(plugins) != 1 {
		t.Fatalf("hvt plugin processes: %v", plugins)
	}
	syscall.Kill(plugins[0], syscall.SIGKILL)
	expect("plugin-crashed")
	expect("plugin-restarted")
	if !alive(vm.Pid) || !alive(vm.ShimPid) {
		t.Fatal("VM died with its plugin")
	}
	if again := e.info("vm"); again.Pid != vm.Pid || again.State != "running" {
		t.Fatalf("after plugin crash: %+v", again)
	}
	out := e.mustPetrel("plugins", "--json")
	if !strings.Contains(out, `"restarts": 1`) {
		t.Fatalf("plugin restart not counted: %s", out)
	}
	// The VM is still managed: its exit is seen through the new plugin.
	syscall.Kill(vm.Pid, syscall.SIGTERM)
	expect("exited")
	waitFor(t, "exit recorded", 10*time.Second, func() bool { return e.info("vm").State == "exited" })
	if got := e.info("vm"); got.ExitCode == nil || *got.ExitCode != 1 {
		t.Fatalf("exit through restarted plugin: %+v", got)
	}
	e.mustPetrel("destroy", "vm")
	expect("destroyed")
}

// TestMissingTender: a backend told to use an external tender that is not
// there (engine "solo5-spt": no fallback to the built-in tender) is
// reported, and a create on it fails with the "backend unavailable" exit
// code and leaves nothing behind.
func TestMissingTender(t *testing.T) {
	e := newEnv(t)
	cfg, _ := os.ReadFile(e.config)
	fixed := strings.Replace(string(cfg), fmt.Sprintf("tender = %q", filepath.Join(e.dir, "solo5-spt")), `tender = "/nonexistent/solo5-spt", engine = "solo5-spt"`, 1)
	os.WriteFile(e.config, []byte(fixed), 0o600)
	e.start()
	img := e.image("s.spt", solo5.TargetSPT)
	r := e.petrel("create", "vm", img, "--backend", "spt")
	if r.code != 7 || !strings.Contains(r.err, "solo5-spt") {
		t.Fatalf("create without tender: exit %d %q", r.code, r.err)
	}
	out := e.mustPetrel("plugins")
	if !strings.Contains(out, "unhealthy") || !strings.Contains(out, "not found") {
		t.Fatalf("plugins listing does not explain the missing tender:\n%s", out)
	}
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestPluginCrashCallsWait: a call made right after a plugin is killed
// with SIGKILL waits for the restarted plugin and succeeds, instead of
// failing with "connection refused"; the crash is noticed when the
// process exits (the plugin-crashed event follows the kill within
// milliseconds), not at the next poll.
func TestPluginCrashCallsWait(t *testing.T) {
	e := newEnv(t)
	e.start()
	api := e.client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	img := e.image("w.spt", solo5.TargetSPT)
	ref, err := api.c.UploadImageFile(ctx, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := api.c.API.Events(ctx, &daemonv1.EventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	evs := make(chan *daemonv1.Event, 100)
	go func() {
		defer close(evs)
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			evs <- ev
		}
	}()
	next := func(typ string) *daemonv1.Event {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case ev, ok := <-evs:
				if !ok {
					t.Fatalf("event stream ended before %s", typ)
				}
				if ev.GetType() == typ && ev.GetName() == "spt" {
					return ev
				}
			case <-deadline:
				t.Fatalf("no %s event", typ)
			}
		}
	}
	time.Sleep(200 * time.Millisecond) // let the subscription register

	const kills = 5
	var latencies []time.Duration
	for i := range kills {
		plugins := children(e.pid(), "petrel-plugin-spt")
		if len(plugins) != 1 {
			t.Fatalf("spt plugin processes: %v", plugins)
		}
		name := fmt.Sprintf("w%d", i)
		killed := time.Now()
		if err := syscall.Kill(plugins[0], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_, err := api.c.API.Create(ctx, &daemonv1.CreateRequest{Name: name, Backend: "spt", ImageSha256: ref.GetSha256(),
			MemoryMb: 16, Args: []string{"run=forever"}})
		took := time.Since(killed)
		if err != nil {
			t.Fatalf("create %s right after the plugin was killed: %v", name, err)
		}
		crashed := next("plugin-crashed")
		next("plugin-restarted")
		lat := time.Unix(0, crashed.GetTimeNs()).Sub(killed)
		latencies = append(latencies, lat)
		t.Logf("kill %d: crash noticed after %v; the create took %v", i+1, lat, took)
		if vm := e.info(name); vm.State != "running" || !alive(vm.Pid) {
			t.Fatalf("%s after the crash: %+v", name, vm)
		}
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	t.Logf("crash detection latency over %d kills: min %v, median %v, max %v", kills, latencies[0], latencies[kills/2], latencies[kills-1])
	if latencies[kills/2] > 50*time.Millisecond {
		t.Fatalf("median crash detection latency %v: the exit is not noticed when it happens", latencies[kills/2])
	}
	for i := range kills {
		e.mustPetrel("destroy", fmt.Sprintf("w%d", i))
	}
}
