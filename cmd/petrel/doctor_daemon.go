package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// daemonView is what petreld says about itself: the checks that follow
// take its configuration and its plugins' own reports over the defaults
// and over what this petrel could guess from the host.
type daemonView struct {
	version *daemonv1.VersionResponse
	// host is nil from a petreld that does not report its configuration.
	host    *daemonv1.HostResponse
	plugins []*daemonv1.Plugin
	// summary is set when plugins is petreld's health summary, which is
	// all it shows a caller other than the host's owner: names, kinds,
	// health and targets, without versions, paths, restarts or problems.
	summary bool
}

// askDaemon asks petreld for its version, configuration and plugins. It
// returns nil, with the line saying why, when petreld does not answer.
func askDaemon(ctx context.Context, api daemonv1.DaemonClient, socket string) (*daemonView, []checkResult) {
	v, err := api.Version(ctx, &daemonv1.VersionRequest{})
	if err != nil {
		st, _ := status.FromError(err)
		switch {
		case st.Code() == codes.Unavailable && strings.Contains(st.Message(), "permission denied"):
			return nil, []checkResult{fail("daemon", "cannot open %s: permission denied: run as root, or join the socket's group (socket_mode = \"0660\")", socket)}
		case st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded:
			return nil, []checkResult{fail("daemon", "petreld does not answer at %s: start it (systemctl start petreld, or sudo petreld &) or point --socket at it", socket)}
		}
		return nil, []checkResult{fail("daemon", "petreld at %s: %v", socket, err)}
	}
	view := &daemonView{version: v}
	var rs []checkResult
	if v.GetApiVersion() != daemonAPIVersion {
		rs = append(rs, fail("daemon", "petreld %s at %s speaks daemon API v%d, this petrel v%d: upgrade the older of the two", v.GetVersion(), socket, v.GetApiVersion(), daemonAPIVersion))
	} else {
		rs = append(rs, ok("daemon", "petreld %s at %s (daemon API v%d)", v.GetVersion(), socket, v.GetApiVersion()))
	}
	h, err := api.Host(ctx, &daemonv1.HostRequest{})
	switch st, _ := status.FromError(err); {
	case err == nil:
		view.host = h
	case st.Code() == codes.Unimplemented:
		rs = append(rs, warn("daemon", "petreld %s is older than this petrel and does not report its configuration: the checks below look at the defaults, which it may not use", v.GetVersion()))
	case st.Code() == codes.PermissionDenied:
		rs = append(rs, warn("daemon", "petreld does not show its configuration to this caller (%s): only what it reports to everyone is checked", st.Message()))
	default:
		rs = append(rs, warn("daemon", "petreld could not report its configuration (%v): the checks below look at the defaults, which it may not use", err))
	}
	res, err := client.ListPlugins(ctx, api)
	switch {
	case err != nil:
		rs = append(rs, fail("daemon", "petreld could not list its plugins: %v", err))
	case res.Summary:
		rs = append(rs, ok("daemon", "petreld shows this caller its plugins' health summary: their versions, paths and what they miss are reserved to the host's owner, and not checked"))
		view.plugins, view.summary = res.Plugins, true
	default:
		view.plugins = res.Plugins
	}
	return view, rs
}

// checkConfig reports the configuration petreld runs with: the file it
// read, its directories and the plugins it enables.
func checkConfig(h *daemonv1.HostResponse) checkResult {
	file := h.GetConfigFile()
	if file == "" {
		file = "the embedded defaults and flags (no --config)"
	}
	var backends []string
	for _, b := range h.GetBackends() {
		if b == h.GetDefaultBackend() {
			b += " (default)"
		}
		backends = append(backends, b)
	}
	msg := fmt.Sprintf("%s: data_dir %s, run_dir %s, plugin_dir %s; backends %s", file, h.GetDataDir(), h.GetRunDir(), h.GetPluginDir(), listOrNone(backends))
	if len(h.GetNetworks()) > 0 {
		msg += "; network " + strings.Join(h.GetNetworks(), ", ")
	}
	if len(h.GetMetrics()) > 0 {
		msg += "; metrics " + strings.Join(h.GetMetrics(), ", ")
	}
	if len(h.GetBackends()) == 0 {
		return fail("config", "%s: petreld runs no VMs without a backend; add a backend block (petreld --print-defaults shows them)", msg)
	}
	return ok("config", "%s", msg)
}

func listOrNone(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ", ")
}

// checkDaemonBackends reports each backend petreld enables as its plugin
// sees this host: what it runs, or what it misses with the command that
// fixes it; then what the host can run, as the summary line.
func checkDaemonBackends(view *daemonView) []checkResult {
	byName := map[string]*daemonv1.Plugin{}
	for _, p := range view.plugins {
		byName[p.GetName()] = p
	}
	var enabled []string
	if view.host != nil {
		enabled = view.host.GetBackends()
	} else {
		for _, p := range view.plugins {
			if p.GetKind() == "hypervisor" {
				enabled = append(enabled, p.GetName())
			}
		}
	}
	def := view.host.GetDefaultBackend()
	var rs []checkResult
	var can, cannot []string
	for _, name := range enabled {
		p := byName[name]
		switch {
		case p == nil:
			rs = append(rs, fail("backend", "%s is enabled, but petreld runs no plugin of that name: install petrel-plugin-%s in %s", name, name, view.host.GetPluginDir()))
			cannot = append(cannot, name+" (petrel-plugin-"+name+" missing)")
		case p.GetHealth() == "healthy":
			long, short := capability(p)
			msg := name + " " + long
			if extra := problemsText(p); extra != "" {
				msg += "; " + extra
			}
			rs = append(rs, ok("backend", "%s", msg))
			can = append(can, short)
		case p.GetHealth() == "down":
			rs = append(rs, fail("backend", "%s is down: %s", name, downText(view, p, "its plugin exited")))
			cannot = append(cannot, name+" (its plugin is down)")
		default:
			rs = append(rs, warn("backend", "%s cannot run VMs: %s", name, firstNonEmpty(problemsText(p), p.GetDescription(), unknownProblem(view))))
			cannot = append(cannot, name+" ("+firstNonEmpty(firstFix(p), p.GetHealth())+")")
		}
	}
	switch {
	case len(can) == 0:
		rs = append(rs, fail("backends", "petreld can run no VMs on this host: %s", listOrNone(cannot)))
	default:
		msg := "petreld runs " + strings.Join(can, ", ")
		if len(cannot) > 0 {
			msg += "; not " + strings.Join(cannot, ", ")
		}
		if p := byName[def]; def != "" && (p == nil || p.GetHealth() != "healthy") {
			rs = append(rs, warn("backends", "%s; the default backend %s cannot run VMs: creates must name another (--backend)", msg, def))
		} else {
			rs = append(rs, ok("backends", "%s", msg))
		}
	}
	return rs
}

// capability describes what a healthy backend runs, from its fingerprint:
// at length for its own line, and in short for the summary. Petrel's
// tender backends (hvt, spt) report their tender, qemu its accelerator
// per kind of guest; another backend its targets.
func capability(p *daemonv1.Plugin) (long, short string) {
	a := p.GetAttributes()
	name := p.GetName()
	switch {
	case a["tender"] != "":
		target := firstNonEmpty(a["target"], name)
		tender := describeTender(a["tender"])
		where := "without KVM"
		switch a["kvm"] {
		case "usable":
			where = "on KVM"
		case "":
			if target == "hvt" {
				where = "on the host's hypervisor"
			}
		}
		long = fmt.Sprintf("runs Solo5 %s unikernels with %s", target, tender)
		if abi := a["tender.abi_version"]; abi != "" {
			long += " (Solo5 ABI " + abi + ")"
		}
		return long + ", " + where, fmt.Sprintf("%s (%s, %s)", name, shortTender(a["tender"]), where)
	case a["qemu"] != "":
		var guests, kinds []string
		for _, g := range []struct{ key, long, short string }{{"accel.virtio", "Solo5 virtio unikernels", "virtio"}, {"accel.linux", "Linux guests", "Linux"}} {
			switch a[g.key] {
			case "kvm":
				guests = append(guests, g.long+" on KVM")
				kinds = append(kinds, g.short+" on KVM")
			case "tcg":
				guests = append(guests, g.long+" under TCG (software emulation, slow)")
				kinds = append(kinds, g.short+" under TCG")
			}
		}
		long = "runs " + strings.Join(guests, " and ") + " with " + a["qemu"]
		if v := a["qemu.version"]; v != "" {
			long += " (QEMU " + v + ")"
		}
		return long, name + " (" + strings.Join(kinds, ", ") + ")"
	}
	targets := listOrNone(p.GetTargets())
	return "runs " + targets, name + " (" + targets + ")"
}

// describeTender names a tender command line as an operator knows it:
// Petrel's built-in tender is the plugin binary run as "tender".
func describeTender(argv string) string {
	if strings.HasSuffix(argv, " tender") {
		return "Petrel's built-in tender"
	}
	return argv
}

// shortTender is describeTender for the summary line.
func shortTender(argv string) string {
	if strings.HasSuffix(argv, " tender") {
		return "built-in tender"
	}
	return filepath.Base(strings.Fields(argv + " ")[0])
}

// problemsText lists what a plugin misses, each with its fix.
func problemsText(p *daemonv1.Plugin) string {
	var out []string
	for _, pr := range p.GetProblems() {
		s := pr.GetDescription()
		if f := pr.GetFix(); f != "" {
			s += "; fix: " + f
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

// firstFix is the fix of a plugin's first problem that has one.
func firstFix(p *daemonv1.Plugin) string {
	for _, pr := range p.GetProblems() {
		if pr.GetFix() != "" {
			return pr.GetFix()
		}
	}
	return ""
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// downText says why a plugin is down and where to look further: its own
// last error and restarts where petreld reports them; from a summary,
// which has neither, that the host's owner can find them.
func downText(view *daemonView, p *daemonv1.Plugin, fallback string) string {
	if view.summary {
		return fallback + " (the host's owner finds why in petreld's log)"
	}
	return fmt.Sprintf("%s (petreld's log says why; restarted %d times)", firstNonEmpty(p.GetDescription(), fallback), p.GetRestarts())
}

// unknownProblem is what a plugin that cannot serve misses when petreld
// does not say: from a summary, that only the host's owner may know.
func unknownProblem(view *daemonView) string {
	if view.summary {
		return "petreld reports what it misses to the host's owner only"
	}
	return ""
}

// checkDaemonPlugins reports every plugin petreld knows, with the version
// its Info reports and its health; with local, it also checks that only
// root may change the binaries petreld runs, and the petrel-shim its
// backends use.
func checkDaemonPlugins(ctx context.Context, env hostEnv, view *daemonView, self string, local bool) []checkResult {
	var rs []checkResult
	var shims []string
	for _, p := range view.plugins {
		if s := p.GetAttributes()["shim"]; s != "" && !slices.Contains(shims, s) {
			shims = append(shims, s)
		}
		what := p.GetName()
		if k := p.GetKind(); k != "" {
			what += " (" + k + ")"
		}
		if local && p.GetPath() != "" {
			if r := binaryProblem(p.GetPath()); r != nil {
				rs = append(rs, *r)
				continue
			}
		}
		v := p.GetVersion()
		if v == "" && local && p.GetPath() != "" {
			v = binaryVersion(ctx, env, p.GetPath())
		}
		if v == "" {
			v = "(version unknown)"
		}
		if !view.summary {
			// A summary has no versions: the daemon line says so once.
			what += " " + v
		}
		where := ""
		if p.GetPath() != "" {
			where = ": " + p.GetPath()
		}
		switch h := p.GetHealth(); h {
		case "healthy", "not enabled":
			if h == "not enabled" {
				where += fmt.Sprintf(" (a backend, network or metrics block named %q enables it)", p.GetName())
			}
			if ownPlugin(p.GetName()) && mismatch(p.GetVersion(), self) {
				rs = append(rs, warn("plugin", "%s %s%s: petrel is %s; install petrel and its plugins from one build", what, h, where, self))
			} else {
				rs = append(rs, ok("plugin", "%s %s%s", what, h, where))
			}
		case "degraded", "unhealthy":
			// The plugin runs but cannot serve (a missing tender, say):
			// only what needs it is affected. A backend's line says what
			// it misses.
			why := firstNonEmpty(problemsText(p), p.GetDescription(), unknownProblem(view))
			if p.GetKind() == "hypervisor" && !view.summary {
				why = "the backend line above says what it misses"
			}
			rs = append(rs, warn("plugin", "%s %s%s; %s", what, h, where, why))
		default:
			rs = append(rs, fail("plugin", "%s %s: %s", what, h, downText(view, p, "not running")))
		}
	}
	if local {
		sort.Strings(shims)
		for _, s := range shims {
			rs = append(rs, checkBinary(ctx, env, s, self, ""))
		}
	}
	return rs
}
