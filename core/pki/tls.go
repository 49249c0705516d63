package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/petrel-vmm/petrel/sdk/client"
)

// ServerTLSConfig returns the endpoint's TLS configuration: TLS 1.3 only,
// serverChain (leaf first) and key as the server's certificate, and a
// client certificate required and checked by v. crypto/tls's own client
// verification is replaced by v because Petrel's chain semantics
// (policies, names, revocation) are not X.509's; the handler gets the
// caller's identity with v.VerifyConn.
func ServerTLSConfig(serverChain []*x509.Certificate, key crypto.Signer, v *Verifier) (*tls.Config, error) {
	cert, err := tlsCertificate(serverChain, key)
	if err != nil {
		return nil, fmt.Errorf("server TLS: %w", err)
	}
	if v == nil || len(v.Roots) == 0 {
		return nil, errors.New("server TLS: a verifier with at least one root CA is required")
	}
	cas := x509.NewCertPool()
	for _, r := range v.Roots {
		cas.AddCert(r)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		ClientCAs:    cas,
		// VerifyConnection rather than VerifyPeerCertificate, because
		// it also runs on resumed sessions, so a certificate revoked or
		// expired since the first handshake is refused on resumption.
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := v.Verify(cs.PeerCertificates)
			return err
		},
	}, nil
}

// VerifyConn returns the identity of the client of a completed server-side
// handshake. The handshake has already checked the chain; checking it
// again here is cheap and lets handlers work from the connection state
// alone.
func (v *Verifier) VerifyConn(cs tls.ConnectionState) (*Identity, error) {
	if !cs.HandshakeComplete {
		return nil, errors.New("verify client: handshake not complete")
	}
	return v.Verify(cs.PeerCertificates)
}

// ClientTLSConfig returns the CLI's TLS configuration: TLS 1.3 only,
// chain (leaf first) and key presented as the client certificate, and
// the server's certificate checked against serverRoots and serverName
// (the host name or IP address dialled, which is required: the check
// cannot rely on the TLS state, which omits IP addresses). The server
// check is done here rather than by crypto/tls because the roots may
// carry Petrel's critical policy extension, which crypto/tls would
// refuse.
func ClientTLSConfig(chain []*x509.Certificate, key crypto.Signer, serverRoots []*x509.Certificate, serverName string) (*tls.Config, error) {
	return client.TLSConfig(chain, key, serverRoots, serverName)
}

// tlsCertificate pairs a chain with its key, checking that they match so
// a mix-up is reported at start-up rather than as a handshake failure.
func tlsCertificate(chain []*x509.Certificate, key crypto.Signer) (tls.Certificate, error) {
	if len(chain) == 0 || chain[0] == nil {
		return tls.Certificate{}, errors.New("no certificate")
	}
	if key == nil {
		return tls.Certificate{}, errors.New("no private key")
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return tls.Certificate{}, fmt.Errorf("private key does not match %s", describe(chain[0]))
	}
	out := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out, nil
}
