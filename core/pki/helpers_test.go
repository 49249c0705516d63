package pki

import (
	"bufio"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/policy"
)

func intp(n int) *int { return &n }

// authority is a CA certificate with its key, and the chain from it up
// to (excluding) the root, for building test hierarchies.
type authority struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain []*x509.Certificate // cert first, root excluded; empty for the root
}

func genKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	bits := 0
	if kind == KeyRSA {
		bits = 2048
	}
	k, err := GenerateKey(kind, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newRootCA(t testing.TB, kind string, p *policy.Policy) authority {
	t.Helper()
	key := genKey(t, kind)
	cert, err := NewRoot("test root", key, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	return authority{cert: cert, key: key}
}

// sub makes a sub-CA through the CSR flow the CLI uses.
func (a authority) sub(t testing.TB, cn string, p policy.Policy, kind string) authority {
	t.Helper()
	key := genKey(t, kind)
	der, err := CSR(key, cn, nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := DecodeCSR(EncodeCSR(der))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := SignPolicy(csr, a.cert, a.key, p, 0)
	if err != nil {
		t.Fatalf("SignPolicy(%s): %v", cn, err)
	}
	return authority{cert: cert, key: key, chain: append([]*x509.Certificate{cert}, a.chain...)}
}

// leaf issues a client certificate and returns the chain to present.
func (a authority) leaf(t testing.TB, cn string, cmd *Command, kind string) ([]*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := genKey(t, kind)
	cert, err := IssueLeaf(a.cert, a.key, key.Public(), cn, cmd, 0)
	if err != nil {
		t.Fatalf("IssueLeaf(%s): %v", cn, err)
	}
	return append([]*x509.Certificate{cert}, a.chain...), key
}

// forge signs an arbitrary template with a's key, bypassing this
// package's checks, to make certificates an attacker or a buggy CA could
// produce.
func (a authority) forge(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		s, err := rand.Int(rand.Reader, big.NewInt(1<<62))
		if err != nil {
			t.Fatal(err)
		}
		tmpl.SerialNumber = s.Add(s, big.NewInt(1))
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Minute)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	parent, key := a.cert, a.key
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func policyExt(t testing.TB, p policy.Policy) pkix.Extension {
	t.Helper()
	v, err := MarshalPolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: OIDPolicy, Critical: true, Value: v}
}

func caTmpl(t testing.TB, cn string, p *policy.Policy) *x509.Certificate {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if p != nil {
		tmpl.ExtraExtensions = []pkix.Extension{policyExt(t, *p)}
	}
	return tmpl
}

func leafTmpl(cn string) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
}

// testServer is an endpoint-like mutual-TLS server on loopback that
// answers each verified client with a line describing its identity and
// reports each refused handshake on errs.
type testServer struct {
	addr string
	errs chan error
}

func startServer(t testing.TB, root authority, v *Verifier) *testServer {
	t.Helper()
	srvKey := genKey(t, KeyEd25519)
	srvCert, err := IssueServer(root.cert, root.key, srvKey.Public(), []string{"localhost", "127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v.Roots == nil {
		v.Roots = []*x509.Certificate{root.cert}
	}
	cfg, err := ServerTLSConfig([]*x509.Certificate{srvCert}, srvKey, v)
	if err != nil {
		t.Fatal(err)
	}
	return startServerWithConfig(t, cfg, v)
}

// startServerWithConfig serves cfg on a loopback port until the test
// ends.
func startServerWithConfig(t testing.TB, cfg *tls.Config, v *Verifier) *testServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: ln.Addr().String(), errs: make(chan error, 100)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					s.errs <- err
					return
				}
				id, err := v.VerifyConn(tc.ConnectionState())
				if err != nil {
					s.errs <- err
					return
				}
				cmd := "-"
				if id.Command != nil {
					cmd = id.Command.Name + " " + strings.Join(id.Command.Args, " ")
				}
				fmt.Fprintf(tc, "%s|%s|%s\n", id.Domain, id.Leaf, cmd)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

// call connects with chain and key, trusting serverRoot, and returns the
// server's answer.
func (s *testServer) call(t testing.TB, chain []*x509.Certificate, key crypto.Signer, serverRoot *x509.Certificate) (string, error) {
	t.Helper()
	cfg, err := ClientTLSConfig(chain, key, []*x509.Certificate{serverRoot}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return dialAndRead(s.addr, cfg)
}

func dialAndRead(addr string, cfg *tls.Config) (string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// refused checks that a call failed and that the server refused it for a
// reason containing want.
func (s *testServer) refused(t testing.TB, answer string, callErr error, want string) {
	t.Helper()
	if callErr == nil {
		t.Fatalf("call succeeded with %q, want refusal %q", answer, want)
	}
	select {
	case err := <-s.errs:
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("server refused with %q, want %q", err, want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error spans lines: %q", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("client failed (%v) but the server reported nothing", callErr)
	}
}

func wantErr(t testing.TB, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil, want error containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error spans lines: %q", err)
	}
}
