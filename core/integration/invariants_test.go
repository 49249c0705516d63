package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/network"
	"github.com/petrel-vmm/petrel/sdk/shim"
)

// expectation is what the test knows about one VM name from acknowledged
// operations: a create that returned 0 means the VM must exist, a destroy
// that returned 0 means it must not; anything that failed leaves it
// unknown until the next observation.
type expectation int

const (
	unknown expectation = iota
	mustExist
	mustNotExist
)

// model records the acknowledged changes of a test, so that a change
// the daemon confirmed and then lost (in a crash, say) is caught.
type model struct {
	mu  sync.Mutex
	vms map[string]expectation
}

func newModel() *model { return &model{vms: map[string]expectation{}} }

// created records the outcome of a create; code is the CLI's exit code.
func (m *model) created(name string, code int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case code == 0:
		m.vms[name] = mustExist
	case code == 5:
		// "Exists": nothing changed.
	default:
		m.vms[name] = unknown
	}
}

// destroyed records the outcome of a destroy.
func (m *model) destroyed(name string, code int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch code {
	case 0, 4:
		m.vms[name] = mustNotExist
	default:
		m.vms[name] = unknown
	}
}

// observe pins unknown names to what a consistent daemon reported, so
// later checks hold it to that.
func (m *model) observe(present map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for n, x := range m.vms {
		if x != unknown {
			continue
		}
		if present[n] {
			m.vms[n] = mustExist
		} else {
			m.vms[n] = mustNotExist
		}
	}
}

// violations lists the acknowledged changes present contradicts.
func (m *model) violations(present map[string]bool) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n, x := range m.vms {
		switch {
		case x == mustExist && !present[n]:
			out = append(out, fmt.Sprintf("acknowledged create of %s lost", n))
		case x == mustNotExist && present[n]:
			out = append(out, fmt.Sprintf("acknowledged destroy of %s lost (VM still listed)", n))
		}
	}
	return out
}

// listedVM is a VM as `petrel info --json` shows it, with the fields the
// invariants need.
type listedVM struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Backend string `json:"backend"`
	Pid     int    `json:"pid"`
	ShimPid int    `json:"shim_pid"`
	Nets    []struct {
		Tap string `json:"tap"`
	} `json:"nets"`
}

// storedVM is the part of a VM record in the state store that locates
// its runtime directory.
type storedVM struct {
	Name    string `json:"name"`
	Backend string `json:"backend"`
	RunID   string `json:"run_id"`
}

// checkInvariants polls until every invariant holds, or fails the test
// with the violations of the last attempt. Transient states (a VM being
// started, a shim's death not yet noticed) settle within the timeout.
func checkInvariants(t testing.TB, e *env, m *model, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, present := invariantViolations(e, m)
		if len(v) == 0 {
			m.observe(present)
			return
		}
		if time.Now().After(deadline) {
			sort.Strings(v)
			t.Fatalf("invariants violated:\n  %s", strings.Join(v, "\n  "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// invariantViolations checks, once, everything a restarted petreld must
// guarantee after any sequence of operations and crashes, and returns
// what does not hold and the VM names petreld lists.
func invariantViolations(e *env, m *model) ([]string, map[string]bool) {
	var v []string
	bad := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }

	// The state store is readable, through petreld and on disk.
	r := e.petrel("info", "--json")
	if r.code != 0 {
		bad("petrel info --json: exit %d: %s", r.code, r.err)
		return v, nil
	}
	var vms []listedVM
	if err := json.Unmarshal([]byte(r.out), &vms); err != nil {
		bad("petrel info --json does not parse: %v: %q", err, r.out)
		return v, nil
	}
	stored, err := storedRecords(e.dataDir)
	if err != nil {
		bad("state store: %v", err)
	}
	present := map[string]bool{}
	running := map[string]listedVM{}
	shims, tenders := map[int]bool{}, map[int]bool{}
	taps := map[string]bool{}
	for _, vm := range vms {
		present[vm.Name] = true
		rec, ok := stored[vm.Name]
		if !ok && err == nil {
			bad("%s is listed but has no record in the store", vm.Name)
		}
		dir := filepath.Join(e.runDir, "vms", rec.Backend, rec.RunID)
		switch vm.State {
		case "running":
			running[vm.Name] = vm
			shims[vm.ShimPid], tenders[vm.Pid] = true, true
			if !alive(vm.Pid) || !alive(vm.ShimPid) {
				bad("%s is running but tender %d alive=%v, shim %d alive=%v", vm.Name, vm.Pid, alive(vm.Pid), vm.ShimPid, alive(vm.ShimPid))
			} else if ok && !shim.Alive(dir) {
				bad("%s is running but its shim does not answer on %s", vm.Name, dir)
			}
			for _, n := range vm.Nets {
				taps[n.Tap] = true
			}
		case "exited", "failed", "lost":
			if vm.Pid > 0 && alive(vm.Pid) || vm.ShimPid > 0 && alive(vm.ShimPid) {
				bad("%s is %s but tender %d or shim %d is alive", vm.Name, vm.State, vm.Pid, vm.ShimPid)
			}
			if ok {
				if _, err := os.Lstat(filepath.Join(dir, shim.SocketName)); err == nil {
					bad("%s is %s but its shim socket %s is left", vm.Name, vm.State, filepath.Join(dir, shim.SocketName))
				}
			}
		default:
			bad("%s is in transient state %q", vm.Name, vm.State)
		}
	}
	if err == nil {
		for n := range stored {
			if !present[n] {
				bad("record of %s in the store is not listed by petreld", n)
			}
		}
	}

	// No orphan process: every shim and fake tender belongs to a running
	// VM, and every plugin to the current petreld.
	daemon := e.pid()
	for _, pid := range processesUnder(e.dir) {
		switch kind := processKind(pid); kind {
		case "shim":
			if !shims[pid] {
				bad("orphan shim %d: %s", pid, cmdline(pid))
			}
		case "tender":
			if !tenders[pid] {
				bad("orphan tender %d: %s", pid, cmdline(pid))
			}
		}
	}
	for _, pid := range pluginProcesses(e) {
		if ppid(pid) != daemon {
			bad("orphan plugin %d (parent %d, petreld is %d): %s", pid, ppid(pid), daemon, cmdline(pid))
		}
	}
	// A spare shim (sdk/shim.Launcher) lives only as long as the plugin
	// that started it: one whose parent is no plugin has leaked. (A spare
	// carries nothing that names its petreld, so this looks at every
	// spare on the host; one whose plugin was just killed has a moment to
	// exit, as checkInvariants looks again until its timeout.)
	for _, pid := range spareShims() {
		parent := ppid(pid)
		if !strings.HasPrefix(filepath.Base(strings.Fields(cmdline(parent) + " ?")[0]), "petrel-plugin-") {
			bad("orphan spare shim %d (parent %d: %s)", pid, parent, cmdline(parent))
		}
	}

	// No orphan tap in the namespace.
	if e.netns != "" {
		out, lerr := exec.Command("ip", "-n", e.netns, "-j", "link", "show").Output()
		var links []struct {
			Name string `json:"ifname"`
		}
		if lerr != nil || json.Unmarshal(out, &links) != nil {
			bad("list links in %s: %v", e.netns, lerr)
		}
		for _, l := range links {
			if strings.HasPrefix(l.Name, network.TapPrefix) && !taps[l.Name] {
				bad("orphan tap %s", l.Name)
			}
		}
	}

	// Runtime directories belong to VMs in the store; no stray socket.
	runs := map[string]string{}
	for n, rec := range stored {
		runs[filepath.Join(rec.Backend, rec.RunID)] = n
	}
	backends, _ := os.ReadDir(filepath.Join(e.runDir, "vms"))
	for _, b := range backends {
		ids, _ := os.ReadDir(filepath.Join(e.runDir, "vms", b.Name()))
		for _, id := range ids {
			owner, ok := runs[filepath.Join(b.Name(), id.Name())]
			if !ok {
				bad("runtime directory %s belongs to no VM", filepath.Join(e.runDir, "vms", b.Name(), id.Name()))
				continue
			}
			sock := filepath.Join(e.runDir, "vms", b.Name(), id.Name(), shim.SocketName)
			if _, err := os.Lstat(sock); err == nil {
				if _, isRunning := running[owner]; !isRunning {
					bad("stray socket %s of %s", sock, owner)
				}
			}
		}
	}
	entries, _ := os.ReadDir(e.runDir)
	for _, en := range entries {
		if en.Name() != "vms" && en.Name() != "petreld.sock" && en.Name() != "petreld-remote.sock" && strings.HasSuffix(en.Name(), ".sock") {
			bad("stray socket %s", filepath.Join(e.runDir, en.Name()))
		}
	}

	// No temporary file left in the data directory.
	filepath.WalkDir(e.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".tmp") {
			bad("temporary file left: %s", p)
		}
		return nil
	})

	v = append(v, m.violations(present)...)
	return v, present
}

// storedRecords reads every VM record in the store directly.
func storedRecords(dataDir string) (map[string]storedVM, error) {
	files, err := filepath.Glob(filepath.Join(dataDir, "vms", "*.json"))
	if err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	recs := map[string]storedVM{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read record: %w", err)
		}
		var r storedVM
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("record %s does not parse: %w", f, err)
		}
		recs[r.Name] = r
	}
	return recs, nil
}

// processKind tells a shim from a fake tender from anything else.
func processKind(pid int) string {
	args := bytes.Split(readProc(pid, "cmdline"), []byte{0})
	if len(args) > 0 && filepath.Base(string(args[0])) == "petrel-shim" {
		return "shim"
	}
	if bytes.Contains(readProc(pid, "environ"), []byte("PETREL_FAKE_TENDER=1")) {
		return "tender"
	}
	return "other"
}

// spareShims lists the live spare shims of the host that have no VM yet
// (one that took a VM's work works in that VM's directory).
func spareShims() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil || !alive(pid) {
			continue
		}
		args := bytes.Split(bytes.TrimRight(readProc(pid, "cmdline"), "\x00"), []byte{0})
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if len(args) == 2 && filepath.Base(string(args[0])) == "petrel-shim" && string(args[1]) == "--spare" &&
			!strings.Contains(cwd, "/vms/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pluginProcesses lists live plugin processes started from binDir whose
// environment or command line ties them to e (petreld passes them its
// run directory), or whose parent is e's petreld.
func pluginProcesses(e *env) []int {
	var pids []int
	daemon := e.pid()
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil || !alive(pid) {
			continue
		}
		cl := readProc(pid, "cmdline")
		if !bytes.HasPrefix(cl, []byte(filepath.Join(binDir, "petrel-plugin-"))) {
			continue
		}
		if ppid(pid) == daemon || bytes.Contains(readProc(pid, "environ"), []byte(e.dir)) || bytes.Contains(cl, []byte(e.dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func readProc(pid int, file string) []byte {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	return b
}

func cmdline(pid int) string {
	return strings.TrimSpace(string(bytes.ReplaceAll(readProc(pid, "cmdline"), []byte{0}, []byte{' '})))
}

// ppid is a process's parent, or 0.
func ppid(pid int) int {
	b := readProc(pid, "stat")
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// procStatus reads a numeric field ("VmRSS", "Threads") of
// /proc/PID/status.
func procStatus(pid int, field string) int {
	for _, l := range strings.Split(string(readProc(pid, "status")), "\n") {
		if strings.HasPrefix(l, field+":") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				n, _ := strconv.Atoi(f[1])
				return n
			}
		}
	}
	return 0
}

// openFDs counts a process's open file descriptors.
func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}
