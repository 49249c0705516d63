package contentconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// TestReadToken: a token is TokenLen lowercase hex characters; anything
// else is refused.
func TestReadToken(t *testing.T) {
	good := strings.Repeat("0a", TokenLen/2)
	if tok, err := ReadToken(strings.NewReader(good + "rest")); err != nil || tok != good {
		t.Fatalf("ReadToken(%q) = %q, %v", good, tok, err)
	}
	for _, bad := range []string{strings.Repeat("0A", TokenLen/2), strings.Repeat("zz", TokenLen/2), good[:TokenLen-1]} {
		if tok, err := ReadToken(strings.NewReader(bad)); err == nil {
			t.Fatalf("ReadToken(%q) = %q, want an error", bad, tok)
		}
	}
}

// serve accepts one TLS connection offering protos and returns what its
// client wrote.
func serve(t *testing.T, protos []string) (string, *tls.Config, <-chan string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "endpoint"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: protos})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		tok, err := ReadToken(c)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- tok
	}()
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return lis.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}, got
}

// TestDial: a content connection is opened only to a server that offers
// Protocol, and starts with a fresh token.
func TestDial(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, cfg, got := serve(t, []string{"h2", Protocol})
	c, err := Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if tok := <-got; tok != c.Token || len(tok) != TokenLen {
		t.Fatalf("the server read token %q, the client has %q", tok, c.Token)
	}
	if len(cfg.NextProtos) != 0 {
		t.Fatalf("Dial changed the caller's configuration: %v", cfg.NextProtos)
	}

	addr, cfg, _ = serve(t, []string{"h2"})
	if c, err := Dial(ctx, addr, cfg); err == nil {
		c.Close()
		t.Fatal("a content connection to a server that offers only h2")
	}
}
