package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestBadInputLeavesNothing: every kind of bad request gets a one-line
// error with its own exit code, and nothing is left behind.
func TestBadInputLeavesNothing(t *testing.T) {
	e := newEnv(t)
	e.start()
	hvt := e.image("ok.hvt", solo5.TargetHVT)
	spt := e.image("ok.spt", solo5.TargetSPT)
	withNet := e.image("net.hvt", solo5.TargetHVT, solo5.Device{Name: "service0", Type: solo5.DeviceNet})
	text := filepath.Join(e.dir, "notes.txt")
	os.WriteFile(text, []byte("not a unikernel\n"), 0o644)
	plainELF, _ := os.Executable()

	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"create", "Bad_Name", hvt}, 6, "label"},
		{[]string{"create", "a::b", hvt}, 6, "label"},
		{[]string{"create", "-x", hvt}, 2, ""},
		{[]string{"create", "vm", text}, 6, "not an ELF"},
		{[]string{"create", "vm", plainELF}, 6, "not a Solo5"},
		{[]string{"create", "vm", spt, "--backend", "hvt"}, 6, "use --backend spt"},
		{[]string{"create", "vm", withNet}, 6, "service0"},
		{[]string{"create", "vm", hvt, "--backend", "qemu"}, 6, "qemu"},
		{[]string{"create", "vm", hvt, "--mem", "100000000"}, 6, "memory"},
		{[]string{"create", "vm", hvt, "--mem", "2"}, 6, "memory"},
		{[]string{"create", "vm", hvt, "--cpu", "4096"}, 6, "CPU"},
		{[]string{"create", "vm", filepath.Join(e.dir, "missing.hvt")}, 6, "missing.hvt"},
		{[]string{"create", "vm"}, 2, "accepts 2 arg"},
		{[]string{"console", "vm", "--count", "-1"}, 2, "negative"},
		{[]string{"console", "vm", "--since", "yesterday"}, 2, "RFC 3339"},
		{[]string{"destroy", "nope"}, 4, "no such VM"},
		{[]string{"restart", "nope"}, 4, "no such VM"},
	}
	for _, c := range cases {
		r := e.petrel(c.args...)
		if r.code != c.code {
			t.Errorf("petrel %v: exit %d, want %d (%s)", c.args, r.code, c.code, r.err)
			continue
		}
		if lines := strings.Count(strings.TrimSpace(r.err), "\n"); lines != 0 && c.code != 2 {
			t.Errorf("petrel %v: error is %d lines: %q", c.args, lines+1, r.err)
		}
		if !strings.Contains(r.err, c.want) {
			t.Errorf("petrel %v: error %q does not mention %q", c.args, r.err, c.want)
		}
	}
	// The same name twice.
	e.mustPetrel("create", "vm", hvt, "--arg", "run=forever")
	first := e.info("vm")
	if r := e.petrel("create", "vm", hvt); r.code != 5 || !strings.Contains(r.err, "--force") {
		t.Fatalf("second create: exit %d %q", r.code, r.err)
	}
	// A bad force-create leaves the running VM alone.
	if r := e.petrel("create", "vm", spt, "--backend", "hvt", "--force"); r.code != 6 {
		t.Fatalf("bad forced create: exit %d %q", r.code, r.err)
	}
	if again := e.info("vm"); again.Pid != first.Pid || again.State != "running" {
		t.Fatalf("bad forced create touched the VM: %+v", again)
	}
	// A good force-create replaces it.
	e.mustPetrel("create", "vm", hvt, "--force", "--arg", "run=forever", "--arg", "lines=2")
	replaced := e.info("vm")
	if replaced.Pid == first.Pid || alive(first.Pid) {
		t.Fatalf("force did not replace the VM: %+v", replaced)
	}
	e.mustPetrel("destroy", "vm")
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
	recs, _ := filepath.Glob(filepath.Join(e.dataDir, "vms", "*"))
	if len(recs) != 0 {
		t.Fatalf("records left: %v", recs)
	}
	// The daemon unreachable.
	e.stop()
	if r := e.petrel("info"); r.code != 3 || !strings.Contains(r.err, "is it running") {
		t.Fatalf("no daemon: exit %d %q", r.code, r.err)
	}
}

// TestOversizedArguments: arguments longer than a guest's command line
// (200 KB, or just past Solo5's 8192 bytes) are refused as invalid (exit
// 6) with the limit named, on create and restart and on every Solo5
// backend, before anything starts: the running VM a restart would
// replace is left alone.
func TestOversizedArguments(t *testing.T) {
	e := newEnv(t)
	e.start()
	hvt := e.image("ok.hvt", solo5.TargetHVT)
	spt := e.image("ok.spt", solo5.TargetSPT)
	// 200 KB, in four arguments: one argument of more than 128 KB cannot
	// even be passed to the petrel command (the API test below sends one).
	huge := strings.Repeat(" --arg="+strings.Repeat("x", 50<<10), 4)[1:]
	past := "--arg=" + strings.Repeat("y", 8192)
	// 8191 bytes joined with spaces fit exactly.
	fits := []string{"--arg=run=forever", "--arg=" + strings.Repeat("z", 8191-len("run=forever")-1)}
	for _, c := range [][]string{
		append([]string{"create", "vm", hvt}, strings.Fields(huge)...),
		append([]string{"create", "vm", spt, "--backend", "spt"}, strings.Fields(huge)...),
		{"create", "vm", hvt, past},
		{"create", "vm", spt, "--backend", "spt", past},
		{"create", "vm", hvt, "--arg=run=forever", "--arg=" + strings.Repeat("w", 8191-len("run=forever"))},
	} {
		r := e.petrel(c...)
		if r.code != 6 || !strings.Contains(r.err, "8191") || strings.Count(strings.TrimSpace(r.err), "\n") != 0 {
			t.Errorf("petrel %s … (%d bytes): exit %d, %q; want 6 naming the limit of 8191 bytes", strings.Join(c[:3], " "), len(strings.Join(c, " ")), r.code, r.err)
		}
	}
	api := e.client()
	one := &daemonv1.CreateRequest{Name: "vm", ImageSha256: "", MemoryMb: 16, Args: []string{strings.Repeat("v", 200<<10)}}
	ref, err := api.c.UploadImageFile(context.Background(), hvt, nil)
	if err != nil {
		t.Fatal(err)
	}
	one.ImageSha256 = ref.GetSha256()
	if _, err := api.c.API.Create(context.Background(), one); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "8191") {
		t.Errorf("create through the API with one argument of 200 KB: %v", err)
	}
	if vms := e.infoAll(); len(vms) != 0 {
		t.Fatalf("refused creates left VMs: %+v", vms)
	}
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("refused creates left runtime files: %v", left)
	}
	e.mustPetrel(append([]string{"create", "vm", hvt}, fits...)...)
	vm := e.info("vm")
	for _, args := range [][]string{strings.Fields(huge), {past}} {
		r := e.petrel(append([]string{"restart", "vm"}, args...)...)
		if r.code != 6 || !strings.Contains(r.err, "8191") {
			t.Errorf("restart with %d bytes of arguments: exit %d, %q", len(strings.Join(args, " ")), r.code, r.err)
		}
	}
	if again := e.info("vm"); again.Pid != vm.Pid || again.State != "running" {
		t.Fatalf("a refused restart touched the VM: %+v (was pid %d)", again, vm.Pid)
	}
	e.mustPetrel("destroy", "vm")
}
