package cmdline

import (
	"github.com/spf13/cobra"

	"github.com/petrel-vmm/petrel/core/endpoint"
)

// EndpointOptions are petrel-endpoint's command-line settings.
type EndpointOptions struct {
	// Listen is the TCP address, or "systemd" for socket activation.
	Listen string
	// Socket is petreld's socket for forwarded requests.
	Socket string
	// CA, Cert and Key are the root CA client chains must lead to and
	// the endpoint's own certificate chain and key.
	CA, Cert, Key string
	// Revocations is the revocation list file, or "".
	Revocations string
	// User is who to run as after binding (name or uid), or "".
	User string
	// AllowRoot keeps root's privileges knowingly.
	AllowRoot bool
	// LogLevel is hclog's level name.
	LogLevel string
	// Version prints the version instead of running.
	Version bool
}

const endpointHelp = `petrel-endpoint is the network side of Petrel's remote management. It
listens for the petrel CLI over TLS 1.3 with mutual X.509 authentication:
a client's certificate chain must lead to the root CA given with --ca,
be at most 9 certificates long (root included), name valid labels, nest
its policies, and have no certificate on the revocation list. The chain's
sub-CA names form the caller's domain (root -> "alice" -> leaf acts on
alice:...); a leaf carrying a command may run that command only.
Allowed requests are forwarded to petreld with the chain, and petreld
verifies it again against its own ca_file before acting.

Set up once, on the host:
  petrel ca init /etc/petrel/ca --host host.example.org
  # petreld's configuration:  ca_file = "/etc/petrel/ca/ca.pem"
  #                           revocation_file = "/etc/petrel/ca/revoked.json"
  #                           remote_socket_mode = "0660"
  #                           remote_socket_group = "petrel-endpoint"
  petrel-endpoint --ca /etc/petrel/ca/ca.pem \
      --cert /etc/petrel/ca/server.pem --key /etc/petrel/ca/server.key \
      --revocations /etc/petrel/ca/revoked.json --user petrel-endpoint

The endpoint forwards to petreld's socket for remote requests,
<run-dir>/petreld-remote.sock, where petreld serves a request only with a
certificate chain it verifies itself: the endpoint has no rights of its
own, only its callers'. Nor does it need privileges: it reads its key and
binds its port, then runs as --user, which must be able to open that
socket and should be its only client (remote_socket_group above), and
which must not be able to open the administrators' socket, petreld.sock.
It refuses to keep running as root, or to switch to a --user with uid or
gid 0, unless --allow-root is given. The revocation list is re-read
within a second of every change ('petrel ca revoke'), no restart needed,
and open streams (events, console and stats followed) end within a
second of a certificate of their chain being revoked or expiring.`

// Endpoint is petrel-endpoint's command: its flags, and run called with
// them once --ca, --cert and --key are given (or --version).
func Endpoint(run func(EndpointOptions) error) *cobra.Command {
	var o EndpointOptions
	cmd := newCommand("petrel-endpoint --ca FILE --cert FILE --key FILE [flags]", endpointHelp)
	f := cmd.Flags()
	f.StringVar(&o.Listen, "listen", endpoint.DefaultListen, "TCP address to listen on (Albatross's port by default), or \"systemd\" for the socket systemd passes (petrel-endpoint.socket)")
	f.StringVar(&o.Socket, "socket", endpoint.DefaultSocket, "petreld's socket for forwarded requests (<run-dir>/petreld-remote.sock)")
	f.StringVar(&o.CA, "ca", "", "root CA certificate that client chains must lead to (ca.pem of 'petrel ca init')")
	f.StringVar(&o.Cert, "cert", "", "the endpoint's certificate chain (server.pem of 'petrel ca init')")
	f.StringVar(&o.Key, "key", "", "the endpoint's private key (server.key of 'petrel ca init')")
	f.StringVar(&o.Revocations, "revocations", "", "revocation list kept with 'petrel ca revoke' (revoked.json of 'petrel ca init'); without it nothing can be revoked")
	f.StringVar(&o.User, "user", "", "after binding, run as this user (name or uid) and its primary group")
	f.BoolVar(&o.AllowRoot, "allow-root", false, "keep running as root when --user is not given or names root (uid or gid 0); not recommended")
	f.StringVar(&o.LogLevel, "log-level", "info", "trace, debug, info, warn or error")
	f.BoolVar(&o.Version, "version", false, "print the version and exit")
	cmd.RunE = func(*cobra.Command, []string) error {
		if !o.Version && (o.CA == "" || o.Cert == "" || o.Key == "") {
			return Usagef("--ca, --cert and --key are required (see 'petrel-endpoint --help')")
		}
		return run(o)
	}
	return cmd
}
