//go:build linux && amd64

package tender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// The end-to-end tests run the real tender, petrel-plugin-spt built as a
// position-independent executable ($PETREL_BIN/petrel-plugin-spt when set,
// as make test sets it, or built once here), never this test binary, which
// is not position-independent and may run under the race detector.
var built struct {
	once             sync.Once
	dir              string
	tender, guestDir string
	skip, err        string
}

// TestMain removes what the end-to-end tests built. In a test binary
// re-exec'd as the waiter test's helper, it runs that instead.
func TestMain(m *testing.M) {
	if os.Getenv(waiterHelperEnv) != "" {
		waiterHelper(os.Args[1:])
	}
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// build builds the tender and the guests, or records why the end-to-end
// tests cannot run.
func build() {
	for _, tool := range []string{"make", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			built.skip = fmt.Sprintf("end-to-end tests need %s to build the test guests: %v", tool, err)
			return
		}
	}
	dir, err := os.MkdirTemp("", "petrel-spt-test-")
	if err != nil {
		built.err = err.Error()
		return
	}
	built.dir = dir
	built.guestDir = filepath.Join(dir, "guests")
	if out, err := exec.Command("make", "-s", "-C", "../../../contrib/guests", "OUT="+built.guestDir, "CC=gcc").CombinedOutput(); err != nil {
		built.err = fmt.Sprintf("make guests: %v\n%s", err, out)
		return
	}
	if bin := os.Getenv("PETREL_BIN"); bin != "" {
		built.tender = filepath.Join(bin, "petrel-plugin-spt")
		return
	}
	built.tender = filepath.Join(dir, "petrel-plugin-spt")
	if out, err := exec.Command("go", "build", "-buildmode=pie", "-o", built.tender, "..").CombinedOutput(); err != nil {
		built.err = fmt.Sprintf("go build -buildmode=pie ./plugins/spt: %v\n%s", err, out)
	}
}

// tenderPath returns the built tender, skipping or failing the test when
// it cannot be had.
func tenderPath(t testing.TB) string {
	t.Helper()
	built.once.Do(build)
	if built.err != "" {
		t.Fatal(built.err)
	}
	if built.skip != "" {
		t.Skip(built.skip)
	}
	return built.tender
}

// guest returns the path of a built guest, "hello.spt" or "hello.hvt".
func guest(t testing.TB, name string) string {
	t.Helper()
	tenderPath(t)
	return filepath.Join(built.guestDir, name)
}

// result is the outcome of one tender run.
type result struct {
	code           int
	signal         syscall.Signal
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d signal %d\nstdout:\n%s\nstderr:\n%s", r.code, r.signal, r.stdout, r.stderr)
}

// tenderCmd prepares the tender with args.
func tenderCmd(ctx context.Context, t testing.TB, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, tenderPath(t), append([]string{"tender"}, args...)...)
}

// finish runs cmd to completion and returns how it ended.
func finish(t testing.TB, cmd *exec.Cmd) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &stdout
	}
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run tender: %v", err)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	r := result{code: ws.ExitStatus(), stdout: stdout.String(), stderr: stderr.String()}
	if ws.Signaled() {
		r.signal = ws.Signal()
	}
	return r
}

// runTender runs the tender to completion (at most 30 s).
func runTender(t testing.TB, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return finish(t, tenderCmd(ctx, t, args...))
}

func TestGuestNotes(t *testing.T) {
	want := map[string][]solo5.Device{
		"hello": nil, "exit": nil, "fault": nil, "chatty": nil, "escape": nil,
		"blk": {{Name: "storage", Type: solo5.DeviceBlock}},
		"net": {{Name: "service0", Type: solo5.DeviceNet}},
	}
	for name, devs := range want {
		im, err := solo5.ReadFile(guest(t, name+".spt"))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if im.Target != solo5.TargetSPT || im.ABIVersion != ABIVersion || !slices.Equal(im.Manifest, devs) {
			t.Errorf("%s.spt: target %v version %d manifest %v", name, im.Target, im.ABIVersion, im.Manifest)
		}
	}
	if _, err := os.Stat(guest(t, "escape.hvt")); err == nil {
		t.Errorf("escape is built for hvt too")
	}
}

func TestHello(t *testing.T) {
	r := runTender(t, "--mem=32", "--", guest(t, "hello.spt"), "first", "second arg")
	if r.code != 0 || r.signal != 0 || r.stdout != "Hello from Petrel\nhello: command line: \"first second arg\"\n" || r.stderr != "" {
		t.Fatalf("hello: %v", r)
	}
	// The image may also be given without "--", as solo5-spt allows, and
	// the default memory is used.
	r = runTender(t, guest(t, "hello.spt"))
	if r.code != 0 || !strings.Contains(r.stdout, `command line: ""`) {
		t.Fatalf("hello without --: %v", r)
	}
}

func TestExitStatus(t *testing.T) {
	for _, c := range []struct {
		arg  string
		want int
	}{{"0", 0}, {"7", 7}, {"255", 255}, {"-1", 255}, {"256", 0}} {
		r := runTender(t, "--mem=8", "--", guest(t, "exit.spt"), c.arg)
		if r.code != c.want || r.signal != 0 || !strings.Contains(r.stdout, "exit: exiting with status "+c.arg) {
			t.Errorf("exit %s: %v", c.arg, r)
		}
	}
}

func TestChatty(t *testing.T) {
	r := runTender(t, "--mem=8", "--", guest(t, "chatty.spt"), "100000")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 0 || len(lines) != 100000 || lines[0] != "chatty: line 1 of 100000" || lines[99999] != "chatty: line 100000 of 100000" {
		t.Fatalf("chatty: exit %d, %d lines, stderr %q", r.code, len(lines), r.stderr)
	}
}

func TestFault(t *testing.T) {
	r := runTender(t, "--mem=16", "--", guest(t, "fault.spt"))
	if r.signal != syscall.SIGSEGV || !strings.Contains(r.stdout, "fault: touching unmapped address 0x1001000") || strings.Contains(r.stdout, "did not fault") {
		t.Fatalf("fault: %v", r)
	}
	if r.stderr != "" {
		t.Errorf("a guest fault is not a tender error, yet stderr says %q", r.stderr)
	}
	// A shell sees 128+SIGSEGV, and no core is dumped.
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `"$0" tender --mem=16 "$1" 2>/dev/null >/dev/null; echo $?`, tenderPath(t), guest(t, "fault.spt"))
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != "139" {
		t.Errorf("sh sees %q (%v), want 139", out, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left in the working directory: %v", entries)
	}
}

// TestEscape runs attempts the sandbox must stop: each ends the guest, and
// so the tender, by SIGSYS, after the guest said what it tried and before
// it could say that it got through. Descriptor 3 is a file open in the
// tender (and not handed to the guest).
func TestEscape(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, bytes.Repeat([]byte("s"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, attempt := range []string{
		"syscall 39",                // getpid
		"syscall 257 -100 0 0",      // openat(AT_FDCWD, NULL, 0)
		"syscall 59",                // execve
		"syscall 57",                // fork
		"syscall 56 17",             // clone(SIGCHLD)
		"syscall 62 1 9",            // kill
		"syscall 9 0 4096 7 34",     // mmap of an executable page
		"syscall 10 1048576 4096 7", // mprotect of the image to writable and executable
		"syscall 3 1",               // close(1)
		"syscall 60 0",              // exit, not exit_group
		"syscall 158 4097 0",        // arch_prctl(ARCH_SET_GS)
		"x32 1 1",                   // write(1) through the x32 ABI
		"int80 4 1",                 // write(1) through the i386 ABI
		"read 0",
		"read 3",
		"write 2",
		"write 3",
		"pread 3",
		"pwrite 3",
		"clock 2", // CLOCK_PROCESS_CPUTIME_ID
	} {
		cmd := tenderCmd(context.Background(), t, "--mem=8", "--", guest(t, "escape.spt"), attempt)
		f, err := os.Open(secret)
		if err != nil {
			t.Fatal(err)
		}
		cmd.ExtraFiles = []*os.File{f}
		r := finish(t, cmd)
		f.Close()
		if r.signal != syscall.SIGSYS || !strings.Contains(r.stdout, "escape: trying") || strings.Contains(r.stdout, "let it through") {
			t.Errorf("%s: %v", attempt, r)
		}
	}
}

// childOf returns the pid of the first process whose parent is pid, or 0.
func childOf(pid int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			return p
		}
	}
	return 0
}

// waitChild waits up to 10 s for the guest process of the tender pid.
func waitChild(t *testing.T, pid int) int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c := childOf(pid); c != 0 {
			return c
		}
	}
	t.Fatalf("tender %d started no guest process", pid)
	return 0
}

// fdTargets maps each open descriptor of pid to what it refers to.
func fdTargets(t *testing.T, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, e := range entries {
		fd, _ := strconv.Atoi(e.Name())
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out[fd] = target
	}
	return out
}

// statusFields reads the given fields of /proc/pid/status.
func statusFields(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// pss returns the Pss line of /proc/pid/smaps_rollup, in kB.
func pss(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no Pss in smaps_rollup")
	return 0
}

// checkSandbox checks the guest process child: one thread, in seccomp
// filter mode with no new privileges, holding exactly the console, the
// epoll set, the timerfd and the device descriptors described by devs
// (descriptor -> what it must refer to).
func checkSandbox(t *testing.T, child int, devs map[int]string) {
	t.Helper()
	st := statusFields(t, child)
	if st["Seccomp"] != "2" || st["NoNewPrivs"] != "1" || st["Threads"] != "1" {
		t.Errorf("guest process status: Seccomp %q NoNewPrivs %q Threads %q", st["Seccomp"], st["NoNewPrivs"], st["Threads"])
	}
	fds := fdTargets(t, child)
	var epoll, timer int
	for fd, target := range fds {
		switch {
		case fd == 1:
		case target == "anon_inode:[eventpoll]" && epoll == 0:
			epoll = fd
		case target == "anon_inode:[timerfd]" && timer == 0:
			timer = fd
		case devs[fd] != "" && strings.Contains(target, devs[fd]):
		default:
			t.Errorf("guest process holds descriptor %d (%s)", fd, target)
		}
	}
	if _, ok := fds[1]; !ok || epoll == 0 || timer == 0 || len(fds) != 3+len(devs) {
		t.Errorf("guest process descriptors %v, want 1, an epoll set, a timerfd and %v", fds, devs)
	}
}

// TestSandboxState inspects a running guest process, whose guest blocks
// writing to a pipe nobody reads, and the tender, which has become the
// waiter. It also logs the memory of both.
func TestSandboxState(t *testing.T) {
	cmd := tenderCmd(context.Background(), t, "--mem=64", "--", guest(t, "chatty.spt"), "100000000")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	extra, err := os.Open(guest(t, "hello.spt"))
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	cmd.ExtraFiles = []*os.File{extra}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	child := waitChild(t, cmd.Process.Pid)
	buf := make([]byte, 64)
	if _, err := stdout.Read(buf); err != nil {
		t.Fatalf("no console output: %v", err)
	}
	checkSandbox(t, child, nil)
	checkGuestMaps(t, child, 64<<20)
	checkWaiter(t, cmd.Process.Pid)
	if st := statusFields(t, cmd.Process.Pid); st["Seccomp"] != "0" {
		t.Errorf("the tender itself is confined: Seccomp %q", st["Seccomp"])
	}
	t.Logf("Pss: tender %d kB, guest process %d kB", pss(t, cmd.Process.Pid), pss(t, child))
}

// smapsEntry is a mapping of /proc/PID/smaps with its flags.
type smapsEntry struct {
	mapping
	perms   string
	vmFlags []string
}

// readSmaps reads the mappings of pid.
func readSmaps(t *testing.T, pid int) []smapsEntry {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []smapsEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "VmFlags:" && len(out) > 0:
			out[len(out)-1].vmFlags = f[1:]
		case !strings.HasSuffix(f[0], ":"):
			m, err := parseMaps([]byte(line))
			if err != nil || len(m) != 1 {
				t.Fatalf("smaps line %q: %v", line, err)
			}
			out = append(out, smapsEntry{mapping: m[0], perms: f[1]})
		}
	}
	return out
}

// checkGuestMaps checks that the guest process child maps nothing of the
// tender's but the page or two of the trampoline's code (from the tender's
// executable) and the child page (anonymous): the rest is guest memory,
// [hostMemBase, memSize), and the [vsyscall] page, which cannot be
// unmapped, and the vDSO's pages only where the kernel sealed them.
func checkGuestMaps(t *testing.T, child int, memSize uint64) {
	t.Helper()
	tender, err := filepath.Abs(tenderPath(t))
	if err != nil {
		t.Fatal(err)
	}
	var code, page int
	for _, m := range readSmaps(t, child) {
		size := m.end - m.start
		switch {
		case m.start >= hostMemBase && m.end <= memSize && m.path == "":
		case m.path == "[vsyscall]":
		case (m.path == "[vdso]" || strings.HasPrefix(m.path, "[vvar")) && slices.Contains(m.vmFlags, "sl"):
		case m.path == tender && m.perms == "r-xp" && size <= 2*pageSize && code == 0:
			code++
		case m.path == "" && m.perms == "rw-p" && size <= 4*pageSize && page == 0:
			page++
		default:
			t.Errorf("the guest process maps %#x-%#x %s %s", m.start, m.end, m.perms, m.path)
		}
	}
	if code != 1 || page != 1 {
		t.Errorf("the guest process maps %d pages of the trampoline's code and %d child pages, want one each", code, page)
	}
}

// checkWaiter checks that the tender pid has become the waiter (within
// 10 s): the memfd's executable, nothing of the Go tender's mapped, one
// thread and a few pages.
func checkWaiter(t *testing.T, pid int) {
	t.Helper()
	exe := ""
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); strings.HasPrefix(exe, "/memfd:"+waiterName) {
			break
		}
	}
	if !strings.HasPrefix(exe, "/memfd:"+waiterName) {
		t.Fatalf("the tender did not exec the waiter: its executable is %q", exe)
	}
	for _, m := range readSmaps(t, pid) {
		if strings.Contains(m.path, "petrel-plugin-spt") {
			t.Errorf("the waiter maps %#x-%#x %s", m.start, m.end, m.path)
		}
	}
	st := statusFields(t, pid)
	rss, _ := strconv.Atoi(strings.TrimSuffix(st["VmRSS"], " kB"))
	if st["Threads"] != "1" || rss == 0 || rss > 256 {
		t.Errorf("waiter: Threads %q VmRSS %q", st["Threads"], st["VmRSS"])
	}
}

func TestBlk(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runTender(t, "--mem=16", "--block:storage="+disk, "--", guest(t, "blk.spt"))
	if r.code != 0 || !strings.Contains(r.stdout, "block size 512") || !strings.Contains(r.stdout, "blk: OK\n") {
		t.Fatalf("blk: %v", r)
	}
	data, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 1<<20 || bytes.Equal(data[:512], make([]byte, 512)) || bytes.Equal(data[len(data)-512:], make([]byte, 512)) {
		t.Errorf("disk not written as expected (%d bytes)", len(data))
	}
	r = runTender(t, "--mem=16", "--block:storage="+disk, "--block-sector-size:storage=4096", "--", guest(t, "blk.spt"))
	if r.code != 0 || !strings.Contains(r.stdout, "block size 4096") || !strings.Contains(r.stdout, "blk: OK") {
		t.Fatalf("blk with 4096-byte sectors: %v", r)
	}
	if fi, err := os.Stat(disk); err != nil || fi.Size() != 1<<20 {
		t.Errorf("disk size changed: %v, %v", fi, err)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.spt")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("junk"), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	wx, err := solo5.Build(solo5.BuildSpec{Target: solo5.TargetSPT, ABIVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "old.spt")
	if err := os.WriteFile(old, wx, 0o600); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "odd.img")
	if err := os.WriteFile(disk, make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
		code int
	}{
		{"version", []string{"--version"}, "petrel built-in spt tender: ABI version 2\n", 0},
		{"help", []string{"--help"}, "usage: solo5-spt", 0},
		{"missing device", []string{"--", guest(t, "blk.spt")}, `block device "storage"`, 1},
		{"undeclared device", []string{"--net:service9=tap0", "--", guest(t, "hello.spt")}, `net device "service9"`, 1},
		{"missing disk", []string{"--block:storage=/nonexistent/disk", "--", guest(t, "blk.spt")}, "/nonexistent/disk", 1},
		{"odd disk", []string{"--block:storage=" + disk, "--", guest(t, "blk.spt")}, "not a multiple of the sector size", 1},
		{"missing tap", []string{"--net:service0=pt-nosuchtap", "--", guest(t, "net.spt"), "10.0.0.2"}, "pt-nosuchtap", 1},
		{"missing image", []string{"/nonexistent.spt"}, "/nonexistent.spt", 1},
		{"not an image", []string{junk}, "not an ELF file", 1},
		{"hvt image", []string{guest(t, "hello.hvt")}, "built for the hvt target, not spt", 1},
		{"old ABI", []string{old}, "spt ABI version 1", 1},
		{"not a unikernel", []string{tenderPath(t)}, "not a Solo5 unikernel", 1},
		{"memory beyond the tender", []string{"--mem=100000000", guest(t, "hello.spt")}, "at most", 1},
		{"memory too small", []string{"--mem=1", guest(t, "hello.spt")}, "leaves no room", 1},
		{"command line too long", []string{guest(t, "hello.spt"), strings.Repeat("x", 8192)}, "command line too long", 1},
		{"bad option", []string{"--frobnicate=1", guest(t, "hello.spt")}, "unknown option", 1},
	} {
		r := runTender(t, c.args...)
		first, _, _ := strings.Cut(r.stderr, "\n")
		if r.code != c.code || r.signal != 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: want exit %d and %q, got %v", c.name, c.code, c.want, r)
		} else if c.code == 1 && !strings.HasPrefix(first, "solo5-spt: ") {
			t.Errorf("%s: first line of stderr %q is not prefixed solo5-spt:", c.name, first)
		}
	}
}

// TestNotPIE runs the tender built the usual way, as a fixed-address
// executable, which must refuse to map guest memory over itself.
func TestNotPIE(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building a second tender takes a while")
	}
	hello := guest(t, "hello.spt")
	bin := filepath.Join(t.TempDir(), "petrel-plugin-spt")
	if out, err := exec.Command("go", "build", "-buildmode=exe", "-o", bin, "..").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "tender", "--", hello)
	r := finish(t, cmd)
	if r.code != 1 || !strings.Contains(r.stderr, "solo5-spt: the tender must be built with -buildmode=pie") {
		t.Fatalf("fixed-address tender: %v", r)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func TestSignals(t *testing.T) {
	chatty := guest(t, "chatty.spt")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		cmd := tenderCmd(context.Background(), t, "--mem=8", "--", chatty, "100000000")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		child := waitChild(t, cmd.Process.Pid)
		buf := make([]byte, 4096)
		if _, err := stdout.Read(buf); err != nil {
			t.Fatalf("no console output before signalling: %v", err)
		}
		go func() {
			for {
				if _, err := stdout.Read(buf); err != nil {
					return
				}
			}
		}()
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != sig {
			t.Errorf("%v: tender ended with %v, want killed by the signal", sig, ws)
		}
		if alive(child) {
			t.Errorf("%v: guest process %d outlived the tender", sig, child)
		}
	}
}

// TestTenderKilled kills the tender with SIGKILL, which it cannot forward:
// the guest process must die with it.
func TestTenderKilled(t *testing.T) {
	cmd := tenderCmd(context.Background(), t, "--mem=8", "--", guest(t, "chatty.spt"), "100000000")
	cmd.Stdout = nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child := waitChild(t, cmd.Process.Pid)
	cmd.Process.Kill()
	cmd.Wait()
	for deadline := time.Now().Add(5 * time.Second); alive(child); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("guest process %d outlived the killed tender", child)
		}
	}
}

// BenchmarkHelloSPT measures a complete tender run of hello.spt, from exec
// to exit.
func BenchmarkHelloSPT(b *testing.B) {
	hello := guest(b, "hello.spt")
	tender := tenderPath(b)
	for b.Loop() {
		cmd := exec.Command(tender, "tender", "--", hello)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("hello: %v\n%s", err, out)
		}
	}
}
