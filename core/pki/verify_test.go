package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/policy"
)

var (
	polA = policy.Policy{VMs: 4, CPUs: []int{0, 1}, MemoryMB: 4096, BlockMB: intp(1000), Bridges: []string{"br0", "br1"}}
	polB = policy.Policy{VMs: 2, CPUs: []int{1}, MemoryMB: 1024, Bridges: []string{"br1"}}
)

// hierarchy is root → sub-CA "a" → sub-CA "b", the shape most tests use.
func hierarchy(t testing.TB, kind string) (root, a, b authority) {
	t.Helper()
	root = newRootCA(t, kind, nil)
	a = root.sub(t, "a", polA, kind)
	b = a.sub(t, "b", polB, kind)
	return root, a, b
}

func TestTLSAllowedAllKeyTypes(t *testing.T) {
	for _, kind := range []string{KeyEd25519, KeyP256, KeyP384, KeyRSA} {
		t.Run(kind, func(t *testing.T) {
			root, _, b := hierarchy(t, kind)
			s := startServer(t, root, &Verifier{})
			cmd := &Command{Name: "create", Args: []string{"vm", "--mem", "64"}}
			chain, key := b.leaf(t, "vm", cmd, kind)
			got, err := s.call(t, chain, key, root.cert)
			if err != nil {
				t.Fatalf("call: %v (server: %v)", err, drain(s))
			}
			if got != "a:b|vm|create vm --mem 64" {
				t.Errorf("identity = %q", got)
			}
			// The root may be presented too, and a leaf need not carry a
			// command.
			chain, key = b.leaf(t, "other:vm", nil, kind)
			got, err = s.call(t, append(chain, root.cert), key, root.cert)
			if err != nil {
				t.Fatalf("call with root presented: %v (server: %v)", err, drain(s))
			}
			if got != "a:b|other:vm|-" {
				t.Errorf("identity = %q", got)
			}
		})
	}
}

func drain(s *testServer) error {
	select {
	case err := <-s.errs:
		return err
	default:
		return nil
	}
}

func TestIdentity(t *testing.T) {
	rootPol := policy.Policy{VMs: 10, CPUs: []int{0, 1, 2}, MemoryMB: 8192, BlockMB: intp(5000), Bridges: []string{"br0", "br1", "br2"}}
	root := newRootCA(t, KeyEd25519, &rootPol)
	a := root.sub(t, "a", polA, KeyEd25519)
	b := a.sub(t, "b", polB, KeyP256)
	chain, _ := b.leaf(t, "vm", &Command{Name: "destroy"}, KeyEd25519)
	v := &Verifier{Roots: []*x509.Certificate{root.cert}}
	id, err := v.Verify(chain)
	if err != nil {
		t.Fatal(err)
	}
	if id.Domain.String() != "a:b" || id.Leaf.String() != "vm" {
		t.Errorf("domain %s leaf %s", id.Domain, id.Leaf)
	}
	full, err := id.Name()
	if err != nil || full.String() != "a:b:vm" {
		t.Errorf("Name() = %s, %v", full, err)
	}
	if len(id.Policies) != 3 {
		t.Fatalf("Policies = %v", id.Policies)
	}
	for i, want := range []struct {
		path string
		pol  policy.Policy
	}{{":", rootPol}, {"a", polA}, {"a:b", polB}} {
		got := id.Policies[i]
		if got.Path.String() != want.path || !got.Policy.Equal(want.pol) {
			t.Errorf("Policies[%d] = %s %v, want %s %v", i, got.Path, got.Policy, want.path, want.pol)
		}
	}
	if id.Command == nil || id.Command.Name != "destroy" || len(id.Command.Args) != 0 {
		t.Errorf("Command = %+v", id.Command)
	}
	if err := policy.CheckDeployAgainst(id.Policies, full, policy.Usage{CPUs: []int{1}, MemoryMB: 1024, Bridges: []string{"br1"}}, nil); err != nil {
		t.Errorf("deploy within the chain's policies: %v", err)
	}
	err = policy.CheckDeployAgainst(id.Policies, full, policy.Usage{CPUs: []int{0}, MemoryMB: 64}, nil)
	wantErr(t, err, `policy of "a:b": cpus [0] are not among the allowed [1]`)
	if len(id.Chain) != 4 || id.Chain[3] != root.cert {
		t.Errorf("Chain has %d certificates", len(id.Chain))
	}

	// A leaf signed directly by the root acts on the root domain.
	chain, _ = root.leaf(t, "vm", nil, KeyEd25519)
	id, err = v.Verify(chain)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Domain.IsRoot() || id.Leaf.String() != "vm" || len(id.Policies) != 1 || id.Command != nil {
		t.Errorf("root-signed leaf: %+v", id)
	}
}

func TestTLSExpiredAndNotYetValid(t *testing.T) {
	root, _, b := hierarchy(t, KeyEd25519)
	chain, key := b.leaf(t, "vm", nil, KeyEd25519)
	for _, tc := range []struct {
		offset time.Duration
		want   string
	}{
		{11 * time.Minute, `certificate "vm" expired at`},
		{-2 * time.Minute, `certificate "vm" is not valid before`},
		{2 * 365 * 24 * time.Hour, `expired at`},
	} {
		at := time.Now().Add(tc.offset)
		s := startServer(t, root, &Verifier{Now: func() time.Time { return at }})
		got, err := s.call(t, chain, key, root.cert)
		s.refused(t, got, err, tc.want)
	}
	// A sub-CA that is not yet valid, with a current leaf.
	future := root.forge(t, func() *x509.Certificate {
		c := caTmpl(t, "late", &polB)
		c.NotBefore = time.Now().Add(time.Hour)
		c.NotAfter = time.Now().Add(2 * time.Hour)
		return c
	}(), b.key.Public())
	late := authority{cert: future, key: b.key, chain: []*x509.Certificate{future}}
	lchain := late.forge(t, leafTmpl("vm"), key.Public())
	s := startServer(t, root, &Verifier{})
	got, err := s.call(t, []*x509.Certificate{lchain, future}, key, root.cert)
	s.refused(t, got, err, `certificate "late" is not valid before`)
}

func TestTLSWrongCAAndSelfSigned(t *testing.T) {
	root, _, _ := hierarchy(t, KeyEd25519)
	s := startServer(t, root, &Verifier{})

	_, _, otherB := hierarchy(t, KeyEd25519)
	chain, key := otherB.leaf(t, "vm", nil, KeyEd25519)
	got, err := s.call(t, chain, key, root.cert)
	s.refused(t, got, err, `does not lead to a trusted root CA`)

	selfKey := genKey(t, KeyEd25519)
	self := authority{key: selfKey}.forge(t, leafTmpl("vm"), selfKey.Public())
	got, err = s.call(t, []*x509.Certificate{self}, selfKey, root.cert)
	s.refused(t, got, err, `certificate "vm" is self-signed, not issued by a trusted CA`)

	// The root itself is a CA, not a client identity.
	got, err = s.call(t, []*x509.Certificate{root.cert}, root.key, root.cert)
	s.refused(t, got, err, `is a CA certificate`)
}

func TestClientRefusesWrongServer(t *testing.T) {
	root, _, b := hierarchy(t, KeyEd25519)
	s := startServer(t, root, &Verifier{})
	chain, key := b.leaf(t, "vm", nil, KeyEd25519)
	other := newRootCA(t, KeyEd25519, nil)
	_, err := s.call(t, chain, key, other.cert)
	wantErr(t, err, "verify server 127.0.0.1")

	cfg, err := ClientTLSConfig(chain, key, []*x509.Certificate{root.cert}, "wrong.example")
	if err != nil {
		t.Fatal(err)
	}
	_, err = dialAndRead(s.addr, cfg)
	wantErr(t, err, "wrong.example")
}

func TestTLSChainLength(t *testing.T) {
	root := newRootCA(t, KeyEd25519, nil)
	ca := root
	p := policy.Policy{VMs: 1}
	for i := 1; i <= 8; i++ {
		ca = ca.sub(t, fmt.Sprintf("l%d", i), p, KeyEd25519)
		if i == 7 {
			s := startServer(t, root, &Verifier{})
			chain, key := ca.leaf(t, "vm", nil, KeyEd25519)
			if len(chain)+1 != 9 {
				t.Fatalf("chain of %d", len(chain)+1)
			}
			if got, err := s.call(t, chain, key, root.cert); err != nil || !strings.HasPrefix(got, "l1:l2:l3:l4:l5:l6:l7|") {
				t.Fatalf("9-certificate chain: %q %v (server: %v)", got, err, drain(s))
			}
		}
	}
	s := startServer(t, root, &Verifier{})
	chain, key := ca.leaf(t, "vm", nil, KeyEd25519)
	got, err := s.call(t, chain, key, root.cert)
	s.refused(t, got, err, "chain of 10 certificates with its root, the limit is 9")
	got, err = s.call(t, append(chain, root.cert), key, root.cert)
	s.refused(t, got, err, "10 certificates presented, the limit is 9")
}

func TestTLSRevocationWithWatcher(t *testing.T) {
	root, a, b := hierarchy(t, KeyEd25519)
	path := filepath.Join(t.TempDir(), RevokedFile)
	if err := (&RevocationList{}).Save(path); err != nil {
		t.Fatal(err)
	}
	list, err := LoadRevocationList(path)
	if err != nil {
		t.Fatal(err)
	}
	w := WatchRevocations(path, list, 10*time.Millisecond, func(err error) { t.Errorf("watcher: %v", err) })
	defer w.Stop()
	s := startServer(t, root, &Verifier{Revoked: list})

	chain1, key1 := b.leaf(t, "one", nil, KeyEd25519)
	chain2, key2 := b.leaf(t, "two", nil, KeyEd25519)
	chainA, keyA := a.leaf(t, "three", nil, KeyEd25519)
	if _, err := s.call(t, chain1, key1, root.cert); err != nil {
		t.Fatalf("before revocation: %v (%v)", err, drain(s))
	}

	// Revoking the leaf refuses it, and only it, without a restart.
	if err := Revoke(path, chain1[0]); err != nil {
		t.Fatal(err)
	}
	waitRevoked(t, list, chain1[0])
	got, err := s.call(t, chain1, key1, root.cert)
	s.refused(t, got, err, `certificate "one" (serial `)
	if _, err := s.call(t, chain2, key2, root.cert); err != nil {
		t.Fatalf("sibling after leaf revocation: %v (%v)", err, drain(s))
	}

	// Revoking the intermediate "b" refuses everything below it, but not
	// what "a" issued directly.
	if err := Revoke(path, b.cert); err != nil {
		t.Fatal(err)
	}
	waitRevoked(t, list, b.cert)
	got, err = s.call(t, chain2, key2, root.cert)
	s.refused(t, got, err, `certificate "b" (serial `)
	if _, err := s.call(t, chainA, keyA, root.cert); err != nil {
		t.Fatalf("a's leaf after revoking b: %v (%v)", err, drain(s))
	}
	id, err := (&Verifier{Roots: []*x509.Certificate{root.cert}, Revoked: list}).Verify(chain2)
	if !errors.Is(err, ErrRevoked) || id != nil {
		t.Errorf("Verify of revoked chain = %v, %v; want ErrRevoked", id, err)
	}
}

func waitRevoked(t *testing.T, list *RevocationList, c *x509.Certificate) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !list.IsRevoked(c) {
		if time.Now().After(deadline) {
			t.Fatalf("watcher did not pick up the revocation of %s", c.Subject.CommonName)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSubCAClaimingMore(t *testing.T) {
	root, a, _ := hierarchy(t, KeyEd25519)
	key := genKey(t, KeyEd25519)
	der, err := CSR(key, "greedy", nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	big := polA.Clone()
	big.VMs = 5
	big.CPUs = append(big.CPUs, 7)
	_, err = SignPolicy(csr, a.cert, a.key, big, 0)
	wantErr(t, err, `sign policy for "greedy": exceeds the signer "a"'s own policy: vms 5 > 4, cpus [7] not in [0 1]`)

	// A hand-forged one is refused by Verify, over TLS.
	forged := a.forge(t, caTmpl(t, "greedy", &big), key.Public())
	greedy := authority{cert: forged, key: key, chain: []*x509.Certificate{forged, a.cert}}
	chain, lkey := greedy.leaf(t, "vm", nil, KeyEd25519)
	s := startServer(t, root, &Verifier{})
	got, err := s.call(t, chain, lkey, root.cert)
	s.refused(t, got, err, `certificate "greedy" claims more than its issuer certificate "a" allows: vms 5 > 4`)
}

func TestVerifyRefusals(t *testing.T) {
	root, a, b := hierarchy(t, KeyEd25519)
	v := &Verifier{Roots: []*x509.Certificate{root.cert}}
	lkey := genKey(t, KeyEd25519)
	okLeaf := b.forge(t, leafTmpl("vm"), lkey.Public())

	noPolicy := a.forge(t, caTmpl(t, "nopol", nil), lkey.Public())
	badLabel := a.forge(t, caTmpl(t, "bad_label", &polB), lkey.Public())
	pathLabel := a.forge(t, caTmpl(t, "x:y", &polB), lkey.Public())
	cmdExt, err := MarshalCommand(Command{Name: "create"})
	if err != nil {
		t.Fatal(err)
	}
	cmdCA := caTmpl(t, "cmdca", &polB)
	cmdCA.ExtraExtensions = append(cmdCA.ExtraExtensions, pkix.Extension{Id: OIDCommand, Critical: true, Value: cmdExt})
	withCmd := a.forge(t, cmdCA, lkey.Public())
	polLeafTmpl := leafTmpl("vm")
	polLeafTmpl.ExtraExtensions = []pkix.Extension{policyExt(t, polB)}
	badExtTmpl := leafTmpl("vm")
	badExtTmpl.ExtraExtensions = []pkix.Extension{{Id: OIDCommand, Critical: true, Value: []byte{0x30, 0x03, 0x02, 0x01, 0x02}}}
	serverLeafTmpl := leafTmpl("vm")
	serverLeafTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		want  string
	}{
		{"empty", nil, "no certificate presented"},
		{"nil cert", []*x509.Certificate{nil}, "certificate 1 is missing"},
		{"sub-CA without policy", []*x509.Certificate{leafUnder(t, noPolicy, lkey), noPolicy, a.cert}, `certificate "nopol" is a sub-CA without a policy extension`},
		{"invalid label in sub-CA", []*x509.Certificate{leafUnder(t, badLabel, lkey), badLabel, a.cert}, `certificate "bad_label": common name is not a valid label`},
		{"path as sub-CA name", []*x509.Certificate{leafUnder(t, pathLabel, lkey), pathLabel, a.cert}, `certificate "x:y": common name is not a valid label`},
		{"invalid leaf name", []*x509.Certificate{b.forge(t, leafTmpl("no spaces"), lkey.Public()), b.cert, a.cert}, `certificate "no spaces": common name is not a valid name`},
		{"empty leaf name", []*x509.Certificate{b.forge(t, leafTmpl(""), lkey.Public()), b.cert, a.cert}, `has no common name`},
		{"command in CA", []*x509.Certificate{leafUnder(t, withCmd, lkey), withCmd, a.cert}, `certificate "cmdca" is a CA and carries a command`},
		{"policy in leaf", []*x509.Certificate{b.forge(t, polLeafTmpl, lkey.Public()), b.cert, a.cert}, `is a leaf and carries a policy`},
		{"bad command", []*x509.Certificate{b.forge(t, badExtTmpl, lkey.Public()), b.cert, a.cert}, `schema version 2 is not supported`},
		{"server certificate as client", []*x509.Certificate{b.forge(t, serverLeafTmpl, lkey.Public()), b.cert, a.cert}, `incompatible key usage`},
		{"out of order", []*x509.Certificate{okLeaf, a.cert, b.cert}, "not a chain in order"},
		{"missing intermediate", []*x509.Certificate{okLeaf, b.cert}, "does not lead to a trusted root CA"},
		{"rsa 1024 leaf", []*x509.Certificate{b.forge(t, leafTmpl("vm"), &rsa1024.PublicKey), b.cert, a.cert}, `certificate "vm": rsa key of 1024 bits`},
		{"p224 leaf", []*x509.Certificate{b.forge(t, leafTmpl("vm"), &p224.PublicKey), b.cert, a.cert}, `only P-256 and P-384`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(tc.chain)
			if id != nil {
				t.Errorf("identity returned with error")
			}
			wantErr(t, err, tc.want)
		})
	}
	if _, err := v.Verify([]*x509.Certificate{okLeaf, b.cert, a.cert}); err != nil {
		t.Fatalf("control chain refused: %v", err)
	}
	if _, err := (&Verifier{}).Verify([]*x509.Certificate{okLeaf}); err == nil {
		t.Error("Verifier without roots accepted a chain")
	}
}

// leafUnder issues a plain leaf from a forged CA certificate whose key
// is key.
func leafUnder(t *testing.T, ca *x509.Certificate, key crypto.Signer) *x509.Certificate {
	t.Helper()
	return authority{cert: ca, key: key}.forge(t, leafTmpl("vm"), key.Public())
}
