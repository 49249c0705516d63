// Command petrel-endpoint lets a host be managed over the network: it
// accepts the petrel CLI's mutual-TLS connections, authorizes each
// request by the caller's certificate chain and forwards it to petreld's
// socket for remote requests, where petreld checks the chain again and
// serves nothing without one.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/cmd/internal/cmdline"
	"github.com/petrel-vmm/petrel/core/endpoint"
)

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

func main() {
	os.Exit(cmdline.Execute(cmdline.Endpoint(run), os.Args[1:], os.Stdout, os.Stderr))
}

// run is petrel-endpoint with its command-line settings: it binds,
// drops its privileges and serves until SIGINT or SIGTERM.
func run(o cmdline.EndpointOptions) error {
	if o.Version {
		fmt.Printf("petrel-endpoint %s\n", version)
		return nil
	}
	if os.Geteuid() == 0 && o.User == "" && !o.AllowRoot {
		return cmdline.Usagef("refusing to run as root: give --user NAME to drop privileges after binding, or --allow-root to run as root anyway")
	}
	var uid, gid int
	if o.User != "" {
		var err error
		if uid, gid, err = lookupUser(o.User); err != nil {
			return cmdline.Usagef("--user: %w", err)
		}
		if err := checkUnprivileged(o.User, uid, gid, o.AllowRoot); err != nil {
			return cmdline.UsageError{Err: err}
		}
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "petrel-endpoint", Level: hclog.LevelFromString(o.LogLevel), Output: os.Stderr})
	srv, err := endpoint.New(endpoint.Options{
		Listen: o.Listen, Socket: o.Socket, CAFile: o.CA, CertFile: o.Cert, KeyFile: o.Key,
		RevocationFile: o.Revocations, Logger: log,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	if o.User != "" {
		if err := dropPrivileges(uid, gid); err != nil {
			return err
		}
		if uid == 0 || gid == 0 {
			log.Warn("running with root's privileges (--allow-root)", "user", o.User, "uid", uid, "gid", gid)
		} else {
			log.Info("running unprivileged", "user", o.User, "uid", uid, "gid", gid)
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
		return err
	case <-sigs:
		srv.Close()
		<-done
	}
	return nil
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
