package main

import (
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/petrel-vmm/petrel/cmd/petrel/ui"
	"github.com/petrel-vmm/petrel/sdk/client"
)

// defaultHostList is where `petrel ui` keeps its host list.
func defaultHostList() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "petrel", "ui-hosts.json")
}

func (a *app) uiCmd() *cobra.Command {
	var listen, hostList, tokenFile string
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve a web console for your Petrel hosts on this machine",
		Long: `Serve a web console on this machine, on loopback by default: a random port
and a one-time token in the URL it prints (open it in a browser; the token
becomes a cookie, and every request without it is refused). Stop it with
Ctrl-C.

The console talks to your Petrel hosts exactly as petrel does: the local
petreld on its socket, or remote hosts through petrel-endpoint with your
own sub-CA and key (a fresh short-lived leaf per connection; the key never
leaves this machine). It needs no accounts and adds no authority: a page
can do exactly what your certificates, or the socket's permissions, allow.

In it: the fleet (every host's VMs by state, policy use as bars, plugin
health, recent events); a VM table with filters; a VM's page with its
settings, live console (follow, search, download), CPU, memory and network
charts of the last hour, restart, update and destroy; a deploy form (image
upload with progress, memory with units, arguments, networks from the
host's bridges, block devices, restart rules), checked as petrel create
checks its command line; block devices (create, upload, download,
destroy); the policy tree with use against limits, signing a sub-tenant's
request into a sub-CA (never beyond your own policy) and revoking.

Hosts are listed in a small JSON file (--hosts), which the console's
Hosts page edits. Without one, the list starts with the host that the
global flags name: the local socket (--socket, $` + client.SocketEnv + `), or
--destination with --ca, --ca-key and --server-ca. Each host is
  {"name": "local", "socket": "/run/petrel/petreld.sock"}
or
  {"name": "prod", "destination": "host.example.org", "ca": "alice.pem",
   "ca_key": "alice.key", "server_ca": "ca.pem"}
with optional "server_name", and "revocations" (the owner's revoked.json)
to revoke certificates from the console. A host with "ca" and "ca_key"
signs sub-tenants' requests.

--listen chooses the address; anything but loopback lets other machines
reach the page (the token still guards it, over plain HTTP).`,
		Example: "  petrel ui\n  petrel ui --listen 127.0.0.1:8080\n  petrel --destination host.example.org --ca alice.pem --ca-key alice.key --server-ca ca.pem ui",
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			seed := []ui.HostConfig{{Name: "local", Socket: client.SocketPath(a.socket)}}
			if r := a.remote; r.destination != "" {
				host, _, err := net.SplitHostPort(r.destination)
				if err != nil {
					host = r.destination
				}
				seed = []ui.HostConfig{{Name: uiHostName(host), Destination: r.destination, CA: r.caFile, CAKey: r.caKeyFile,
					ServerCA: r.serverCA, ServerName: r.serverName}}
			}
			logger := log.New(a.errw, "petrel ui: ", log.LstdFlags)
			srv, err := ui.New(ui.Options{ConfigPath: hostList, Logf: logger.Printf}, seed)
			if err != nil {
				return usageError{err}
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				srv.Close()
				return usageError{fmt.Errorf("--listen %s: %w", listen, err)}
			}
			url := fmt.Sprintf("http://%s/?token=%s", l.Addr(), srv.Token())
			if tokenFile != "" {
				if err := os.WriteFile(tokenFile, []byte(url+"\n"), 0o600); err != nil {
					l.Close()
					srv.Close()
					return fmt.Errorf("--url-file: %w", err)
				}
			}
			fmt.Fprintf(a.out, "petrel ui: open %s\n", url)
			fmt.Fprintf(a.out, "petrel ui: hosts listed in %s; Ctrl-C stops\n", hostList)
			ctx, cancel := signalContext()
			defer cancel()
			return srv.Serve(ctx, l)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:0", "`ADDR:PORT` to serve on (port 0: a random one)")
	f.StringVar(&hostList, "hosts", defaultHostList(), "`FILE` with the host list (JSON; created when the console edits it)")
	f.StringVar(&tokenFile, "url-file", "", "also write the URL, with its token, to `FILE` (mode 0600), for scripts")
	return cmd
}

// uiHostName makes a host list name from a host name: lower-cased
// labels' characters, anything else as '-'.
func uiHostName(h string) string {
	out := []byte{}
	for _, c := range []byte(h) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-':
			out = append(out, c)
		case c >= 'A' && c <= 'Z':
			out = append(out, c+'a'-'A')
		default:
			out = append(out, '-')
		}
	}
	if len(out) == 0 || out[0] == '-' || len(out) > 63 {
		return "remote"
	}
	return string(out)
}
