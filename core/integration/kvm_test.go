package integration

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestRealUnikernels boots Petrel's own Solo5 guests through petreld on
// /dev/kvm with the built-in tender.
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

	e.mustPetrel("create", "fault", fault)
	waitFor(t, "fault to be reported", 30*time.Second, func() bool { return e.info("fault").State == "exited" })
	if vm := e.info("fault"); vm.ExitCode == nil || *vm.ExitCode != 1 {
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
