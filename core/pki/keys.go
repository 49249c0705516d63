package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/petrel-vmm/petrel/sdk/client"
)

// Key kinds accepted by GenerateKey and the CLI's --key-type flags.
const (
	// KeyEd25519 is the default: small keys and signatures, fast
	// handshakes, no parameters to get wrong.
	KeyEd25519 = "ed25519"
	// KeyP256 is ECDSA on NIST P-256, for clients whose tooling or
	// hardware tokens lack Ed25519.
	KeyP256 = "p256"
	// KeyP384 is ECDSA on NIST P-384.
	KeyP384 = "p384"
	// KeyRSA is RSA; bits 0 means DefaultRSABits.
	KeyRSA = "rsa"
)

// RSA key size limits: below MinRSABits is breakable or close to it, above
// MaxRSABits only slows every handshake (and is a cheap denial of service
// when a client presents one).
const (
	// MinRSABits is the smallest RSA key accepted anywhere in a chain.
	MinRSABits = 2048
	// MaxRSABits is the largest RSA key accepted anywhere in a chain.
	MaxRSABits = 8192
	// DefaultRSABits is the size GenerateKey uses when given 0 bits.
	DefaultRSABits = 3072
)

// GenerateKey creates a private key of the given kind ("" means
// KeyEd25519). bits applies to RSA only; "ecdsa" with bits 256 or 384 is
// accepted as a synonym of KeyP256 or KeyP384.
func GenerateKey(kind string, bits int) (crypto.Signer, error) {
	switch strings.ToLower(kind) {
	case "", KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate ed25519 key: %w", err)
		}
		return k, nil
	case KeyP256, "ecdsa-p256", "p-256":
		return genECDSA(elliptic.P256())
	case KeyP384, "ecdsa-p384", "p-384":
		return genECDSA(elliptic.P384())
	case "ecdsa":
		switch bits {
		case 0, 256:
			return genECDSA(elliptic.P256())
		case 384:
			return genECDSA(elliptic.P384())
		}
		return nil, fmt.Errorf("ecdsa key of %d bits: only 256 and 384 are supported", bits)
	case KeyRSA:
		if bits == 0 {
			bits = DefaultRSABits
		}
		if bits < MinRSABits || bits > MaxRSABits {
			return nil, fmt.Errorf("rsa key of %d bits: must be %d to %d", bits, MinRSABits, MaxRSABits)
		}
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, fmt.Errorf("generate rsa key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("key type %q: use %s, %s, %s or %s", kind, KeyEd25519, KeyP256, KeyP384, KeyRSA)
}

func genECDSA(c elliptic.Curve) (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ecdsa %s key: %w", c.Params().Name, err)
	}
	return k, nil
}

// CheckPublicKey refuses key types and sizes Petrel does not accept, so a
// weak key is refused wherever it appears in a chain, not only when this
// package generated it.
func CheckPublicKey(pub crypto.PublicKey) error { return client.CheckPublicKey(pub) }

// KeyKind names the kind of a key as GenerateKey spells it, for listings
// and log lines.
func KeyKind(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return KeyEd25519
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return KeyP256
		case elliptic.P384():
			return KeyP384
		}
		return "ecdsa-" + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa-%d", k.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}

// PEM block types written and read by this package.
const (
	pemPrivateKey   = "PRIVATE KEY"
	pemCertificate  = "CERTIFICATE"
	pemCSR          = "CERTIFICATE REQUEST"
	pemECPrivateKey = "EC PRIVATE KEY"
	pemRSAKey       = "RSA PRIVATE KEY"
)

// EncodeKey returns key as a PKCS #8 "PRIVATE KEY" PEM block, the format
// every current tool reads.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// DecodeKey reads a private key from PEM: PKCS #8, and for keys made with
// older OpenSSL commands also SEC 1 "EC PRIVATE KEY" and PKCS #1 "RSA
// PRIVATE KEY". The key must be of an accepted type and size.
func DecodeKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no private key PEM block found")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case pemPrivateKey:
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case pemECPrivateKey:
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case pemRSAKey:
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", b.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", k)
		}
		if err := CheckPublicKey(s.Public()); err != nil {
			return nil, err
		}
		return s, nil
	}
}

// EncodeCerts returns certs as concatenated "CERTIFICATE" PEM blocks, in
// order; a chain is written leaf first.
func EncodeCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: c.Raw})...)
	}
	return out
}

// DecodeCerts parses every "CERTIFICATE" PEM block in data, in order,
// ignoring other blocks (so a file may hold a key and its chain), and
// fails if there is none.
func DecodeCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != pemCertificate {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no CERTIFICATE PEM block found")
	}
	return out, nil
}

// EncodeCSR returns a DER certificate request as a "CERTIFICATE REQUEST"
// PEM block.
func EncodeCSR(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der})
}

// DecodeCSR parses the first "CERTIFICATE REQUEST" PEM block in data and
// checks its self-signature, so a request cannot name a key its sender
// does not hold.
func DecodeCSR(data []byte) (*x509.CertificateRequest, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no CERTIFICATE REQUEST PEM block found")
		}
		if b.Type != pemCSR && b.Type != "NEW CERTIFICATE REQUEST" {
			continue
		}
		csr, err := x509.ParseCertificateRequest(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate request: %w", err)
		}
		if err := csr.CheckSignature(); err != nil {
			return nil, fmt.Errorf("certificate request signature: %w", err)
		}
		return csr, nil
	}
}

// ReadKeyFile reads a private key from a PEM file.
func ReadKeyFile(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	k, err := DecodeKey(data)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return k, nil
}

// ReadCertsFile reads the certificates of a PEM file, in order.
func ReadCertsFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	certs, err := DecodeCerts(data)
	if err != nil {
		return nil, fmt.Errorf("certificates %s: %w", path, err)
	}
	return certs, nil
}

// WriteKeyFile writes key to path with mode 0600, refusing to replace an
// existing file: overwriting a CA key by mistake cannot be undone.
func WriteKeyFile(path string, key crypto.Signer) error {
	data, err := EncodeKey(key)
	if err != nil {
		return err
	}
	return writeNew(path, data, 0o600)
}

// WriteCertsFile writes certs as PEM to path with mode 0644, replacing
// any existing file atomically.
func WriteCertsFile(path string, certs ...*x509.Certificate) error {
	return writeAtomic(path, EncodeCerts(certs...), 0o644)
}

// writeNew creates path exclusively and writes data to it, removing the
// file again if the write fails.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return nil
}

// writeAtomic writes data to a temporary file beside path and renames it
// over path, so that readers (such as a Watcher) see the old or the new
// content, never a torn file.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(mode)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return nil
}
