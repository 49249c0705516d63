package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRealUnikernels boots Petrel's own Solo5 guests through petreld with
// a built-in tender: hvt where KVM is usable, spt elsewhere.
func TestRealUnikernels(t *testing.T) {
	hello, exit, fault, chatty := guest(t, "hello"), guest(t, "exit"), guest(t, "fault"), guest(t, "chatty")
	e := newBuiltinEnv(t)
	e.start()

	e.mustPetrel("create", "hello", hello, "--arg", "from", "--arg", "petreld")
	waitFor(t, "hello to exit", 30*time.Second, func() bool { return e.info("hello").State == "exited" })
	if vm := e.info("hello"); vm.ExitCode == nil || *vm.ExitCode != 0 {
		t.Fatalf("hello: %+v", vm)
	}
	con := e.mustPetrel("console", "hello", "--no-timestamps")
	if !strings.Contains(con, "Hello from Petrel") || !strings.Contains(con, `"from petreld"`) {
		t.Fatalf("hello console:\n%s", con)
	}

	e.mustPetrel("create", "flaky", exit, "--arg", "3", "--restart-on-fail")
	waitFor(t, "restarts of exit 3", 60*time.Second, func() bool { return e.info("flaky").Restarts >= 2 })
	e.mustPetrel("destroy", "flaky")

	e.mustPetrel("create", "fatal", exit, "--arg", "1", "--restart-on-fail")
	waitFor(t, "exit 1", 30*time.Second, func() bool { return e.info("fatal").State == "exited" })
	if vm := e.info("fatal"); vm.Restarts != 0 || vm.ExitCode == nil || *vm.ExitCode != 1 {
		t.Fatalf("exit 1 must not restart: %+v", vm)
	}

	// A guest fault: hvt reports the triple fault as exit 1; under spt
	// the guest's process dies by SIGSEGV.
	e.mustPetrel("create", "fault", fault)
	waitFor(t, "fault to be reported", 30*time.Second, func() bool { return e.info("fault").State == "exited" })
	vm := e.info("fault")
	if backend, _ := realBackend(); backend == "spt" {
		if vm.ExitSignal == nil || *vm.ExitSignal != int32(syscall.SIGSEGV) {
			t.Fatalf("fault on spt: %+v; want signal %d", vm, syscall.SIGSEGV)
		}
	} else if vm.ExitCode == nil || *vm.ExitCode != 1 {
		t.Fatalf("fault: %+v", vm)
	}
	if con := e.mustPetrel("console", "fault"); !strings.Contains(con, "fault") {
		t.Fatalf("fault console lacks the reason:\n%s", con)
	}

	e.mustPetrel("create", "chatty", chatty, "--arg", "300")
	waitFor(t, "chatty to finish", 60*time.Second, func() bool { return e.info("chatty").State == "exited" })
	lines := strings.Count(e.mustPetrel("console", "chatty", "--no-timestamps"), "\n")
	if lines < 300 {
		t.Fatalf("chatty: %d console lines, want at least 300", lines)
	}
	for _, n := range []string{"hello", "fatal", "fault", "chatty"} {
		e.mustPetrel("destroy", n)
	}
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestRealNetworkPing: the net guest, booted through petreld with a tap on
// a bridge inside a throwaway namespace, answers ping from that namespace.
func TestRealNetworkPing(t *testing.T) {
	netGuest := guest(t, "net")
	e := newBuiltinEnv(t)
	e.inNetns()
	e.start()
	e.mustPetrel("create", "pinged", netGuest, "--net", "service0:br0", "--arg", "10.77.0.2", "--mem", "16")
	waitFor(t, "guest up", 30*time.Second, func() bool {
		return strings.Contains(e.petrel("console", "pinged").out, "10.77.0.2")
	})
	out, err := exec.Command("ip", "netns", "exec", e.netns, "ping", "-c", "3", "-W", "5", "10.77.0.2").CombinedOutput()
	if err != nil {
		t.Fatalf("ping from the namespace: %v\n%s\nconsole:\n%s", err, out, e.petrel("console", "pinged").out)
	}
	if !strings.Contains(string(out), "3 received") {
		t.Fatalf("ping: %s", out)
	}
	e.mustPetrel("destroy", "pinged")
	if strings.Contains(e.links(), "master br0") {
		t.Fatalf("tap left:\n%s", e.links())
	}
}

// TestRealGuestRecovery: a real networked guest keeps running and
// answering while petreld is killed with SIGKILL and started again; the
// new petreld reattaches to the same process, keeps its console history,
// reports its statistics to the metrics sink, and destroying it removes
// the guest and its tap.
func TestRealGuestRecovery(t *testing.T) {
	netGuest := guest(t, "net")
	if _, err := os.Stat(filepath.Join(binDir, "petrel-plugin-jsonl")); err != nil {
		t.Skip("needs the example metrics plugin built as petrel-plugin-jsonl in", binDir)
	}
	e := newBuiltinEnv(t)
	e.inNetns()
	sink := filepath.Join(e.dir, "metrics.jsonl")
	cfg, _ := os.ReadFile(e.config)
	cfg = append(cfg, fmt.Sprintf("stats_interval = \"200ms\"\nmetrics \"jsonl\" {\n  settings = { path = %q }\n}\n", sink)...)
	os.WriteFile(e.config, cfg, 0o600)
	e.start()
	e.mustPetrel("create", "svc", netGuest, "--net", "service0:br0", "--arg", "10.77.0.3", "--mem", "16")
	waitFor(t, "guest up", 30*time.Second, func() bool {
		return strings.Contains(e.petrel("console", "svc").out, "10.77.0.3")
	})
	ping := func(what string) {
		t.Helper()
		out, err := exec.Command("ip", "netns", "exec", e.netns, "ping", "-c", "2", "-W", "5", "10.77.0.3").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "2 received") {
			t.Fatalf("ping %s: %v\n%s\nconsole:\n%s", what, err, out, e.petrel("console", "svc").out)
		}
	}
	ping("before the crash")
	before := e.info("svc")

	e.kill9()
	if !alive(before.Pid) {
		t.Fatal("the guest died with petreld")
	}
	ping("while petreld is down")
	e.start()
	after := e.info("svc")
	if after.State != "running" || after.Pid != before.Pid {
		t.Fatalf("after restart: %+v; want running as pid %d", after, before.Pid)
	}
	if con := e.mustPetrel("console", "svc"); !strings.Contains(con, "10.77.0.3") {
		t.Fatalf("console history lost:\n%s", con)
	}
	ping("after the restart")

	// Statistics: the VM's memory includes the guest's (under spt the guest
	// runs in a child of the tender), and the sink receives it.
	var batch struct {
		VMs []struct {
			Name string `json:"name"`
			RSS  string `json:"rss_bytes"`
		} `json:"vms"`
	}
	waitFor(t, "statistics of the guest", 10*time.Second, func() bool {
		r := e.petrel("stats", "svc", "--json")
		return r.code == 0 && json.Unmarshal([]byte(strings.TrimSpace(r.out)), &batch) == nil &&
			len(batch.VMs) == 1 && batch.VMs[0].RSS != "" && batch.VMs[0].RSS != "0"
	})
	waitFor(t, "the guest in the metrics sink", 10*time.Second, func() bool {
		b, _ := os.ReadFile(sink)
		return strings.Contains(string(b), `"petrel_vm"`) && strings.Contains(string(b), `"svc"`)
	})

	e.mustPetrel("destroy", "svc")
	waitFor(t, "the guest to end", 10*time.Second, func() bool { return !alive(before.Pid) })
	if strings.Contains(e.links(), "master br0") {
		t.Fatalf("tap left:\n%s", e.links())
	}
}

// TestRealGuestRemote: a tenant deploys a real guest through
// petrel-endpoint with a delegated sub-CA, reads its console remotely and
// destroys it; the guest runs under the tenant's domain.
func TestRealGuestRemote(t *testing.T) {
	hello := guest(t, "hello")
	r := newRemoteEnv(t)
	r.stop()
	r.useBuiltinTenders()
	r.start()
	alice, aliceKey := r.subCA("alice", r.file("ca.pem"), r.file("ca.key"), "--vms", "1", "--mem", "64")
	out := r.mustRemote(alice, aliceKey, "create", "hello", hello, "--mem", "32", "--arg", "remote")
	if !strings.Contains(out, "created alice:hello") {
		t.Fatalf("remote create said %q", out)
	}
	waitFor(t, "hello to exit", 30*time.Second, func() bool { return r.info("alice:hello").State == "exited" })
	con := r.mustRemote(alice, aliceKey, "console", "hello", "--no-timestamps")
	if !strings.Contains(con, "Hello from Petrel") || !strings.Contains(con, `"remote"`) {
		t.Fatalf("remote console:\n%s", con)
	}
	if res := r.remote(alice, aliceKey, "create", "big", hello, "--mem", "128"); res.code != 10 {
		t.Fatalf("a VM over alice's 64 MB: exit %d (%s)", res.code, res.err)
	}
	r.mustRemote(alice, aliceKey, "destroy", "hello")
	if res := r.petrel("info", "alice:hello"); res.code != 4 {
		t.Fatalf("alice:hello after remote destroy: exit %d", res.code)
	}
}

// TestHostWithoutKVM runs petreld as on a host without /dev/kvm (a VM
// without nested virtualization): an hvt image is refused at once with
// exit 7 and the reason, leaving nothing behind; an spt image created
// without --backend runs on the built-in spt tender; doctor, run the same
// way, says what the host can run.
func TestHostWithoutKVM(t *testing.T) {
	helloHVT, helloSPT := guestFor(t, "hello", "hvt"), guestFor(t, "hello", "spt")
	e := newBuiltinEnv(t)
	e.withoutKVM = true
	e.start()

	r := e.petrel("create", "h", helloHVT)
	if r.code != 7 || !strings.Contains(r.err, "open /dev/kvm: no such file or directory") || !strings.Contains(r.err, "spt") {
		t.Fatalf("create of an hvt image without KVM: exit %d: %s%s", r.code, r.out, r.err)
	}
	if r := e.petrel("info", "h"); r.code != 4 {
		t.Fatalf("a refused create left a VM: %s", r.out)
	}
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("a refused create left %v", left)
	}
	if p := e.mustPetrel("plugins"); !strings.Contains(p, "open /dev/kvm: no such file or directory") {
		t.Fatalf("plugins do not say why hvt is unhealthy:\n%s", p)
	}

	e.mustPetrel("create", "h", helloSPT, "--arg", "no-kvm")
	waitFor(t, "hello to exit", 30*time.Second, func() bool { return e.info("h").State == "exited" })
	if vm := e.info("h"); vm.Backend != "spt" || vm.ExitCode == nil || *vm.ExitCode != 0 {
		t.Fatalf("hello.spt: %+v", vm)
	}
	if con := e.mustPetrel("console", "h", "--no-timestamps"); !strings.Contains(con, "Hello from Petrel") || !strings.Contains(con, `"no-kvm"`) {
		t.Fatalf("hello.spt console:\n%s", con)
	}

	out, _ := exec.Command(withoutKVMScript(t), filepath.Join(binDir, "petrel"), "--socket", e.socket, "doctor").CombinedOutput()
	for _, want := range []string{"open /dev/kvm: no such file or directory", "spt"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("doctor without KVM lacks %q:\n%s", want, out)
		}
	}
	t.Logf("doctor without KVM:\n%s", out)
}
