package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateKeyKinds(t *testing.T) {
	for _, tc := range []struct {
		kind string
		bits int
		want string
	}{
		{"", 0, "ed25519"},
		{"ed25519", 0, "ed25519"},
		{"p256", 0, "p256"},
		{"P384", 0, "p384"},
		{"ecdsa", 384, "p384"},
		{"ecdsa", 0, "p256"},
		{"rsa", 2048, "rsa-2048"},
	} {
		k, err := GenerateKey(tc.kind, tc.bits)
		if err != nil {
			t.Fatalf("GenerateKey(%q, %d): %v", tc.kind, tc.bits, err)
		}
		if got := KeyKind(k.Public()); got != tc.want {
			t.Errorf("GenerateKey(%q, %d) made %s, want %s", tc.kind, tc.bits, got, tc.want)
		}
		if err := CheckPublicKey(k.Public()); err != nil {
			t.Errorf("CheckPublicKey(%s): %v", tc.want, err)
		}
		// PEM round trip.
		data, err := EncodeKey(k)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeKey(data)
		if err != nil {
			t.Fatal(err)
		}
		if !back.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
			t.Errorf("%s: key changed in PEM round trip", tc.want)
		}
	}
	for _, tc := range []struct {
		kind string
		bits int
		want string
	}{
		{"rsa", 1024, "rsa key of 1024 bits: must be 2048 to 8192"},
		{"rsa", 16384, "must be 2048 to 8192"},
		{"ecdsa", 521, "only 256 and 384"},
		{"dsa", 0, `key type "dsa"`},
	} {
		_, err := GenerateKey(tc.kind, tc.bits)
		wantErr(t, err, tc.want)
	}
}

func TestRSA1024Refused(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, CheckPublicKey(&k.PublicKey), "rsa key of 1024 bits")
	_, err = CSR(k, "vm", nil)
	wantErr(t, err, "rsa key of 1024 bits")
	data := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	_, err = DecodeKey(data)
	wantErr(t, err, "rsa key of 1024 bits")
	root := newRootCA(t, KeyEd25519, nil)
	_, err = IssueLeaf(root.cert, root.key, &k.PublicKey, "vm", nil, 0)
	wantErr(t, err, "rsa key of 1024 bits")
}

func TestLegacyKeyFormats(t *testing.T) {
	ec := genKey(t, KeyP256).(*ecdsa.PrivateKey)
	der, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	k, err := DecodeKey(append([]byte("junk\n"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})...))
	if err != nil || KeyKind(k.Public()) != KeyP256 {
		t.Fatalf("EC PRIVATE KEY: %v", err)
	}
	rk := genKey(t, KeyRSA).(*rsa.PrivateKey)
	k, err = DecodeKey(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}))
	if err != nil || KeyKind(k.Public()) != "rsa-2048" {
		t.Fatalf("RSA PRIVATE KEY: %v", err)
	}
	_, err = DecodeKey([]byte("nothing here"))
	wantErr(t, err, "no private key PEM block")
	_, err = DecodeKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	wantErr(t, err, "parse PRIVATE KEY")
}

func TestCertAndCSRFiles(t *testing.T) {
	dir := t.TempDir()
	_, a, b := hierarchy(t, KeyEd25519)
	path := filepath.Join(dir, "chain.pem")
	if err := WriteCertsFile(path, b.cert, a.cert); err != nil {
		t.Fatal(err)
	}
	certs, err := ReadCertsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[0].Equal(b.cert) || !certs[1].Equal(a.cert) {
		t.Errorf("read back %d certificates", len(certs))
	}
	if _, err := DecodeCerts([]byte("no pem")); err == nil {
		t.Error("DecodeCerts accepted no certificate")
	}
	if _, err := ReadCertsFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("ReadCertsFile accepted a missing file")
	}

	kpath := filepath.Join(dir, "k.key")
	if err := WriteKeyFile(kpath, b.key); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(kpath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode().Perm())
	}
	if err := WriteKeyFile(kpath, b.key); err == nil {
		t.Error("WriteKeyFile overwrote an existing key")
	}
	if _, err := ReadKeyFile(kpath); err != nil {
		t.Fatal(err)
	}

	if _, err := CSR(b.key, "Vm", nil); err == nil || !strings.Contains(err.Error(), `write "vm"`) {
		t.Errorf("CSR with an upper-case name: %v, want a refusal suggesting the lower-case name", err)
	}
	der, err := CSR(b.key, "vm", &Command{Name: "create", Args: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := DecodeCSR(EncodeCSR(der))
	if err != nil {
		t.Fatal(err)
	}
	if csr.Subject.CommonName != "vm" {
		t.Errorf("CSR name %q", csr.Subject.CommonName)
	}
	cmd, err := CommandFromCSR(csr)
	if err != nil || cmd == nil || cmd.Name != "create" {
		t.Errorf("CommandFromCSR = %+v, %v", cmd, err)
	}
	// A tampered request fails its self-signature.
	bad := append([]byte(nil), der...)
	bad[len(bad)-1] ^= 1
	_, err = DecodeCSR(EncodeCSR(bad))
	wantErr(t, err, "signature")
	_, err = CSR(b.key, "bad name", nil)
	wantErr(t, err, `contains ' '`)
}
