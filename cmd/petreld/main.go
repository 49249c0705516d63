// Command petreld is Petrel's daemon: it owns VM lifecycle, the state
// store and the plugins, and serves the daemon API on a unix socket.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/core/config"
	"github.com/petrel-vmm/petrel/core/daemon"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("petreld", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: petreld [--config FILE] [flags]

petreld runs and supervises unikernels. It reads the embedded defaults
(print them with --print-defaults), then FILE, then the flags below, and
serves the petrel CLI on <run-dir>/petreld.sock and petrel-endpoint on
<run-dir>/petreld-remote.sock (requests with a certificate chain only).
Stopping petreld leaves VMs running; the next petreld reattaches to them.

Flags:
`)
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "", "HCL configuration file")
	dataDir := fs.String("data-dir", "", "state directory (default /var/lib/petrel)")
	runDir := fs.String("run-dir", "", "runtime directory for the socket and VM files (default /run/petrel)")
	pluginDir := fs.String("plugin-dir", "", "plugin directory (default: beside petreld, then /usr/libexec/petrel)")
	logLevel := fs.String("log-level", "info", "trace, debug, info, warn or error")
	printDefaults := fs.Bool("print-defaults", false, "print the embedded default configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "petreld: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *printDefaults {
		fmt.Print(config.Defaults)
		return 0
	}
	if *showVersion {
		fmt.Printf("petreld %s\n", daemon.Version)
		return 0
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "petreld: %v\n", err)
		return 2
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	if *runDir != "" {
		cfg.RunDir = *runDir
	}
	if *pluginDir != "" {
		cfg.PluginDir = *pluginDir
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "petreld", Level: hclog.LevelFromString(*logLevel), Output: os.Stderr})
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	d, err := daemon.Start(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "petreld: %v\n", err)
		return 1
	}
	errc := make(chan error, 1)
	go func() { errc <- d.Serve() }()
	select {
	case <-ctx.Done():
		log.Info("shutting down; VMs keep running")
		d.Close()
		<-errc
		return 0
	case err := <-errc:
		d.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "petreld: %v\n", err)
			return 1
		}
		return 0
	}
}
