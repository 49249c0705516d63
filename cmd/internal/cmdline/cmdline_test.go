package cmdline

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// execute runs a daemon's command and returns its exit status and
// output.
func execute(cmd *cobra.Command, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Execute(cmd, args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestDaemonsTakePetrelsFlagStyle: petreld and petrel-endpoint take
// --flags, print help on standard output and exit 0, and refuse mistakes
// with exit status 2 and a pointer to --help.
func TestDaemonsTakePetrelsFlagStyle(t *testing.T) {
	ran := false
	never := func() { ran = true }
	commands := map[string]func() *cobra.Command{
		"petreld":         func() *cobra.Command { return Petreld(func(PetreldOptions) error { never(); return nil }) },
		"petrel-endpoint": func() *cobra.Command { return Endpoint(func(EndpointOptions) error { never(); return nil }) },
	}
	for name, mk := range commands {
		for _, help := range []string{"--help", "-h"} {
			code, out, errText := execute(mk(), help)
			if code != ExitOK || !strings.Contains(out, "Usage:\n  "+name) || !strings.Contains(out, "--log-level") || errText != "" {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q", name, help, code, out, errText)
			}
		}
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"--no-such-flag"}, name + ": unknown flag: --no-such-flag (see '" + name + " --help')"},
			{[]string{"-log-level", "debug"}, name + ": -log-level: flags take two dashes: --log-level"},
			{[]string{"-log-level=debug"}, "flags take two dashes: --log-level"},
			{[]string{"serve"}, name + `: unexpected argument "serve"`},
			{[]string{"--log-level"}, "flag needs an argument: --log-level"},
		} {
			code, out, errText := execute(mk(), c.args...)
			if code != ExitUsage || !strings.Contains(errText, c.want) || out != "" {
				t.Errorf("%s %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", name, c.args, code, out, errText, c.want)
			}
		}
	}
	if code, _, errText := execute(commands["petrel-endpoint"](), "--ca", "ca.pem"); code != ExitUsage || !strings.Contains(errText, "--ca, --cert and --key are required") {
		t.Errorf("petrel-endpoint without --cert and --key: exit %d %q", code, errText)
	}
	if ran {
		t.Error("a daemon ran despite a mistake on its command line")
	}
}

// TestDaemonOptions checks that the flags reach the daemons' mains, and
// how their errors become exit statuses.
func TestDaemonOptions(t *testing.T) {
	var got PetreldOptions
	code, _, _ := execute(Petreld(func(o PetreldOptions) error { got = o; return nil }),
		"--config", "/etc/petrel/petreld.hcl", "--data-dir", "/srv/d", "--run-dir=/run/x", "--plugin-dir", "/p", "--log-level", "debug")
	want := PetreldOptions{Config: "/etc/petrel/petreld.hcl", DataDir: "/srv/d", RunDir: "/run/x", PluginDir: "/p", LogLevel: "debug"}
	if code != ExitOK || got != want {
		t.Errorf("petreld options: exit %d, %+v; want %+v", code, got, want)
	}
	var ep EndpointOptions
	code, _, _ = execute(Endpoint(func(o EndpointOptions) error { ep = o; return nil }),
		"--ca", "ca.pem", "--cert", "server.pem", "--key", "server.key", "--listen", "systemd", "--user", "nobody", "--revocations", "r.json")
	if code != ExitOK || ep.CA != "ca.pem" || ep.Cert != "server.pem" || ep.Key != "server.key" || ep.Listen != "systemd" ||
		ep.User != "nobody" || ep.Revocations != "r.json" || ep.LogLevel != "info" || ep.Socket == "" {
		t.Errorf("petrel-endpoint options: exit %d, %+v", code, ep)
	}
	code, _, errText := execute(Petreld(func(PetreldOptions) error { return Usagef("read config: %w", errors.New("bad")) }))
	if code != ExitUsage || errText != "petreld: read config: bad\n" {
		t.Errorf("usage error from run: exit %d %q", code, errText)
	}
	code, _, errText = execute(Petreld(func(PetreldOptions) error { return errors.New("socket in use") }))
	if code != ExitError || errText != "petreld: socket in use\n" {
		t.Errorf("error from run: exit %d %q", code, errText)
	}
}
