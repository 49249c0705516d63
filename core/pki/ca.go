package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/policy"
)

// Default validity periods. Leaves are short-lived because they are made
// on the fly for each remote command and are not worth revoking; CAs
// live long because re-issuing them means re-issuing everything below.
const (
	// DefaultRootValidity is the root CA's lifetime: ten years.
	DefaultRootValidity = 10 * 365 * 24 * time.Hour
	// DefaultCAValidity is a sub-CA's lifetime: one year.
	DefaultCAValidity = 365 * 24 * time.Hour
	// DefaultServerValidity is the endpoint certificate's lifetime.
	DefaultServerValidity = 365 * 24 * time.Hour
	// DefaultLeafValidity is a client leaf's lifetime: long enough for
	// one command and its console or event stream to start.
	DefaultLeafValidity = 10 * time.Minute
	// Backdate is subtracted from NotBefore of every certificate issued,
	// so that a peer whose clock is slightly behind accepts a leaf made a
	// moment ago.
	Backdate = time.Minute
)

// Files InitCA writes into its directory.
const (
	// CAKeyFile holds the root CA's private key (mode 0600).
	CAKeyFile = "ca.key"
	// CACertFile holds the root CA's certificate, the file clients pass
	// as --server-ca and petreld trusts.
	CACertFile = "ca.pem"
	// ServerKeyFile holds the endpoint's private key (mode 0600).
	ServerKeyFile = "server.key"
	// ServerCertFile holds the endpoint's certificate chain.
	ServerCertFile = "server.pem"
	// RevokedFile is the revocation list (see RevocationList).
	RevokedFile = "revoked.json"
)

// CAOptions parameterises InitCA. The zero value makes an Ed25519 root
// named "petrel" without a policy and a server certificate for the
// loopback addresses.
type CAOptions struct {
	// CommonName names the root CA; it is not part of any domain.
	// Default "petrel".
	CommonName string
	// KeyKind and KeyBits choose the key type of the root and server keys
	// (see GenerateKey).
	KeyKind string
	KeyBits int
	// Policy, if set, is carried by the root certificate. Nil leaves the
	// root unlimited, so that each host it manages applies its own host
	// policy.
	Policy *policy.Policy
	// ServerNames are extra host names and IP addresses for the endpoint's
	// server certificate; "localhost", 127.0.0.1 and ::1 are always
	// included.
	ServerNames []string
	// Validity of the root certificate; 0 means DefaultRootValidity.
	Validity time.Duration
}

// InitCA creates a root CA and the endpoint's server certificate in dir
// (created with mode 0755 if missing): ca.key (0600), ca.pem,
// server.key (0600), server.pem (the server certificate followed by the
// root) and an empty revocation list revoked.json. The directory is
// searchable by everyone because petrel-endpoint, running as its own
// user, reads ca.pem and re-reads revoked.json there; both are public,
// and the keys are readable by root only. It refuses to run if any of
// these files exists, so an existing CA is never overwritten.
func InitCA(dir string, opts CAOptions) error {
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	if os.IsNotExist(statErr) {
		// Whatever the umask: the endpoint must be able to reach ca.pem.
		if err := os.Chmod(dir, 0o755); err != nil {
			return fmt.Errorf("init CA: %w", err)
		}
	}
	for _, f := range []string{CAKeyFile, CACertFile, ServerKeyFile, ServerCertFile, RevokedFile} {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("init CA: %s already exists; refusing to overwrite a CA", filepath.Join(dir, f))
		}
	}
	cn := opts.CommonName
	if cn == "" {
		cn = "petrel"
	}
	caKey, err := GenerateKey(opts.KeyKind, opts.KeyBits)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	root, err := NewRoot(cn, caKey, opts.Policy, opts.Validity)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	srvKey, err := GenerateKey(opts.KeyKind, opts.KeyBits)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, opts.ServerNames...)
	srv, err := IssueServer(root, caKey, srvKey.Public(), hosts, 0)
	if err != nil {
		return fmt.Errorf("init CA: %w", err)
	}
	var written []string
	steps := []struct {
		file  string
		write func(path string) error
	}{
		{CAKeyFile, func(p string) error { return WriteKeyFile(p, caKey) }},
		{CACertFile, func(p string) error { return WriteCertsFile(p, root) }},
		{ServerKeyFile, func(p string) error { return WriteKeyFile(p, srvKey) }},
		{ServerCertFile, func(p string) error { return WriteCertsFile(p, srv, root) }},
		{RevokedFile, func(p string) error { return (&RevocationList{}).Save(p) }},
	}
	for _, st := range steps {
		path := filepath.Join(dir, st.file)
		if err := st.write(path); err != nil {
			// Leave no half-made CA behind, so that InitCA can be rerun.
			for _, w := range written {
				_ = os.Remove(w)
			}
			return fmt.Errorf("init CA: %w", err)
		}
		written = append(written, path)
	}
	return nil
}

// NewRoot makes a self-signed root CA certificate for key, carrying p if
// it is not nil. validity 0 means DefaultRootValidity.
func NewRoot(cn string, key crypto.Signer, p *policy.Policy, validity time.Duration) (*x509.Certificate, error) {
	if cn == "" {
		return nil, errors.New("root CA: empty common name")
	}
	if err := CheckPublicKey(key.Public()); err != nil {
		return nil, fmt.Errorf("root CA: %w", err)
	}
	if validity <= 0 {
		validity = DefaultRootValidity
	}
	now := time.Now()
	tmpl, err := caTemplate(cn, p, now, now.Add(validity))
	if err != nil {
		return nil, fmt.Errorf("root CA: %w", err)
	}
	return create(tmpl, tmpl, key.Public(), key)
}

// SignPolicy issues a sub-CA certificate for the key and common name of
// csr, carrying p. It is refused if csr's signature or key is bad, if its
// common name is not a single valid label (it becomes one label of the
// delegate's domain), if it asks for a command, or if p is not within
// the signer's own policy when the signer carries one. validity 0 means
// DefaultCAValidity; the certificate never outlives the signer's.
func SignPolicy(csr *x509.CertificateRequest, signerCert *x509.Certificate, signerKey crypto.Signer, p policy.Policy, validity time.Duration) (*x509.Certificate, error) {
	if err := checkCSR(csr); err != nil {
		return nil, fmt.Errorf("sign policy: %w", err)
	}
	label, err := name.Root.Child(csr.Subject.CommonName)
	if err != nil {
		return nil, fmt.Errorf("sign policy: common name %q of the request is not a valid label: %w", csr.Subject.CommonName, err)
	}
	if cmd, err := CommandFromCSR(csr); err != nil || cmd != nil {
		return nil, fmt.Errorf("sign policy: the request for %q asks for a command, which only leaf certificates carry", label)
	}
	if err := checkSigner(signerCert); err != nil {
		return nil, fmt.Errorf("sign policy: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("sign policy for %q: %w", label, err)
	}
	sp, err := PolicyOf(signerCert)
	if err != nil {
		return nil, fmt.Errorf("sign policy: signer %q: %w", signerCert.Subject.CommonName, err)
	}
	if sp != nil {
		if err := p.Within(*sp); err != nil {
			return nil, fmt.Errorf("sign policy for %q: exceeds the signer %q's own policy: %w", label, signerCert.Subject.CommonName, err)
		}
	}
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	now := time.Now()
	tmpl, err := caTemplate(label.String(), &p, now, clampNotAfter(now.Add(validity), signerCert))
	if err != nil {
		return nil, fmt.Errorf("sign policy for %q: %w", label, err)
	}
	return create(tmpl, signerCert, csr.PublicKey, signerKey)
}

// IssueLeaf issues a short-lived client certificate for pub, named cn (a
// VM name or a path below the signer's domain), optionally carrying cmd.
// validity 0 means DefaultLeafValidity; the certificate never outlives
// the signer's.
func IssueLeaf(signerCert *x509.Certificate, signerKey crypto.Signer, pub crypto.PublicKey, cn string, cmd *Command, validity time.Duration) (*x509.Certificate, error) {
	if err := CheckPublicKey(pub); err != nil {
		return nil, fmt.Errorf("issue leaf: %w", err)
	}
	leafName, err := name.Parse(cn)
	if err != nil || leafName.IsRoot() {
		return nil, fmt.Errorf("issue leaf: common name %q is not a valid VM name or path", cn)
	}
	if err := checkSigner(signerCert); err != nil {
		return nil, fmt.Errorf("issue leaf: %w", err)
	}
	if validity <= 0 {
		validity = DefaultLeafValidity
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: leafName.String()},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              clampNotAfter(now.Add(validity), signerCert),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if cmd != nil {
		v, err := MarshalCommand(*cmd)
		if err != nil {
			return nil, fmt.Errorf("issue leaf %q: %w", leafName, err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: OIDCommand, Critical: true, Value: v}}
	}
	return create(tmpl, signerCert, pub, signerKey)
}

// IssueLeafFromCSR issues a leaf for a certificate request, as made by
// `petrel --csr`: the name and command come from the request.
func IssueLeafFromCSR(csr *x509.CertificateRequest, signerCert *x509.Certificate, signerKey crypto.Signer, validity time.Duration) (*x509.Certificate, error) {
	if err := checkCSR(csr); err != nil {
		return nil, fmt.Errorf("issue leaf: %w", err)
	}
	cmd, err := CommandFromCSR(csr)
	if err != nil {
		return nil, fmt.Errorf("issue leaf: %w", err)
	}
	return IssueLeaf(signerCert, signerKey, csr.PublicKey, csr.Subject.CommonName, cmd, validity)
}

// NewLeafChain makes a fresh key of keyKind ("" for Ed25519) and a leaf
// for it signed by the first certificate of signerChain, and returns the
// chain to present (the leaf followed by signerChain) with the new key.
// This is the CLI's one-step remote flow: the user's sub-CA key never
// leaves the user's machine and each command gets its own short-lived
// certificate.
func NewLeafChain(signerChain []*x509.Certificate, signerKey crypto.Signer, cn string, cmd *Command, keyKind string) ([]*x509.Certificate, crypto.Signer, error) {
	if len(signerChain) == 0 {
		return nil, nil, errors.New("new leaf: empty signer chain")
	}
	key, err := GenerateKey(keyKind, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("new leaf: %w", err)
	}
	leaf, err := IssueLeaf(signerChain[0], signerKey, key.Public(), cn, cmd, 0)
	if err != nil {
		return nil, nil, err
	}
	return append([]*x509.Certificate{leaf}, signerChain...), key, nil
}

// IssueServer issues the endpoint's server certificate for pub, valid for
// the given host names and IP addresses (the first names the
// certificate). validity 0 means DefaultServerValidity.
func IssueServer(signerCert *x509.Certificate, signerKey crypto.Signer, pub crypto.PublicKey, hosts []string, validity time.Duration) (*x509.Certificate, error) {
	if err := CheckPublicKey(pub); err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	if len(hosts) == 0 {
		return nil, errors.New("issue server certificate: no host names")
	}
	if err := checkSigner(signerCert); err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	if validity <= 0 {
		validity = DefaultServerValidity
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: hosts[0]},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              clampNotAfter(now.Add(validity), signerCert),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return create(tmpl, signerCert, pub, signerKey)
}

// CSR makes a DER certificate request for key named cn, carrying cmd if it
// is not nil. Encode it with EncodeCSR. A sub-CA request has a single
// label as cn and no command.
func CSR(key crypto.Signer, cn string, cmd *Command) ([]byte, error) {
	if err := CheckPublicKey(key.Public()); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	n, err := name.Parse(cn)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if n.IsRoot() {
		return nil, fmt.Errorf("certificate request: common name %q is not a valid name", cn)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: n.String()}}
	if cmd != nil {
		v, err := MarshalCommand(*cmd)
		if err != nil {
			return nil, fmt.Errorf("certificate request: %w", err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: OIDCommand, Critical: true, Value: v}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return der, nil
}

// CommandFromCSR returns the command a certificate request asks for, or
// nil if it asks for none.
func CommandFromCSR(csr *x509.CertificateRequest) (*Command, error) {
	var found *Command
	for _, e := range csr.Extensions {
		if !e.Id.Equal(OIDCommand) {
			continue
		}
		if found != nil {
			return nil, errors.New("certificate request carries two commands")
		}
		c, err := UnmarshalCommand(e.Value)
		if err != nil {
			return nil, err
		}
		found = &c
	}
	return found, nil
}

// checkCSR checks the self-signature and key of a request.
func checkCSR(csr *x509.CertificateRequest) error {
	if csr == nil {
		return errors.New("no certificate request")
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("certificate request signature: %w", err)
	}
	return CheckPublicKey(csr.PublicKey)
}

// checkSigner refuses to sign with a certificate that is not a CA or has
// expired, which would only produce certificates Verify refuses.
func checkSigner(c *x509.Certificate) error {
	if c == nil {
		return errors.New("no signer certificate")
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("signer %q is not a CA certificate", c.Subject.CommonName)
	}
	if time.Now().After(c.NotAfter) {
		return fmt.Errorf("signer %q expired at %s", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// caTemplate is the template of root and sub-CA certificates.
func caTemplate(cn string, p *policy.Policy, now, notAfter time.Time) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            -1,
	}
	if p != nil {
		v, err := MarshalPolicy(*p)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: OIDPolicy, Critical: true, Value: v}}
	}
	return tmpl, nil
}

// create fills in a random serial number and signs tmpl.
func create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return c, nil
}

// clampNotAfter keeps a certificate from outliving its issuer, which
// would make it unusable for the difference anyway.
func clampNotAfter(t time.Time, issuer *x509.Certificate) time.Time {
	if t.After(issuer.NotAfter) {
		return issuer.NotAfter
	}
	return t
}
