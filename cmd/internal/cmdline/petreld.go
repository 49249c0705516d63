package cmdline

import "github.com/spf13/cobra"

// PetreldOptions are petreld's command-line settings.
type PetreldOptions struct {
	// Config is the HCL file read over the embedded defaults.
	Config string
	// DataDir, RunDir and PluginDir override the file's directories.
	DataDir, RunDir, PluginDir string
	// LogLevel is hclog's level name.
	LogLevel string
	// PrintDefaults prints the embedded configuration instead of running.
	PrintDefaults bool
	// Version prints the version instead of running.
	Version bool
}

const petreldHelp = `petreld runs and supervises unikernels. It reads the embedded defaults
(print them with --print-defaults), then FILE, then the flags below, and
serves the petrel CLI on <run-dir>/petreld.sock and petrel-endpoint on
<run-dir>/petreld-remote.sock (requests with a certificate chain only).
Stopping petreld leaves VMs running; the next petreld reattaches to them.`

// Petreld is petreld's command: its flags, and run called with them.
func Petreld(run func(PetreldOptions) error) *cobra.Command {
	var o PetreldOptions
	cmd := newCommand("petreld [--config FILE] [flags]", petreldHelp)
	cmd.Example = "  petreld --config /etc/petrel/petreld.hcl\n  petreld --data-dir /srv/petrel --run-dir /run/petrel-2 --log-level debug\n  petreld --print-defaults > petreld.hcl"
	f := cmd.Flags()
	f.StringVar(&o.Config, "config", "", "HCL configuration `FILE`")
	f.StringVar(&o.DataDir, "data-dir", "", "state directory (default /var/lib/petrel)")
	f.StringVar(&o.RunDir, "run-dir", "", "runtime directory for the socket and VM files (default /run/petrel)")
	f.StringVar(&o.PluginDir, "plugin-dir", "", "plugin directory (default: beside petreld, then /usr/libexec/petrel)")
	f.StringVar(&o.LogLevel, "log-level", "info", "trace, debug, info, warn or error")
	f.BoolVar(&o.PrintDefaults, "print-defaults", false, "print the embedded default configuration and exit")
	f.BoolVar(&o.Version, "version", false, "print the version and exit")
	cmd.RunE = func(*cobra.Command, []string) error { return run(o) }
	return cmd
}
