// Command petreld is Petrel's daemon: it owns VM lifecycle, the state
// store and the plugins, and serves the daemon API on a unix socket.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/cmd/internal/cmdline"
	"github.com/petrel-vmm/petrel/core/config"
	"github.com/petrel-vmm/petrel/core/daemon"
	"github.com/petrel-vmm/petrel/sdk/textpages"
)

// gcPercent is petreld's garbage-collector target unless GOGC says
// otherwise: petreld's heap is mostly per-VM state that lives as long as
// the VM (about 30 MB at 1000 VMs), so the default target of 100 would
// let as much again of garbage accumulate; 50 costs a little more
// collector CPU for a third less heap at that scale.
const gcPercent = 50

// releaseTextAfter is when petreld gives back the pages of its binary it
// mapped while starting (sdk/textpages).
const releaseTextAfter = 10 * time.Second

func main() {
	os.Exit(cmdline.Execute(cmdline.Petreld(run), os.Args[1:], os.Stdout, os.Stderr))
}

// run is petreld with its command-line settings: it prints what was
// asked for, or serves until SIGINT or SIGTERM.
func run(o cmdline.PetreldOptions) error {
	if o.PrintDefaults {
		fmt.Print(config.Defaults)
		return nil
	}
	if o.Version {
		fmt.Printf("petreld %s\n", daemon.Version)
		return nil
	}
	cfg, err := config.Load(o.Config)
	if err != nil {
		return cmdline.UsageError{Err: err}
	}
	if o.DataDir != "" {
		cfg.DataDir = o.DataDir
	}
	if o.RunDir != "" {
		cfg.RunDir = o.RunDir
	}
	if o.PluginDir != "" {
		cfg.PluginDir = o.PluginDir
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "petreld", Level: hclog.LevelFromString(o.LogLevel), Output: os.Stderr})
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	d, err := daemon.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	// Recovery and the plugins' start are done: what start-up alone used
	// of petreld's binary need not stay mapped.
	textpages.ReleaseAfter(releaseTextAfter)
	errc := make(chan error, 1)
	go func() { errc <- d.Serve() }()
	select {
	case <-ctx.Done():
		log.Info("shutting down; VMs keep running")
		d.Close()
		<-errc
		return nil
	case err := <-errc:
		d.Close()
		return err
	}
}
