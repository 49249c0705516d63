package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/policy"
)

// DefaultMaxChain is the longest chain accepted, root and leaf included:
// deep enough for any real delegation, short enough that a hostile
// client cannot make the server check many signatures.
const DefaultMaxChain = 9

// ErrRevoked is wrapped by Verify's error when a certificate of the chain
// is on the revocation list.
var ErrRevoked = errors.New("certificate revoked")

// Verifier checks client certificate chains with Petrel's semantics:
// standard X.509 path validation to one of Roots, plus policies nesting
// down the chain, names that are valid labels, accepted key types,
// revocation and a bounded length. The zero value of each optional field
// picks the default; a Verifier must not be modified while in use.
type Verifier struct {
	// Roots are the trusted root CAs. They are certificates rather than
	// an x509.CertPool because Petrel's critical extensions must be
	// marked as handled on every certificate of a chain, roots included,
	// before crypto/x509 will validate it.
	Roots []*x509.Certificate
	// Revoked, if not nil, lists revoked certificates.
	Revoked *RevocationList
	// Now returns the time at which validity is checked; nil means
	// time.Now.
	Now func() time.Time
	// MaxChain bounds the chain length, root included; 0 means
	// DefaultMaxChain.
	MaxChain int
}

// PathPolicy is a policy that applies to a path of the name tree because
// a CA certificate of the chain carries it: Path is the domain the CA's
// certificate stands for (the root for the root CA). It is a
// policy.Entry, so a chain's policies can be checked at deploy with
// policy.CheckDeployAgainst or inserted into a policy.Tree directly.
type PathPolicy = policy.Entry

// Identity is what a verified chain says about its holder.
type Identity struct {
	// Domain is the administrative domain: the common names of the
	// sub-CAs, issuer-most first; the root for a leaf the root signed.
	Domain name.Path
	// Leaf is the leaf's common name, a VM name or path relative to
	// Domain.
	Leaf name.Path
	// Policies are the policies of the chain's CAs, root first (the root
	// only if its certificate carries one). Each is within the previous.
	Policies []PathPolicy
	// Command is the one command the leaf allows, or nil if it allows
	// whatever its domain's policies allow.
	Command *Command
	// Chain is the verified chain, leaf first and root last.
	Chain []*x509.Certificate
}

// Name returns the full name the leaf designates: Domain followed by
// Leaf's labels.
func (id *Identity) Name() (name.Path, error) {
	p := id.Domain
	for _, l := range id.Leaf.Labels() {
		var err error
		if p, err = p.Child(l); err != nil {
			return name.Path{}, err
		}
	}
	return p, nil
}

// Verify checks a client chain, leaf first, optionally ending with the
// root, and returns the identity it proves. Each refusal says which
// certificate failed and why, on one line.
func (v *Verifier) Verify(chain []*x509.Certificate) (*Identity, error) {
	id, err := v.verify(chain)
	if err != nil {
		return nil, fmt.Errorf("verify client chain: %w", err)
	}
	return id, nil
}

func (v *Verifier) verify(chain []*x509.Certificate) (*Identity, error) {
	maxChain := v.MaxChain
	if maxChain <= 0 {
		maxChain = DefaultMaxChain
	}
	if len(chain) == 0 {
		return nil, errors.New("no certificate presented")
	}
	if len(chain) > maxChain {
		return nil, fmt.Errorf("%d certificates presented, the limit is %d", len(chain), maxChain)
	}
	for i, c := range chain {
		if c == nil {
			return nil, fmt.Errorf("certificate %d is missing", i+1)
		}
	}
	if len(v.Roots) == 0 {
		return nil, errors.New("no trusted root CA configured")
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	for _, c := range chain {
		if err := CheckPublicKey(c.PublicKey); err != nil {
			return nil, fmt.Errorf("%s: %w", describe(c), err)
		}
		if now.Before(c.NotBefore) {
			return nil, fmt.Errorf("%s is not valid before %s", describe(c), c.NotBefore.UTC().Format(time.RFC3339))
		}
		if now.After(c.NotAfter) {
			return nil, fmt.Errorf("%s expired at %s", describe(c), c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	leaf := chain[0]
	if leaf.IsCA {
		return nil, fmt.Errorf("%s is a CA certificate; authenticate with a leaf certificate it issues", describe(leaf))
	}

	full, err := v.buildChain(chain, now)
	if err != nil {
		return nil, err
	}
	if len(full) > maxChain {
		return nil, fmt.Errorf("chain of %d certificates with its root, the limit is %d", len(full), maxChain)
	}
	for _, c := range full {
		if v.Revoked.IsRevoked(c) {
			return nil, fmt.Errorf("%s (serial %s): %w", describe(c), serialHex(c), ErrRevoked)
		}
	}
	return identity(full)
}

// Recheck reports whether an identity Verify returned still holds now:
// every certificate of its chain, root included, within its validity
// period and none on the current revocation list. It checks no signature
// (Verify did that once), so that long-lived calls can afford to ask
// again every fraction of a second and end as soon as their chain is
// revoked or expires. The errors read like Verify's.
func (v *Verifier) Recheck(id *Identity) error {
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	for _, c := range id.Chain {
		if now.After(c.NotAfter) {
			return fmt.Errorf("verify client chain: %s expired at %s", describe(c), c.NotAfter.UTC().Format(time.RFC3339))
		}
		if v.Revoked.IsRevoked(c) {
			return fmt.Errorf("verify client chain: %s (serial %s): %w", describe(c), serialHex(c), ErrRevoked)
		}
	}
	return nil
}

// buildChain runs crypto/x509 path validation on copies of the
// certificates with Petrel's extensions marked as handled, and returns
// the validated chain that consists of exactly the presented
// certificates in the presented order, followed by the root if it was
// not presented.
func (v *Verifier) buildChain(chain []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	roots := x509.NewCertPool()
	for _, r := range v.Roots {
		roots.AddCert(handled(r))
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(handled(c))
	}
	leaf := chain[0]
	chains, err := handled(leaf).Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		if len(chain) == 1 && bytes.Equal(leaf.RawIssuer, leaf.RawSubject) &&
			leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil {
			return nil, fmt.Errorf("%s is self-signed, not issued by a trusted CA", describe(leaf))
		}
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("%s does not lead to a trusted root CA (top of the chain: %s)", describe(leaf), describe(chain[len(chain)-1]))
		}
		return nil, fmt.Errorf("%s: %w", describe(leaf), err)
	}
	for _, c := range chains {
		if matchesPresented(c, chain) {
			full := make([]*x509.Certificate, len(c))
			for i := range c {
				if i < len(chain) {
					full[i] = chain[i]
				} else {
					full[i] = original(c[i], v.Roots)
				}
			}
			return full, nil
		}
	}
	return nil, errors.New("the presented certificates are not a chain in order, leaf first, each issued by the next")
}

// matchesPresented reports whether validated chain c is the presented
// chain followed by at most its root.
func matchesPresented(c, presented []*x509.Certificate) bool {
	if len(c) != len(presented) && len(c) != len(presented)+1 {
		return false
	}
	for i, p := range presented {
		if !bytes.Equal(c[i].Raw, p.Raw) {
			return false
		}
	}
	return true
}

// original returns the caller's root certificate that c is a marked copy
// of.
func original(c *x509.Certificate, roots []*x509.Certificate) *x509.Certificate {
	for _, r := range roots {
		if bytes.Equal(r.Raw, c.Raw) {
			return r
		}
	}
	return c
}

// handled returns a shallow copy of c with Petrel's extensions removed
// from the unhandled critical extensions, as crypto/x509 asks callers
// that process such extensions themselves to do.
func handled(c *x509.Certificate) *x509.Certificate {
	cp := *c
	cp.UnhandledCriticalExtensions = nil
	for _, id := range c.UnhandledCriticalExtensions {
		if !id.Equal(OIDPolicy) && !id.Equal(OIDCommand) {
			cp.UnhandledCriticalExtensions = append(cp.UnhandledCriticalExtensions, id)
		}
	}
	return &cp
}

// identity applies Petrel's semantics to a validated chain, leaf first
// and root last: policies present where required and nested, names valid
// labels, commands only in the leaf.
func identity(full []*x509.Certificate) (*Identity, error) {
	id := &Identity{Chain: full}
	root := full[len(full)-1]
	rootPolicy, err := PolicyOf(root)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", describe(root), err)
	}
	if cmd, err := CommandOf(root); err != nil || cmd != nil {
		return nil, fmt.Errorf("root %s carries a command; only leaf certificates may", describe(root))
	}
	parent := rootPolicy
	if rootPolicy != nil {
		id.Policies = append(id.Policies, PathPolicy{Path: name.Root, Policy: *rootPolicy})
	}
	domain := name.Root
	for i := len(full) - 2; i >= 1; i-- {
		c := full[i]
		if domain, err = domain.Child(c.Subject.CommonName); err != nil {
			return nil, fmt.Errorf("%s: common name is not a valid label: %w", describe(c), err)
		}
		p, err := PolicyOf(c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", describe(c), err)
		}
		if p == nil {
			return nil, fmt.Errorf("%s is a sub-CA without a policy extension", describe(c))
		}
		if cmd, err := CommandOf(c); err != nil || cmd != nil {
			return nil, fmt.Errorf("%s is a CA and carries a command; only leaf certificates may", describe(c))
		}
		if parent != nil {
			if err := p.Within(*parent); err != nil {
				return nil, fmt.Errorf("%s claims more than its issuer %s allows: %w", describe(c), describe(full[i+1]), err)
			}
		}
		id.Policies = append(id.Policies, PathPolicy{Path: domain, Policy: *p})
		parent = p
	}
	leaf := full[0]
	if p, err := PolicyOf(leaf); err != nil || p != nil {
		return nil, fmt.Errorf("%s is a leaf and carries a policy; only CA certificates may", describe(leaf))
	}
	leafName, err := name.Parse(leaf.Subject.CommonName)
	if err != nil {
		return nil, fmt.Errorf("%s: common name is not a valid name: %w", describe(leaf), err)
	}
	if leafName.IsRoot() {
		return nil, fmt.Errorf("%s has no common name", describe(leaf))
	}
	if _, err := (&Identity{Domain: domain, Leaf: leafName}).Name(); err != nil {
		return nil, fmt.Errorf("%s: %w", describe(leaf), err)
	}
	if id.Command, err = CommandOf(leaf); err != nil {
		return nil, fmt.Errorf("%s: %w", describe(leaf), err)
	}
	id.Domain = domain
	id.Leaf = leafName
	return id, nil
}

// describe names a certificate in error messages by its common name.
func describe(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("certificate %q", c.Subject.CommonName)
	}
	return fmt.Sprintf("certificate %q", c.Subject.String())
}
