// Package petrelplugin holds what petreld and every plugin binary must
// agree on to find each other: the go-plugin handshake, the protocol
// versions, the names under which services are dispensed, and one-line
// Serve helpers so that a backend's main function is a single call. (It is
// not named plugin, so that it never shadows go-plugin's own package.)
package petrelplugin

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/textpages"
)

// ProtocolVersion is the newest plugin protocol version this SDK speaks.
// It changes only for breaking wire changes; petreld accepts this version
// and the one before it, so plugins can be upgraded one at a time.
const ProtocolVersion = 1

// OldestProtocolVersion is the oldest plugin protocol version petreld still
// accepts.
const OldestProtocolVersion = 1

// Service names under which go-plugin dispenses each plugin kind.
const (
	// HypervisorService is the dispense name of the hypervisor service.
	HypervisorService = "hypervisor"
)

// Handshake is shared by petreld and plugins. The cookie is not security:
// it stops a user from running a plugin binary by hand and getting
// confusing output, and stops petreld from launching something that is
// not a Petrel plugin.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "PETREL_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "f3a1c0de-petrel-plugin-v1-7d2e9b4a61c5",
}

// HypervisorPluginSets maps each supported protocol version to the plugins
// a hypervisor binary serves under it. impl is nil on petreld's side.
func HypervisorPluginSets(impl hypervisor.Hypervisor) map[int]plugin.PluginSet {
	return pluginSets(HypervisorService, hypervisor.NewGRPCPlugin(impl))
}

// pluginSets offers one service under every supported protocol version.
func pluginSets(service string, p plugin.Plugin) map[int]plugin.PluginSet {
	sets := map[int]plugin.PluginSet{}
	for v := OldestProtocolVersion; v <= ProtocolVersion; v++ {
		sets[v] = plugin.PluginSet{service: p}
	}
	return sets
}

// serve runs a plugin process serving sets; it never returns normally.
func serve(sets map[int]plugin.PluginSet) {
	startPlugin()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: sets,
		GRPCServer:       plugin.DefaultGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Level:      hclog.Info,
			Output:     os.Stderr,
			JSONFormat: true,
		}),
	})
}

// ServeHypervisor serves a hypervisor backend and never returns normally.
// It is the whole body of a backend's main function. When the parent
// (petreld) dies, the plugin exits too, so no orphaned plugin lingers;
// VMs are not affected because their shims run in their own sessions.
func ServeHypervisor(impl hypervisor.Hypervisor) {
	printVersion(impl)
	serve(HypervisorPluginSets(impl))
}

// VersionFlag, as a plugin binary's only argument, makes it print its
// file name and the version its Info reports, and exit: so that `petrel
// doctor` can tell the version of a plugin petreld is not running, from
// the plugin itself (a -trimpath build records no -ldflags to read).
const VersionFlag = "--version"

// informer is what every kind of plugin has: its identity.
type informer interface {
	Info(ctx context.Context) (*pluginv1.PluginInfo, error)
}

// printVersion serves VersionFlag: when it is the only argument, it
// prints "NAME VERSION" and exits.
func printVersion(impl informer) {
	if len(os.Args) != 2 || os.Args[1] != VersionFlag {
		return
	}
	name := filepath.Base(os.Args[0])
	info, err := impl.Info(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	fmt.Printf("%s %s\n", name, info.GetVersion())
	os.Exit(0)
}

// pluginGCPercent is the garbage collector's target for plugin processes
// unless GOGC says otherwise: plugins hold little live data (a few
// hundred bytes per VM whose console they follow), and a host runs
// several of them next to petreld, so a tighter heap matters more than
// the collector's CPU time.
const pluginGCPercent = 50

// releaseTextAfter is when a plugin gives back the pages of its binary
// it mapped while starting (textpages): past the handshake and
// petreld's first calls.
const releaseTextAfter = 10 * time.Second

// startPlugin does what every plugin process does first: tighten the
// heap, give back its start-up text pages once started, and exit with
// its parent.
func startPlugin() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(pluginGCPercent)
	}
	textpages.ReleaseAfter(releaseTextAfter)
	go exitWithParent(os.Getppid(), time.Second)
}

// exitWithParent ends the process once its parent changes (the parent died
// and the process was re-parented). It runs for the life of the process.
func exitWithParent(parent int, every time.Duration) {
	for range time.Tick(every) {
		if os.Getppid() != parent {
			os.Exit(0)
		}
	}
}

// ClientConfig returns the go-plugin client configuration petreld uses to
// launch the plugin binary at path. The plugin gets SIGKILL if petreld's
// launching thread dies, as a second line of defence after exitWithParent.
func ClientConfig(path string, sets map[int]plugin.PluginSet, logger hclog.Logger) *plugin.ClientConfig {
	cmd := exec.Command(path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return &plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: sets,
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		StartTimeout:     20 * time.Second,
	}
}
