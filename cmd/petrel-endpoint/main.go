// Command petrel-endpoint lets a host be managed over the network: it
// accepts the petrel CLI's mutual-TLS connections, authorizes each
// request by the caller's certificate chain and forwards it to petreld's
// socket for remote requests, where petreld checks the chain again and
// serves nothing without one.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/core/endpoint"
)

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

func main() { os.Exit(run(os.Args[1:])) }

const usage = `Usage: petrel-endpoint --ca FILE --cert FILE --key FILE [flags]

petrel-endpoint is the network side of Petrel's remote management. It
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
second of a certificate of their chain being revoked or expiring.

Flags:
`

func run(args []string) int {
	fs := flag.NewFlagSet("petrel-endpoint", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	listen := fs.String("listen", endpoint.DefaultListen, "TCP address to listen on (Albatross's port by default), or \"systemd\" for the socket systemd passes (petrel-endpoint.socket)")
	socket := fs.String("socket", endpoint.DefaultSocket, "petreld's socket for forwarded requests (<run-dir>/petreld-remote.sock)")
	caFile := fs.String("ca", "", "root CA certificate that client chains must lead to (ca.pem of 'petrel ca init')")
	certFile := fs.String("cert", "", "the endpoint's certificate chain (server.pem of 'petrel ca init')")
	keyFile := fs.String("key", "", "the endpoint's private key (server.key of 'petrel ca init')")
	revFile := fs.String("revocations", "", "revocation list kept with 'petrel ca revoke' (revoked.json of 'petrel ca init'); without it nothing can be revoked")
	userName := fs.String("user", "", "after binding, run as this user (name or uid) and its primary group")
	allowRoot := fs.Bool("allow-root", false, "keep running as root when --user is not given or names root (uid or gid 0); not recommended")
	logLevel := fs.String("log-level", "info", "trace, debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Printf("petrel-endpoint %s\n", version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "petrel-endpoint: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *caFile == "" || *certFile == "" || *keyFile == "" {
		fmt.Fprintln(os.Stderr, "petrel-endpoint: --ca, --cert and --key are required (see --help)")
		return 2
	}
	if os.Geteuid() == 0 && *userName == "" && !*allowRoot {
		fmt.Fprintln(os.Stderr, "petrel-endpoint: refusing to run as root: give --user NAME to drop privileges after binding, or --allow-root to run as root anyway")
		return 2
	}
	var uid, gid int
	if *userName != "" {
		var err error
		if uid, gid, err = lookupUser(*userName); err != nil {
			fmt.Fprintf(os.Stderr, "petrel-endpoint: --user: %v\n", err)
			return 2
		}
		if err := checkUnprivileged(*userName, uid, gid, *allowRoot); err != nil {
			fmt.Fprintf(os.Stderr, "petrel-endpoint: %v\n", err)
			return 2
		}
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "petrel-endpoint", Level: hclog.LevelFromString(*logLevel), Output: os.Stderr})
	srv, err := endpoint.New(endpoint.Options{
		Listen: *listen, Socket: *socket, CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile,
		RevocationFile: *revFile, Logger: log,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "petrel-endpoint: %v\n", err)
		return 1
	}
	defer srv.Close()
	if *userName != "" {
		if err := dropPrivileges(uid, gid); err != nil {
			fmt.Fprintf(os.Stderr, "petrel-endpoint: %v\n", err)
			return 1
		}
		if uid == 0 || gid == 0 {
			log.Warn("running with root's privileges (--allow-root)", "user", *userName, "uid", uid, "gid", gid)
		} else {
			log.Info("running unprivileged", "user", *userName, "uid", uid, "gid", gid)
		}
	} else if os.Geteuid() == 0 {
		log.Warn("running as root (--allow-root)")
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "petrel-endpoint: %v\n", err)
			return 1
		}
	case <-sigs:
		srv.Close()
		<-done
	}
	return 0
}

// lookupUser resolves a user name or numeric uid to uid and primary gid.
func lookupUser(s string) (int, int, error) {
	u, err := user.Lookup(s)
	if err != nil {
		if _, numErr := strconv.Atoi(s); numErr != nil {
			return 0, 0, err
		}
		if u, err = user.LookupId(s); err != nil {
			return 0, 0, err
		}
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s: uid %q: %w", s, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s: gid %q: %w", s, u.Gid, err)
	}
	return uid, gid, nil
}

// checkUnprivileged refuses a --user that would keep root's privileges:
// uid 0 (root, or any alias of it) is root itself, and gid 0 keeps the
// group that owns most of the system's files. Dropping to either would
// leave a network-facing process as powerful as before while its log
// says otherwise; allowRoot (--allow-root) accepts it knowingly.
func checkUnprivileged(userName string, uid, gid int, allowRoot bool) error {
	if allowRoot || (uid != 0 && gid != 0) {
		return nil
	}
	what := fmt.Sprintf("uid %d", uid)
	if uid != 0 {
		what = fmt.Sprintf("primary group gid %d", gid)
	}
	return fmt.Errorf("--user %s: refusing to run with root's privileges (%s): give an unprivileged user, or --allow-root to run as root anyway", userName, what)
}

// dropPrivileges switches every thread to uid and gid (Go 1.16 and later
// apply setuid and setgid process-wide on Linux), clearing supplementary
// groups first, and checks that root cannot be regained.
func dropPrivileges(uid, gid int) error {
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid %d: %w", uid, err)
	}
	if uid != 0 && syscall.Setuid(0) == nil {
		return errors.New("privileges could be regained after dropping them")
	}
	return nil
}
