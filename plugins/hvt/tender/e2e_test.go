//go:build linux && amd64

package tender

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// result is the outcome of one tender run.
type result struct {
	code           int
	stdout, stderr string
}

// tenderCmd prepares the test binary to run as the tender with args.
func tenderCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "PETREL_TENDER_TEST_MAIN=1")
	return cmd
}

// runTender runs the tender to completion (at most 30 s).
func runTender(t testing.TB, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := tenderCmd(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run tender: %v", err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// TestGuestNotes checks that every test guest carries the hvt ABI note
// (version 2) and the expected manifest, each in its own PT_NOTE segment as
// solo5-hvt expects.
func TestGuestNotes(t *testing.T) {
	want := map[string][]solo5.Device{
		"hello": nil, "exit": nil, "fault": nil, "chatty": nil,
		"blk": {{Name: "storage", Type: solo5.DeviceBlock}},
		"net": {{Name: "service0", Type: solo5.DeviceNet}},
	}
	for name, devs := range want {
		path := guest(t, name)
		im, err := solo5.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if im.Target != solo5.TargetHVT || im.ABIVersion != ABIVersion || !slices.Equal(im.Manifest, devs) {
			t.Errorf("%s: target %v version %d manifest %v", name, im.Target, im.ABIVersion, im.Manifest)
		}
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var notes []uint64
		for _, p := range f.Progs {
			if p.Type == elf.PT_NOTE {
				notes = append(notes, p.Off)
			}
		}
		abi, mft := f.Section(".note.solo5.abi"), f.Section(".note.solo5.manifest")
		if len(notes) != 2 || abi == nil || mft == nil || notes[0] != abi.Offset || notes[1] != mft.Offset {
			t.Errorf("%s: PT_NOTE segments at %v, want one for each Solo5 note", name, notes)
		}
		f.Close()
	}
}

func TestHello(t *testing.T) {
	r := runTender(t, "--mem=32", "--", guest(t, "hello"), "first", "second arg")
	if r.code != 0 || !strings.Contains(r.stdout, "Hello from Petrel\n") ||
		!strings.Contains(r.stdout, `command line: "first second arg"`) {
		t.Fatalf("hello: %v", r)
	}
	// The image may also be given without "--", as solo5-hvt allows.
	r = runTender(t, guest(t, "hello"))
	if r.code != 0 || !strings.Contains(r.stdout, `command line: ""`) {
		t.Fatalf("hello without --: %v", r)
	}
}

func TestExitStatus(t *testing.T) {
	for _, c := range []struct {
		arg  string
		want int
	}{{"7", 7}, {"0", 0}, {"255", 255}, {"-1", 255}} {
		r := runTender(t, "--mem=8", "--", guest(t, "exit"), c.arg)
		if r.code != c.want {
			t.Errorf("exit %s: %v", c.arg, r)
		}
	}
}

func TestFault(t *testing.T) {
	r := runTender(t, "--mem=16", "--", guest(t, "fault"))
	if r.code != 1 || !strings.Contains(r.stdout, "fault: touching unmapped address 0x1001000") ||
		!strings.Contains(r.stderr, "solo5-hvt: guest triple fault") {
		t.Fatalf("fault: %v", r)
	}
	if strings.Contains(r.stdout, "did not fault") {
		t.Fatalf("unmapped write succeeded: %v", r)
	}
}

func TestBlk(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runTender(t, "--mem=16", "--block:storage="+disk, "--", guest(t, "blk"))
	if r.code != 0 || !strings.Contains(r.stdout, "blk: OK\n") {
		t.Fatalf("blk: %v", r)
	}
	data, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(data[:512], make([]byte, 512)) || bytes.Equal(data[len(data)-512:], make([]byte, 512)) {
		t.Errorf("first or last sector of the disk was not written")
	}
	r = runTender(t, "--mem=16", "--block:storage="+disk, "--block-sector-size:storage=4096", "--", guest(t, "blk"))
	if r.code != 0 || !strings.Contains(r.stdout, "block size 4096") || !strings.Contains(r.stdout, "blk: OK") {
		t.Fatalf("blk with 4096-byte sectors: %v", r)
	}
}

func TestChatty(t *testing.T) {
	r := runTender(t, "--mem=8", "--", guest(t, "chatty"), "1000")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 0 || len(lines) != 1000 || lines[999] != "chatty: line 1000 of 1000" {
		t.Fatalf("chatty: exit %d, %d lines, stderr %q", r.code, len(lines), r.stderr)
	}
}

func TestDeviceErrors(t *testing.T) {
	r := runTender(t, "--", guest(t, "blk"))
	if r.code != 1 || !strings.Contains(r.stderr, `block device "storage"`) {
		t.Errorf("missing device: %v", r)
	}
	r = runTender(t, "--net:service9=tap0", "--", guest(t, "hello"))
	if r.code != 1 || !strings.Contains(r.stderr, `net device "service9"`) {
		t.Errorf("undeclared device: %v", r)
	}
	r = runTender(t, "--block:storage=/nonexistent/disk", "--", guest(t, "blk"))
	if r.code != 1 || !strings.Contains(r.stderr, "/nonexistent/disk") {
		t.Errorf("missing disk file: %v", r)
	}
}

func TestCommandLineErrors(t *testing.T) {
	hello := guest(t, "hello")
	for _, c := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"--version"}, "ABI version 2", 0},
		{[]string{"--help"}, "usage:", 0},
		{[]string{"--mem=abc", hello}, "--mem", 1},
		{[]string{"--mem=8192", hello}, "out of range", 1},
		{[]string{"--frobnicate=1", hello}, "unknown option", 1},
		{[]string{}, "usage:", 1},
		{[]string{"/nonexistent.hvt"}, "/nonexistent.hvt", 1},
		{[]string{os.Args[0]}, "not a Solo5 unikernel", 1},
	} {
		r := runTender(t, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%q: want exit %d and %q, got %v", c.args, c.code, c.want, r)
		}
	}
}

// TestHostileGuests runs tiny hand-assembled guests that misbehave, and
// checks that each ends with exit status 1 and a message saying why.
func TestHostileGuests(t *testing.T) {
	guest(t, "hello") // skips the test where guests cannot run
	const (
		movEAX = 0xb8 // mov eax, imm32
		outDX  = 0xef // out dx, eax
		inDX   = 0xed // in eax, dx
		hlt    = 0xf4
	)
	movDX := func(port uint16) []byte { return []byte{0x66, 0xba, byte(port), byte(port >> 8)} }
	imm := func(v uint32) []byte { return []byte{movEAX, byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
	code := func(parts ...[]byte) []byte { return slices.Concat(parts...) }
	cases := []struct {
		name string
		code []byte
		want string
	}{
		{"PUTS argument outside memory", code(imm(0xfffffff0), movDX(0x502), []byte{outDX}), "PUTS argument at 0xfffffff0"},
		{"HALT argument straddling the end", code(imm(16<<20-8), movDX(0x508), []byte{outDX}), "HALT argument at 0xfffff8"},
		{"unknown hypercall", code(imm(0x1000), movDX(0x500), []byte{outDX}), "invalid guest hypercall: num=0"},
		{"port outside the hypercall range", code(imm(0x1000), movDX(0x600), []byte{outDX}), "invalid guest port access: port=0x600"},
		{"port input", code(movDX(0x502), []byte{inDX}), "invalid guest port access: port=0x502"},
		{"hlt with interrupts disabled", []byte{hlt}, "guest executed hlt"},
	}
	dir := t.TempDir()
	for i, c := range cases {
		img, err := solo5.Build(solo5.BuildSpec{Target: solo5.TargetHVT, ABIVersion: ABIVersion, Code: c.code})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprintf("hostile%d.hvt", i))
		if err := os.WriteFile(path, img, 0o600); err != nil {
			t.Fatal(err)
		}
		r := runTender(t, "--mem=16", "--", path)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: want exit 1 and %q, got %v", c.name, c.want, r)
		}
	}
	old, err := solo5.Build(solo5.BuildSpec{Target: solo5.TargetHVT, ABIVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "old.hvt")
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runTender(t, path); r.code != 1 || !strings.Contains(r.stderr, "ABI version 1") {
		t.Errorf("ABI version 1 image: %v", r)
	}
}

func TestSignals(t *testing.T) {
	chatty := guest(t, "chatty")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := tenderCmd(ctx, "--mem=8", "--", chatty, "100000000")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		if _, err := stdout.Read(buf); err != nil {
			t.Fatalf("no console output before signalling: %v", err)
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				if _, err := stdout.Read(buf); err != nil {
					return
				}
			}
		}()
		err = cmd.Wait()
		cancel()
		want := fmt.Sprintf("solo5-hvt: Exiting on signal %d\n", int(sig))
		if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(stderr.String(), want) {
			t.Errorf("%v: exit %d (%v), stderr %q, want %q", sig, cmd.ProcessState.ExitCode(), err, stderr.String(), want)
		}
	}
}

// BenchmarkHello measures a complete tender run of hello, from exec to
// exit, and reports the tender's peak resident set size (VmHWM).
func BenchmarkHello(b *testing.B) {
	hello := guest(b, "hello")
	var maxRSS int64
	for b.Loop() {
		cmd := tenderCmd(context.Background(), "--", hello)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("hello: %v\n%s", err, out)
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			maxRSS = max(maxRSS, ru.Maxrss)
		}
	}
	b.ReportMetric(float64(maxRSS), "KiB-VmHWM")
}
