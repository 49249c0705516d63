package pki

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/policy"
)

func TestInitCAAndTLSFromFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	rootPol := policy.Policy{VMs: 8, CPUs: []int{0, 1}, MemoryMB: 4096, Bridges: []string{"br0"}}
	if err := InitCA(dir, CAOptions{CommonName: "owner", KeyKind: KeyP256, Policy: &rootPol, ServerNames: []string{"petrel.example", "10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	for f, mode := range map[string]os.FileMode{CAKeyFile: 0o600, ServerKeyFile: 0o600, CACertFile: 0o644, ServerCertFile: 0o644, RevokedFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", f, fi.Mode().Perm(), mode)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o755 {
		t.Errorf("CA directory mode %v", fi.Mode().Perm())
	}
	err := InitCA(dir, CAOptions{})
	wantErr(t, err, "already exists; refusing to overwrite a CA")

	roots, err := ReadCertsFile(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	root := roots[0]
	if root.Subject.CommonName != "owner" || !root.IsCA || KeyKind(root.PublicKey) != KeyP256 {
		t.Errorf("root: %s CA=%v %s", root.Subject.CommonName, root.IsCA, KeyKind(root.PublicKey))
	}
	if p, err := PolicyOf(root); err != nil || p == nil || !p.Equal(rootPol) {
		t.Errorf("root policy %v, %v", p, err)
	}
	caKey, err := ReadKeyFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	srvChain, err := ReadCertsFile(filepath.Join(dir, ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(srvChain) != 2 || srvChain[0].IsCA {
		t.Fatalf("server chain of %d", len(srvChain))
	}
	srv := srvChain[0]
	if len(srv.DNSNames) != 2 || srv.DNSNames[1] != "petrel.example" || len(srv.IPAddresses) != 3 || !srv.IPAddresses[2].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("server names %v %v", srv.DNSNames, srv.IPAddresses)
	}
	srvKey, err := ReadKeyFile(filepath.Join(dir, ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	list, err := LoadRevocationList(filepath.Join(dir, RevokedFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Entries()) != 0 {
		t.Errorf("new revocation list has %d entries", len(list.Entries()))
	}

	v := &Verifier{Roots: roots, Revoked: list}
	cfg, err := ServerTLSConfig(srvChain, srvKey, v)
	if err != nil {
		t.Fatal(err)
	}
	ln := startServerWithConfig(t, cfg, v).addr

	// The owner's one-step flow: a fresh leaf signed by the CA key.
	chain, key, err := NewLeafChain([]*x509.Certificate{root}, caKey, "web", &Command{Name: "info"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || time.Until(chain[0].NotAfter) > DefaultLeafValidity {
		t.Errorf("leaf chain of %d, valid until %v", len(chain), chain[0].NotAfter)
	}
	for _, host := range []string{"localhost", "127.0.0.1"} {
		ccfg, err := ClientTLSConfig(chain, key, roots, host)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dialAndRead(ln, ccfg)
		if err != nil {
			t.Fatalf("dial as %s: %v", host, err)
		}
		if got != ":|web|info " {
			t.Errorf("identity %q", got)
		}
	}
}

func TestSignPolicyRefusals(t *testing.T) {
	root, a, _ := hierarchy(t, KeyEd25519)
	key := genKey(t, KeyEd25519)
	csrFor := func(cn string, cmd *Command) *x509.CertificateRequest {
		der, err := CSR(key, cn, cmd)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		return csr
	}
	_, err := SignPolicy(csrFor("x:y", nil), a.cert, a.key, polB, 0)
	wantErr(t, err, `common name "x:y" of the request is not a valid label`)
	_, err = SignPolicy(csrFor("c", &Command{Name: "create"}), a.cert, a.key, polB, 0)
	wantErr(t, err, "asks for a command")
	_, err = SignPolicy(csrFor("c", nil), a.cert, a.key, policy.Policy{VMs: -1}, 0)
	wantErr(t, err, "invalid policy")
	_, err = SignPolicy(csrFor("c", nil), a.cert, genKey(t, KeyEd25519), polB, 0)
	wantErr(t, err, "sign certificate")
	leafChain, lkey := a.leaf(t, "vm", nil, KeyEd25519)
	_, err = SignPolicy(csrFor("c", nil), leafChain[0], lkey, polB, 0)
	wantErr(t, err, "is not a CA certificate")
	_, err = SignPolicy(nil, a.cert, a.key, polB, 0)
	wantErr(t, err, "no certificate request")

	// An unlimited root signs any valid policy; the sub-CA never outlives
	// its issuer.
	big := policy.Policy{VMs: policy.MaxVMs, MemoryMB: policy.MaxMemoryMB}
	c, err := SignPolicy(csrFor("c", nil), root.cert, root.key, big, 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !c.NotAfter.Equal(root.cert.NotAfter) {
		t.Errorf("sub-CA valid until %v, root until %v", c.NotAfter, root.cert.NotAfter)
	}
}

func TestIssueLeafFromCSR(t *testing.T) {
	root, _, b := hierarchy(t, KeyEd25519)
	key := genKey(t, KeyP384)
	der, err := CSR(key, "vm", &Command{Name: "restart", Args: []string{"vm"}})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := IssueLeafFromCSR(csr, b.cert, b.key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d != time.Minute+Backdate {
		t.Errorf("leaf validity %v", d)
	}
	id, err := (&Verifier{Roots: []*x509.Certificate{root.cert}}).Verify(append([]*x509.Certificate{leaf}, b.chain...))
	if err != nil {
		t.Fatal(err)
	}
	if id.Command == nil || !id.Command.Equal(Command{Name: "restart", Args: []string{"vm"}}) {
		t.Errorf("command %+v", id.Command)
	}
	_, err = IssueLeaf(b.cert, b.key, key.Public(), "", nil, 0)
	wantErr(t, err, "is not a valid VM name or path")
	_, err = IssueLeaf(b.cert, b.key, key.Public(), "vm", &Command{}, 0)
	wantErr(t, err, "command name")
	_, _, err = NewLeafChain(nil, b.key, "vm", nil, "")
	wantErr(t, err, "empty signer chain")
}
