package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
)

// errRemoteOff is the refusal of every remote request while ca_file is
// not set: without a trust anchor no chain can be checked.
var errRemoteOff = status.Error(codes.Unauthenticated, "remote management is not configured: set ca_file (and revocation_file) in petreld's configuration")

// errSavePolicy marks a policy that fits but could not be persisted.
var errSavePolicy = errors.New("save policy")

// trust is petreld's view of remote management: the root CAs from
// ca_file and the revocation list from revocation_file. The list is
// re-read when the file changes, which is checked on each remote request
// (one stat), so a revocation applies to the very next request without a
// background goroutine whose life would have to follow the daemon's.
type trust struct {
	roots   []*x509.Certificate
	revPath string
	log     hclog.Logger

	mu      sync.Mutex
	revoked *pki.RevocationList
	stamp   revStamp
	failing bool
}

// revStamp is what changes when the revocation file does.
type revStamp struct {
	mtime time.Time
	size  int64
	ino   uint64
}

func statRevocations(path string) (revStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return revStamp{}, err
	}
	s := revStamp{mtime: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	return s, nil
}

// loadTrust reads ca_file and revocation_file. Both empty: remote
// management is off (nil, nil). A configured file that cannot be read is
// an error, so petreld does not start trusting less or revoking less
// than its owner wrote.
func loadTrust(caFile, revFile string, log hclog.Logger) (*trust, error) {
	if caFile == "" {
		if revFile != "" {
			return nil, errors.New("revocation_file is set but ca_file is not; set both to enable remote management")
		}
		return nil, nil
	}
	roots, err := pki.ReadCertsFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	t := &trust{roots: roots, revPath: revFile, log: log}
	if revFile == "" {
		log.Warn("remote management enabled without a revocation_file: certificates cannot be revoked", "ca_file", caFile)
		return t, nil
	}
	if t.stamp, err = statRevocations(revFile); err != nil {
		return nil, fmt.Errorf("revocation_file: %w", err)
	}
	if t.revoked, err = pki.LoadRevocationList(revFile); err != nil {
		return nil, fmt.Errorf("revocation_file: %w", err)
	}
	return t, nil
}

// verifier returns a Verifier over the current revocation list,
// reloading it first if the file changed. An unreadable or invalid file
// keeps the last good list (and is logged once), as pki.Watcher does.
func (t *trust) verifier() *pki.Verifier {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.revPath != "" {
		s, err := statRevocations(t.revPath)
		if err == nil && s != t.stamp {
			var l *pki.RevocationList
			if l, err = pki.LoadRevocationList(t.revPath); err == nil {
				t.revoked, t.stamp = l, s
			}
		}
		if err != nil && !t.failing {
			t.log.Error("revocation list unreadable; keeping the last good one", "file", t.revPath, "error", err)
		}
		t.failing = err != nil
	}
	return &pki.Verifier{Roots: t.roots, Revoked: t.revoked}
}

// errNoChain refuses a request on the endpoint's socket that carries no
// certificate chain: there, petreld acts only for a caller it can verify.
var errNoChain = status.Errorf(codes.Unauthenticated, "%s serves only requests forwarded by petrel-endpoint with the caller's certificate chain; local administrators use %s", RemoteSocketName, SocketName)

// identify returns the verified identity of a request carrying a chain,
// nil for a request without one (a local administrator's, on the
// administrators' socket).
func (t *trust) identify(ctx context.Context) (*pki.Identity, error) {
	chain, err := authz.ChainFromMetadata(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "client chain: %v", err)
	}
	if chain == nil {
		return nil, nil
	}
	if t == nil {
		return nil, errRemoteOff
	}
	id, err := t.verifier().Verify(chain)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

// recheck tells whether the identity of an open stream still holds,
// against the revocation list as it is now (reloaded when the file
// changed).
func (t *trust) recheck(id *pki.Identity) error {
	if t == nil {
		return errRemoteOff
	}
	return t.verifier().Recheck(id)
}

// identifyRemote is identify for the endpoint's socket, where a request
// without a chain is refused rather than trusted.
func (t *trust) identifyRemote(ctx context.Context) (*pki.Identity, error) {
	id, err := t.identify(ctx)
	if err == nil && id == nil {
		return nil, errNoChain
	}
	return id, err
}

// interceptors are the gRPC interceptors of one socket.
type interceptors struct {
	unary  grpc.UnaryServerInterceptor
	stream grpc.StreamServerInterceptor
}

// authInterceptors returns the interceptors that apply remote
// authorization (package authz) on the administrators' socket and on the
// endpoint's, using ca_file and revocation_file from the configuration.
// On the administrators' socket, requests without a chain are local and
// pass unchanged (its file permissions are the access control), and a
// chain only restricts; on the endpoint's socket every request needs a
// chain petreld verifies itself.
func (d *Daemon) authInterceptors() (admin, remote interceptors, err error) {
	t, err := loadTrust(d.cfg.CAFile, d.cfg.RevocationFile, d.log.Named("auth"))
	if err != nil {
		return admin, remote, err
	}
	if t != nil {
		d.log.Info("remote management enabled", "ca_file", d.cfg.CAFile, "revocation_file", d.cfg.RevocationFile)
	}
	admin.unary, admin.stream = authz.Interceptors(t.identify, d.installPolicies, t.recheck)
	remote.unary, remote.stream = authz.Interceptors(t.identifyRemote, d.installPolicies, t.recheck)
	return admin, remote, nil
}

// installPolicies records the policies of a caller's chain in the
// daemon's policy tree before a deploy, as Albatross does, so that the
// deploy's admission (which checks every ancestor, with the usage of all
// VMs under it) enforces them. Each sub-CA's policy is recorded at its
// domain path as that path's certificate policy, apart from any policy
// the owner or an ancestor set there: the effective policy is the meet
// of both, so a certificate never loosens what was set locally (and a
// re-signed certificate replaces only the certificate's record). The
// root certificate's policy, if any, is not recorded: the root of the
// tree is what the host has.
func (d *Daemon) installPolicies(_ context.Context, id *pki.Identity) error {
	d.policyMu.Lock()
	defer d.policyMu.Unlock()
	for _, e := range id.Policies {
		if e.Path.IsRoot() {
			continue
		}
		if _, cur := d.policies.Records(e.Path); cur != nil && cur.Equal(e.Policy) {
			continue
		}
		if err := d.setCertificatePolicyLocked(e.Path, e.Policy); err != nil {
			if errors.Is(err, errSavePolicy) {
				return status.Error(codes.Internal, err.Error())
			}
			return status.Errorf(codes.PermissionDenied, "the policy of %q in the certificate chain cannot be recorded: %v", e.Path, err)
		}
		d.log.Info("recorded policy from a certificate chain", "path", e.Path.String(), "policy", e.Policy.String())
	}
	return nil
}

// setCertificatePolicyLocked records and persists the certificate policy
// of path, undoing the record when it cannot be saved; d.policyMu must be
// held.
func (d *Daemon) setCertificatePolicyLocked(path name.Path, p policy.Policy) error {
	_, old := d.policies.Records(path)
	if err := d.policies.SetCertificate(path, p); err != nil {
		return err
	}
	if err := d.store.Put(policy.CertCollection, path.FileKey(), policy.Entry{Path: path, Policy: p}); err != nil {
		if old != nil {
			_ = d.policies.SetCertificate(path, *old)
		} else {
			d.policies.RemoveCertificate(path)
		}
		return fmt.Errorf("%w of %q: %v", errSavePolicy, path, err)
	}
	return nil
}
