package pki

import (
	"crypto/x509"
	"io"
	"net"
	"testing"
)

// BenchmarkHandshake measures a full mutual TLS 1.3 handshake on
// loopback with a root → a → b → leaf chain, including the server's
// Petrel verification and one line of response, per key type.
func BenchmarkHandshake(b *testing.B) {
	for _, kind := range []string{KeyEd25519, KeyP256, KeyRSA} {
		b.Run(kind, func(b *testing.B) {
			root, _, sub := hierarchy(b, kind)
			s := startServer(b, root, &Verifier{})
			chain, key := sub.leaf(b, "vm", &Command{Name: "info"}, kind)
			cfg, err := ClientTLSConfig(chain, key, []*x509.Certificate{root.cert}, "127.0.0.1")
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := dialAndRead(s.addr, cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoopbackTCP is the baseline for BenchmarkHandshake: a plain
// TCP connection on loopback that reads one line, so the cost of TLS and
// verification can be read off as a ratio.
func BenchmarkLoopbackTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, ":|vm|info\n")
			c.Close()
		}
	}()
	defer func() {
		ln.Close()
		<-done
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 16)
		if _, err := io.ReadAtLeast(c, buf, 10); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkVerify measures Verifier.Verify alone on a four-certificate
// Ed25519 chain.
func BenchmarkVerify(b *testing.B) {
	root, _, sub := hierarchy(b, KeyEd25519)
	chain, _ := sub.leaf(b, "vm", nil, KeyEd25519)
	v := &Verifier{Roots: []*x509.Certificate{root.cert}, Revoked: &RevocationList{}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(chain); err != nil {
			b.Fatal(err)
		}
	}
}
