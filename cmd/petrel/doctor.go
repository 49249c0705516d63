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
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/statedump"
	"github.com/petrel-vmm/petrel/core/store"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
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

func (a *app) doctorCmd() *cobra.Command {
	var (
		jsonOut                     bool
		dataDir, pluginDir, cgroups string
	)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run Petrel, and say what to fix",
		Long: `Check this host for what Petrel needs and print one line per check,
OK, WARN or FAIL, saying in plain words what to fix:

  kvm        /dev/kvm exists and opens read-write (and whether it is kvm_pvm)
  tun        /dev/net/tun, for VM network devices
  bridges    the bridges VMs can be attached to
  tender     solo5-hvt and solo5-spt, and their Solo5 ABI versions (Petrel's
             built-in tenders serve where they are missing)
  backends   what this host can run: hvt (KVM), spt (no KVM needed),
             qemu (KVM or TCG)
  plugin     the plugin binaries petreld finds, their versions, petrel-shim
  daemon     petreld answers on its socket, its API version, its plugins' health
  socket     the socket is not writable by everyone
  data-dir   the state directory is private to root (0700)
  cgroups    the cgroup version of the host

Run it as root to check what petreld itself can do. The exit status is 0
when nothing FAILed, 1 otherwise.`,
		Example: `  sudo petrel doctor
  petrel doctor --json | jq '.[] | select(.status != "OK")'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			env := defaultHostEnv(a.socketPath(), dataDir, pluginDir)
			env.cgroupDir = cgroups
			ctx, cancel := signalContext()
			defer cancel()
			results := a.runChecks(ctx, env)
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
	f.StringVar(&dataDir, "data-dir", defaultDataDir, "petreld's state directory")
	f.StringVar(&pluginDir, "plugin-dir", "", "petreld's plugin directory (default: beside petrel, then /usr/libexec/petrel)")
	f.StringVar(&cgroups, "cgroup-root", "/sys/fs/cgroup", "where the cgroup file system is mounted")
	return cmd
}

// runChecks runs every check; the daemon checks use the usual connection
// and tolerate a daemon that is not there.
func (a *app) runChecks(ctx context.Context, env hostEnv) []checkResult {
	var rs []checkResult
	host := hostChecks(env)
	rs = append(rs, host...)
	rs = append(rs, checkTenders(ctx, env)...)
	rs = append(rs, checkPlugins(env, version)...)
	rs = append(rs, checkBackends(env, host[0].Status == statusOK))
	c, err := a.dial()
	if err != nil {
		rs = append(rs, fail("daemon", "cannot connect to petreld at %s: %v", env.socket, err))
	} else {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rs = append(rs, checkDaemon(dctx, c.API, env.socket)...)
		cancel()
		c.Close()
	}
	if a.remote.destination == "" {
		rs = append(rs, checkSocket(env.socket)...)
	}
	rs = append(rs, checkDataDir(env.dataDir), checkState(env.dataDir), checkCgroups(env))
	return rs
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
// directory with their build versions.
func checkPlugins(env hostEnv, self string) []checkResult {
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
			if name == "hvt" || name == "spt" || name == "qemu" {
				hypervisor = true
			}
			rs = append(rs, checkBinary(p, self))
		}
		shim := filepath.Join(dir, "petrel-shim")
		if _, err := os.Stat(shim); err == nil {
			rs = append(rs, checkBinary(shim, self))
		} else if hypervisor {
			if p, err := env.lookPath("petrel-shim"); err == nil {
				rs = append(rs, checkBinary(p, self))
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

// checkBinary reports one plugin or shim binary and its version.
func checkBinary(path, self string) checkResult {
	fi, err := os.Stat(path)
	if err != nil {
		return fail("plugin", "%s: %v", path, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fail("plugin", "%s is not an executable file: chmod 755 %s", path, path)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fail("plugin", "%s is writable by others (mode %04o) and petreld runs it as root: chmod 755 %s", path, fi.Mode().Perm(), path)
	}
	v := binaryVersion(path)
	if v == "" {
		return ok("plugin", "%s (version unknown)", path)
	}
	if self != "" && v != self && !strings.HasSuffix(self, "-dev") {
		return warn("plugin", "%s is version %s, petrel is %s: install petrel and its plugins from one build", path, v, self)
	}
	return ok("plugin", "%s %s", path, v)
}

// binaryVersion reads the version a Go binary was built with: the
// main.version set by the Makefile's -ldflags, else the VCS revision.
func binaryVersion(path string) string {
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

// checkBackends says which backends this host can run VMs with, from
// what the other checks found: hvt needs a usable KVM and its plugin, spt
// its plugin (its built-in tender needs neither KVM nor Solo5), qemu its
// plugin and qemu-system-x86_64, with KVM or else under TCG. It fails
// only when nothing can run.
func checkBackends(env hostEnv, kvmUsable bool) checkResult {
	plugin := func(name string) bool {
		for _, dir := range env.pluginDirs {
			if _, err := os.Stat(filepath.Join(dir, "petrel-plugin-"+name)); err == nil {
				return true
			}
		}
		return false
	}
	var can, cannot []string
	switch {
	case !plugin("hvt"):
		cannot = append(cannot, "hvt (petrel-plugin-hvt not installed)")
	case kvmUsable:
		can = append(can, "hvt (on KVM)")
	default:
		cannot = append(cannot, "hvt (needs a usable /dev/kvm)")
	}
	if plugin("spt") {
		tender := "Petrel's built-in tender"
		if p, err := env.lookPath("solo5-spt"); err == nil {
			tender = p
		}
		can = append(can, "spt (with "+tender+", no KVM needed)")
	} else {
		cannot = append(cannot, "spt (petrel-plugin-spt not installed)")
	}
	_, qerr := env.lookPath("qemu-system-x86_64")
	switch {
	case !plugin("qemu"):
		cannot = append(cannot, "qemu (petrel-plugin-qemu not installed)")
	case qerr != nil:
		cannot = append(cannot, "qemu (apt install qemu-system-x86)")
	case kvmUsable:
		can = append(can, "qemu (virtio unikernels and Linux guests on KVM)")
	default:
		can = append(can, "qemu (virtio unikernels and Linux guests under TCG, software emulation)")
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

// checkDaemon asks petreld for its version and its plugins' health.
func checkDaemon(ctx context.Context, api daemonv1.DaemonClient, socket string) []checkResult {
	v, err := api.Version(ctx, &daemonv1.VersionRequest{})
	if err != nil {
		st, _ := status.FromError(err)
		switch {
		case st.Code() == codes.Unavailable && strings.Contains(st.Message(), "permission denied"):
			return []checkResult{fail("daemon", "cannot open %s: permission denied: run as root, or join the socket's group (socket_mode = \"0660\")", socket)}
		case st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded:
			return []checkResult{fail("daemon", "petreld does not answer at %s: start it (systemctl start petreld, or sudo petreld &) or point --socket at it", socket)}
		}
		return []checkResult{fail("daemon", "petreld at %s: %v", socket, err)}
	}
	rs := []checkResult{}
	if v.GetApiVersion() != daemonAPIVersion {
		rs = append(rs, fail("daemon", "petreld %s at %s speaks daemon API v%d, this petrel v%d: upgrade the older of the two", v.GetVersion(), socket, v.GetApiVersion(), daemonAPIVersion))
	} else {
		rs = append(rs, ok("daemon", "petreld %s at %s (daemon API v%d)", v.GetVersion(), socket, v.GetApiVersion()))
	}
	res, err := api.Plugins(ctx, &daemonv1.PluginsRequest{})
	if err != nil {
		return append(rs, fail("daemon", "petreld could not list its plugins: %v", err))
	}
	for _, p := range res.GetPlugins() {
		what := fmt.Sprintf("plugin %s", p.GetName())
		if p.GetKind() != "" {
			what += " (" + p.GetKind() + ")"
		}
		if p.GetVersion() != "" {
			what += " " + p.GetVersion()
		}
		detail := ""
		if d := strings.TrimSpace(p.GetDescription()); d != "" {
			detail = ": " + d
		}
		switch p.GetHealth() {
		case "healthy":
			rs = append(rs, ok("daemon", "%s healthy", what))
		case "not enabled":
			rs = append(rs, ok("daemon", "%s not enabled", what))
		case "degraded", "unhealthy":
			// The plugin runs but cannot serve (a missing tender, say):
			// only what needs it is affected.
			rs = append(rs, warn("daemon", "%s %s%s", what, p.GetHealth(), detail))
		default:
			restarts := ""
			if n := p.GetRestarts(); n > 0 {
				restarts = fmt.Sprintf(", restarted %d times", n)
			}
			rs = append(rs, fail("daemon", "%s %s%s (petreld's log says why%s)", what, p.GetHealth(), detail, restarts))
		}
	}
	return rs
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
