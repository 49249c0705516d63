package main

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-vmm/petrel/core/statedump"
	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/plugins/catalog"
)

// checkStatus is the verdict of one doctor check.
type checkStatus string

const (
	statusOK   checkStatus = "OK"
	statusWarn checkStatus = "WARN"
	statusFail checkStatus = "FAIL"
)

// checkResult is one line of `petrel doctor`: what was checked, the
// verdict, and in plain words what was found and what to do about it.
type checkResult struct {
	Status  checkStatus `json:"status"`
	Check   string      `json:"check"`
	Message string      `json:"message"`
}

func ok(check, format string, args ...any) checkResult {
	return checkResult{statusOK, check, fmt.Sprintf(format, args...)}
}

func warn(check, format string, args ...any) checkResult {
	return checkResult{statusWarn, check, fmt.Sprintf(format, args...)}
}

func fail(check, format string, args ...any) checkResult {
	return checkResult{statusFail, check, fmt.Sprintf(format, args...)}
}

// daemonAPIVersion is the daemon API version this petrel speaks.
const daemonAPIVersion = 1

// hostEnv is where the doctor looks, so that tests can point every check
// at a fake tree.
type hostEnv struct {
	devDir     string // /dev
	sysDir     string // /sys
	cgroupDir  string // /sys/fs/cgroup
	pluginDirs []string
	dataDir    string
	socket     string
	root       bool // running as root: what fails here fails for petreld too
	lookPath   func(string) (string, error)
	// run runs a short command and returns its combined output.
	run func(ctx context.Context, argv ...string) ([]byte, error)
}

func defaultHostEnv(socket, dataDir, pluginDir string) hostEnv {
	return hostEnv{
		devDir: "/dev", sysDir: "/sys", cgroupDir: "/sys/fs/cgroup",
		pluginDirs: pluginDirs(pluginDir), dataDir: dataDir, socket: socket,
		root: os.Geteuid() == 0, lookPath: exec.LookPath,
		run: func(ctx context.Context, argv ...string) ([]byte, error) {
			return exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		},
	}
}

// pluginDirs lists where petreld may find plugins: the configured
// directory, else beside this petrel (where `make` and the tarball put
// them) and /usr/libexec/petrel (where the package puts them).
func pluginDirs(configured string) []string {
	if configured != "" {
		return []string{configured}
	}
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			dirs = append(dirs, filepath.Dir(exe))
		}
	}
	if len(dirs) == 0 || dirs[0] != "/usr/libexec/petrel" {
		dirs = append(dirs, "/usr/libexec/petrel")
	}
	return dirs
}

// doctorFlags are the directories the operator named on the command
// line ("" for none): they win over what petreld reports.
type doctorFlags struct {
	dataDir, pluginDir string
}

func (a *app) doctorCmd() *cobra.Command {
	var (
		jsonOut                     bool
		dataDir, pluginDir, cgroups string
	)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run Petrel, and say what to fix",
		Long: `Check this host and the petreld that runs on it, and print one line per
check, OK, WARN or FAIL, saying in plain words what to fix. When petreld
answers, the checks follow its configuration (its directories, plugins,
enabled backends and their tenders); without it, they check the defaults
and say so.

  daemon     petreld answers on its socket, its version and API version
  config     petreld's configuration file, directories and enabled plugins
  kvm        /dev/kvm exists and opens read-write (and whether it is kvm_pvm)
  tun        /dev/net/tun, for VM network devices
  bridges    the bridges VMs can be attached to
  backend    each enabled backend: what it runs (its tender, KVM or TCG), or
             what it misses and the one command that fixes it
  backends   what this host can run: hvt (KVM), spt (no KVM needed),
             qemu (KVM or TCG)
  tender     (without petreld) solo5-hvt and solo5-spt on PATH, and their
             Solo5 ABI versions; Petrel's built-in tenders serve where
             they are missing
  qemu       (without petreld) qemu-system-x86_64 and its version
  plugin     each plugin: its version, health, and that only root may
             change the binary petreld runs; petrel-shim
  socket     the socket is not writable by everyone
  data-dir   the state directory is private to root (0700)
  state      the state in the data directory
  cgroups    the cgroup version of the host

Run it as root to check what petreld itself can do. With --destination
only what petreld reports is checked, not this machine. The exit status
is 0 when nothing FAILed, 1 otherwise.`,
		Example: `  sudo petrel doctor
  petrel doctor --json | jq '.[] | select(.status != "OK")'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := dataDir
			if dir == "" {
				dir = defaultDataDir
			}
			env := defaultHostEnv(a.socketPath(), dir, pluginDir)
			env.cgroupDir = cgroups
			ctx, cancel := signalContext()
			defer cancel()
			flags := doctorFlags{dataDir: dataDir, pluginDir: pluginDir}
			results := a.runChecks(ctx, env, flags)
			if jsonOut {
				if err := writeJSON(a.out, results); err != nil {
					return err
				}
			} else {
				printChecks(a.out, results)
			}
			failed := 0
			for _, r := range results {
				if r.Status == statusFail {
					failed++
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d checks failed", failed, len(results))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&jsonOut, "json", false, "print JSON")
	f.StringVar(&dataDir, "data-dir", "", "state directory to check (default: petreld's, else "+defaultDataDir+")")
	f.StringVar(&pluginDir, "plugin-dir", "", "plugin directory to check (default: petreld's, else beside petrel, then /usr/libexec/petrel)")
	f.StringVar(&cgroups, "cgroup-root", "/sys/fs/cgroup", "where the cgroup file system is mounted")
	return cmd
}

// runChecks asks petreld first, so that the checks that follow look
// where it looks: its data directory and plugin directory, its plugins'
// versions and health, its backends' capabilities. Without a daemon they
// check the defaults, and the daemon line says so.
func (a *app) runChecks(ctx context.Context, env hostEnv, flags doctorFlags) []checkResult {
	remote := a.remote.destination != ""
	var (
		rs   []checkResult
		view *daemonView
	)
	c, err := a.dial()
	if err != nil {
		rs = append(rs, fail("daemon", "cannot connect to petreld at %s: %v; %s", env.socket, err, defaultsNote(env)))
	} else {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var daemonRs []checkResult
		view, daemonRs = askDaemon(dctx, c.API, env.socket)
		cancel()
		c.Close()
		if view == nil && len(daemonRs) == 1 {
			daemonRs[0].Message += "; " + defaultsNote(env)
		}
		rs = append(rs, daemonRs...)
	}
	if view != nil && view.host != nil {
		if view.host.GetSocket() != "" && !remote {
			env.socket = view.host.GetSocket()
		}
		if flags.dataDir == "" && view.host.GetDataDir() != "" {
			env.dataDir = view.host.GetDataDir()
		}
		if flags.pluginDir == "" && view.host.GetPluginDir() != "" {
			env.pluginDirs = []string{view.host.GetPluginDir()}
		}
		rs = append(rs, checkConfig(view.host))
	}
	if remote {
		if view != nil {
			rs = append(rs, checkDaemonBackends(view)...)
			rs = append(rs, checkDaemonPlugins(ctx, env, view, version, false)...)
		}
		return append(rs, ok("host", "petreld runs on %s: this machine's devices and files are not checked", a.remote.destination))
	}
	host := hostChecks(env)
	rs = append(rs, host...)
	if view != nil {
		rs = append(rs, checkDaemonBackends(view)...)
		rs = append(rs, checkDaemonPlugins(ctx, env, view, version, true)...)
	} else {
		rs = append(rs, checkTenders(ctx, env)...)
		rs = append(rs, checkQEMU(ctx, env))
		rs = append(rs, checkPlugins(ctx, env, version)...)
		rs = append(rs, checkBackends(env, host[0].Status == statusOK))
	}
	rs = append(rs, checkSocket(env.socket)...)
	rs = append(rs, checkDataDir(env.dataDir), checkState(env.dataDir), checkCgroups(env))
	return rs
}

// defaultsNote says, where petreld did not answer, what the checks that
// follow look at instead of its configuration.
func defaultsNote(env hostEnv) string {
	return fmt.Sprintf("the checks below look at the defaults (data directory %s, plugins in %s, tenders on PATH), which the petreld you run may not use",
		env.dataDir, strings.Join(env.pluginDirs, " or "))
}

func printChecks(w io.Writer, rs []checkResult) {
	for _, r := range rs {
		fmt.Fprintf(w, "%-4s  %-8s  %s\n", r.Status, r.Check, r.Message)
	}
}

var (
	abiVersionRE    = regexp.MustCompile(`ABI version (\d+)`)
	tenderVersionRE = regexp.MustCompile(`\bv?(\d+\.\d+\.\d+\S*)`)
)

// checkTenders finds Solo5's tenders on PATH and asks each for its
// version and ABI version, as the backends do.
func checkTenders(ctx context.Context, env hostEnv) []checkResult {
	var rs []checkResult
	for _, t := range []struct{ name, missing string }{
		{"solo5-hvt", "not on PATH: the hvt backend uses Petrel's built-in tender (engine = \"auto\"); install Solo5 to use solo5-hvt instead"},
		{"solo5-spt", "not on PATH: the spt backend uses Petrel's built-in spt tender (engine = \"auto\"); install Solo5 to use solo5-spt instead"},
	} {
		path, err := env.lookPath(t.name)
		if err != nil {
			rs = append(rs, ok("tender", "%s %s", t.name, t.missing))
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, _ := env.run(tctx, path, "--version")
		cancel()
		m := abiVersionRE.FindSubmatch(out)
		if m == nil {
			rs = append(rs, fail("tender", "%s --version did not report an ABI version (%q): it is not a Solo5 tender, or too old (Solo5 0.6 or later is needed)", path, firstLine(out)))
			continue
		}
		ver := "version unknown"
		if v := tenderVersionRE.FindSubmatch(out); v != nil {
			ver = "Solo5 " + string(v[1])
		}
		rs = append(rs, ok("tender", "%s (%s, ABI version %s)", path, ver, m[1]))
	}
	return rs
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// checkPlugins lists the plugin binaries and petrel-shim in every plugin
// directory with their versions, as the binaries report them.
func checkPlugins(ctx context.Context, env hostEnv, self string) []checkResult {
	var rs []checkResult
	found := false
	for _, dir := range env.pluginDirs {
		plugins, _ := filepath.Glob(filepath.Join(dir, "petrel-plugin-*"))
		if len(plugins) == 0 {
			continue
		}
		found = true
		sort.Strings(plugins)
		hypervisor := false
		for _, p := range plugins {
			name := strings.TrimPrefix(filepath.Base(p), "petrel-plugin-")
			if own, ok := catalog.Lookup(name); ok && own.Kind == catalog.Hypervisor {
				hypervisor = true
			}
			rs = append(rs, checkBinary(ctx, env, p, self, ""))
		}
		shim := filepath.Join(dir, "petrel-shim")
		if _, err := os.Stat(shim); err == nil {
			rs = append(rs, checkBinary(ctx, env, shim, self, ""))
		} else if hypervisor {
			if p, err := env.lookPath("petrel-shim"); err == nil {
				rs = append(rs, checkBinary(ctx, env, p, self, ""))
			} else {
				rs = append(rs, fail("plugin", "petrel-shim is neither in %s nor on PATH: hypervisor plugins cannot start VMs; install it beside them", dir))
			}
		}
	}
	if !found {
		return []checkResult{fail("plugin", "no plugins (petrel-plugin-*) in %s: petreld cannot run VMs; install them (make, or the petrel package) or set plugin_dir", strings.Join(env.pluginDirs, " or "))}
	}
	return rs
}

// binaryProblem reports why petreld must not run the plugin or shim at
// path (it runs them as root), or nil.
func binaryProblem(path string) *checkResult {
	fi, err := os.Stat(path)
	if err != nil {
		r := fail("plugin", "%s: %v", path, err)
		return &r
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		r := fail("plugin", "%s is not an executable file: chmod 755 %s", path, path)
		return &r
	}
	if fi.Mode().Perm()&0o022 != 0 {
		r := fail("plugin", "%s is writable by others (mode %04o) and petreld runs it as root: chmod 755 %s", path, fi.Mode().Perm(), path)
		return &r
	}
	return nil
}

// checkBinary reports one plugin or shim binary and its version: known
// when petreld reported it (from the plugin's Info), else what the binary
// says.
func checkBinary(ctx context.Context, env hostEnv, path, self, known string) checkResult {
	if r := binaryProblem(path); r != nil {
		return *r
	}
	v := known
	if v == "" {
		v = binaryVersion(ctx, env, path)
	}
	if v == "" {
		return ok("plugin", "%s (version unknown: it does not answer --version and records none)", path)
	}
	if isOwnBinary(path) && mismatch(v, self) {
		return warn("plugin", "%s is version %s, petrel is %s: install petrel and its plugins from one build", path, v, self)
	}
	return ok("plugin", "%s %s", path, v)
}

// mismatch reports whether the version v of one of Petrel's own binaries
// differs from this petrel's, self; development builds and unknown
// versions match anything.
func mismatch(v, self string) bool {
	return v != "" && self != "" && v != self && !strings.HasSuffix(self, "-dev")
}

// ownPlugin reports whether a plugin is built with petrel (one of the
// catalog's), so that its version must be petrel's; third-party plugins
// have versions of their own.
func ownPlugin(name string) bool {
	_, ok := catalog.Lookup(name)
	return ok
}

// isOwnBinary reports whether path is petrel-shim or one of Petrel's own
// plugins.
func isOwnBinary(path string) bool {
	base := filepath.Base(path)
	name, plugin := strings.CutPrefix(base, "petrel-plugin-")
	return base == "petrel-shim" || plugin && ownPlugin(name)
}

// binaryVersion reads the version of a plugin or shim binary: what it
// prints for --version (the version its Info reports, stamped at build
// time with -ldflags), else what its Go build information records.
func binaryVersion(ctx context.Context, env hostEnv, path string) string {
	if env.run != nil {
		vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := env.run(vctx, path, "--version")
		cancel()
		if v, found := strings.CutPrefix(firstLine(out), filepath.Base(path)+" "); err == nil && found && v != "" {
			return strings.TrimSpace(v)
		}
	}
	return buildVersion(path)
}

// buildVersion reads the version a Go binary was built with: the
// main.version set by the Makefile's -ldflags (recorded only without
// -trimpath), else the VCS revision.
func buildVersion(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "-ldflags":
			if v := ldflagsVersion(s.Value); v != "" {
				return v
			}
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return ""
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// ldflagsVersion finds "-X main.version=V" in a recorded -ldflags value.
func ldflagsVersion(flags string) string {
	fields := strings.Fields(flags)
	for i, f := range fields {
		arg := ""
		switch {
		case f == "-X" && i+1 < len(fields):
			arg = fields[i+1]
		case strings.HasPrefix(f, "-X="):
			arg = strings.TrimPrefix(f, "-X=")
		}
		if v, found := strings.CutPrefix(strings.Trim(arg, `'"`), "main.version="); found {
			return v
		}
	}
	return ""
}

// qemuVersionRE finds the version in qemu-system-x86_64 --version.
var qemuVersionRE = regexp.MustCompile(`version (\d+\.\d+[^\s,)]*)`)

// checkQEMU finds QEMU for the qemu backend, as the backend does (its
// default binary on PATH), and asks for its version. A host without it is
// fine unless it wants the qemu backend, so its absence is not a warning.
func checkQEMU(ctx context.Context, env hostEnv) checkResult {
	path, err := env.lookPath("qemu-system-x86_64")
	if err != nil {
		return ok("qemu", "qemu-system-x86_64 not on PATH: only the qemu backend needs it (virtio unikernels, Linux guests); to use it, %s", installQEMUCommand())
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	out, err := env.run(qctx, path, "--version")
	cancel()
	m := qemuVersionRE.FindSubmatch(out)
	if err != nil || m == nil {
		return warn("qemu", "%s --version failed (%q): the qemu backend cannot use it; reinstall it (%s)", path, firstLine(out), installQEMUCommand())
	}
	return ok("qemu", "%s (QEMU %s)", path, m[1])
}

// installQEMUCommand installs QEMU for x86-64 guests on this system.
func installQEMUCommand() string {
	if runtime.GOOS == "freebsd" {
		return "pkg install qemu"
	}
	return "apt install qemu-system-x86"
}

// backendNeeds says, for each of Petrel's hypervisor plugins, what it runs
// on this host once installed (can), or else what it misses (cannot), from
// what the other checks found: hvt needs a usable KVM, spt nothing more
// (its built-in tender needs neither KVM nor Solo5), qemu
// qemu-system-x86_64, with KVM or else under TCG. Every hypervisor of the
// catalog has an entry (TestBackendNeedsCoverCatalog).
var backendNeeds = map[string]func(env hostEnv, kvmUsable bool) (can, cannot string){
	"hvt": func(_ hostEnv, kvmUsable bool) (string, string) {
		if kvmUsable {
			return "hvt (on KVM)", ""
		}
		return "", "hvt (needs a usable /dev/kvm)"
	},
	"spt": func(env hostEnv, _ bool) (string, string) {
		tender := "Petrel's built-in tender"
		if p, err := env.lookPath("solo5-spt"); err == nil {
			tender = p
		}
		return "spt (with " + tender + ", no KVM needed)", ""
	},
	"qemu": func(env hostEnv, kvmUsable bool) (string, string) {
		switch _, err := env.lookPath("qemu-system-x86_64"); {
		case err != nil:
			return "", "qemu (" + installQEMUCommand() + ")"
		case kvmUsable:
			return "qemu (virtio unikernels and Linux guests on KVM)", ""
		}
		return "qemu (virtio unikernels and Linux guests under TCG, software emulation)", ""
	},
}

// checkBackends says which of Petrel's backends (the catalog's hypervisor
// plugins) this host can run VMs with: each needs its plugin installed,
// and then what backendNeeds says. It fails only when nothing can run.
func checkBackends(env hostEnv, kvmUsable bool) checkResult {
	plugin := func(name string) bool {
		for _, dir := range env.pluginDirs {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return true
			}
		}
		return false
	}
	var can, cannot []string
	for _, p := range catalog.OfKind(catalog.Hypervisor) {
		if !plugin(p.Binary()) {
			cannot = append(cannot, p.Name+" ("+p.Binary()+" not installed)")
			continue
		}
		needs, ok := backendNeeds[p.Name]
		if !ok {
			can = append(can, p.Name+" (installed; petreld reports what it needs)")
			continue
		}
		if c, n := needs(env, kvmUsable); c != "" {
			can = append(can, c)
		} else {
			cannot = append(cannot, n)
		}
	}
	if len(can) == 0 {
		return fail("backends", "this host can run no VMs: %s", strings.Join(cannot, "; "))
	}
	msg := "this host runs " + strings.Join(can, ", ")
	if len(cannot) > 0 {
		msg += "; not " + strings.Join(cannot, ", ")
	}
	return ok("backends", "%s", msg)
}

// checkSocket checks that the daemon socket is a socket and that not
// everyone may write to it: whoever can connect manages every VM.
func checkSocket(path string) []checkResult {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return []checkResult{warn("socket", "%s: %v", path, err)}
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return []checkResult{fail("socket", "%s is not a socket: remove it and restart petreld", path)}
	}
	perm := fi.Mode().Perm()
	owner := ""
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = fmt.Sprintf(" owner %d:%d", st.Uid, st.Gid)
	}
	if perm&0o002 != 0 {
		return []checkResult{fail("socket", "%s is writable by everyone (mode %04o): anyone on this host can manage every VM; set socket_mode = \"0600\" (or \"0660\" with a group) in petreld's configuration", path, perm)}
	}
	if perm&0o020 != 0 {
		return []checkResult{ok("socket", "%s mode %04o%s: the socket's group can manage every VM", path, perm, owner)}
	}
	return []checkResult{ok("socket", "%s mode %04o%s", path, perm, owner)}
}

// checkDataDir checks that the state directory is private to root.
func checkDataDir(path string) checkResult {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return warn("data-dir", "%s does not exist yet: petreld creates it when it starts (or pass --data-dir)", path)
	}
	if err != nil {
		return warn("data-dir", "%s: %v", path, err)
	}
	if !fi.IsDir() {
		return fail("data-dir", "%s is not a directory", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fail("data-dir", "%s has mode %04o: it holds images, block devices and VM records; chmod 700 %s", path, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		return warn("data-dir", "%s is owned by uid %d, not root: chown root %s", path, st.Uid, path)
	}
	return ok("data-dir", "%s mode 0700, owned by root", path)
}

// checkState reads the state in the data directory as `petrel state
// inspect` does and reports its schema and any problem.
func checkState(path string) checkResult {
	if _, err := os.Stat(filepath.Join(path, store.MetaFile)); errors.Is(err, os.ErrNotExist) {
		return ok("state", "%s holds no state yet", path)
	}
	rep, err := statedump.InspectDir(path, false)
	if err != nil {
		return fail("state", "%v", err)
	}
	switch {
	case rep.Schema > rep.CurrentSchema:
		return fail("state", "%s has schema %d, newer than the %d this petrel knows: install the petrel matching petreld", path, rep.Schema, rep.CurrentSchema)
	case len(rep.Problems) > 0:
		return warn("state", "%d problem(s), for example: %s (petrel state inspect lists them all)", len(rep.Problems), rep.Problems[0])
	case rep.Schema < rep.CurrentSchema:
		return ok("state", "schema %d (petreld migrates it to %d when it starts): %d VMs, %d policies, %d images", rep.Schema, rep.CurrentSchema, len(rep.VMs), len(rep.Policies), len(rep.Images))
	}
	return ok("state", "schema %d: %d VMs, %d policies, %d images, %d block devices", rep.Schema, len(rep.VMs), len(rep.Policies), len(rep.Images), len(rep.Blocks))
}

// checkCgroups reports the host's cgroup hierarchy.
func checkCgroups(env hostEnv) checkResult {
	if _, err := os.Stat(filepath.Join(env.cgroupDir, "cgroup.controllers")); err == nil {
		return ok("cgroups", "cgroup v2 (unified hierarchy) at %s", env.cgroupDir)
	}
	if _, err := os.Stat(filepath.Join(env.cgroupDir, "unified", "cgroup.controllers")); err == nil {
		return ok("cgroups", "cgroup v1 with v2 at %s/unified (hybrid)", env.cgroupDir)
	}
	if entries, err := os.ReadDir(env.cgroupDir); err == nil && len(entries) > 0 {
		return ok("cgroups", "cgroup v1 (legacy hierarchy) at %s", env.cgroupDir)
	}
	return warn("cgroups", "no cgroup file system at %s: systemd's device and task limits for petreld.service cannot apply", env.cgroupDir)
}
