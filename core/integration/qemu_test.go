package integration

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/plugins/qemu/testguest"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestQEMULinuxGuest: a Linux guest (Debian's cloud kernel and a busybox
// initramfs) deployed through petreld on the qemu backend: the console
// shows its marker, its exit code is recorded, events report it, and the
// hvt backend runs beside it on the same host (backends are chosen per
// VM, fixed at create).
func TestQEMULinuxGuest(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu-system-x86_64 (Debian package qemu-system-x86)")
	}
	linux, err := testguest.FindLinux()
	if errors.Is(err, testguest.ErrMissing) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.start()
	initrd := filepath.Join(e.dir, "initrd.cpio")
	if err := linux.WriteInitramfs(initrd); err != nil {
		t.Fatal(err)
	}
	events := exec.Command(filepath.Join(binDir, "petrel"), "--socket", e.socket, "events")
	pipe, _ := events.StdoutPipe()
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { events.Process.Kill(); events.Wait() }()
	seen := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			seen <- sc.Text()
		}
	}()
	time.Sleep(200 * time.Millisecond)

	e.mustPetrel("create", "linux", linux.Kernel, "--backend", "qemu", "--initrd", initrd, "--mem", "256",
		"--cmdline", "console=ttyS0 quiet "+testguest.ParamExit+"=7")
	waitFor(t, "the guest's marker", 60*time.Second, func() bool {
		return strings.Contains(e.petrel("console", "linux").out, testguest.LinuxMarker)
	})
	waitFor(t, "the guest's exit", 60*time.Second, func() bool { return e.info("linux").State == "exited" })
	vm := e.info("linux")
	// The guest's own code, decoded from QEMU's isa-debug-exit status
	// (7<<1)|1, which the message keeps.
	if vm.Backend != "qemu" || vm.ExitCode == nil || *vm.ExitCode != 7 || !strings.Contains(vm.Message, "QEMU exit status 15") {
		t.Fatalf("linux guest: %+v", vm)
	}
	deadline := time.After(10 * time.Second)
	for got := false; !got; {
		select {
		case l := <-seen:
			got = strings.Contains(l, "exited") && strings.Contains(l, "linux")
		case <-deadline:
			t.Fatal("no exited event for the Linux guest")
		}
	}
	img := e.image("u.hvt", solo5.TargetHVT)
	e.mustPetrel("create", "uni", img, "--arg", "run=forever")
	if b := e.info("uni").Backend; b != "hvt" {
		t.Fatalf("default backend: %s", b)
	}
	if r := e.petrel("create", "wrong", img, "--backend", "qemu"); r.code != 6 {
		t.Fatalf("an hvt image on qemu: exit %d %s", r.code, r.err)
	}
	for _, n := range []string{"linux", "uni"} {
		e.mustPetrel("destroy", n)
	}
	if _, err := os.Stat(filepath.Join(e.runDir, "vms", "qemu")); err == nil {
		if left := e.runDirEntries(); len(left) != 0 {
			t.Fatalf("left behind: %v", left)
		}
	}
}
