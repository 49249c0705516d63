package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/protocodec"
)

// DefaultRemotePort is petrel-endpoint's default port, Albatross's.
const DefaultRemotePort = "1025"

// HandledExtensions are Petrel's critical certificate extensions (the
// policy and command extensions under the project's arc
// 1.3.6.1.4.1.32473.7077, documented in core/pki). A root CA may carry
// the policy extension; crypto/x509 refuses any certificate with a
// critical extension it does not know, so DialTLS marks these as handled
// before checking the server's chain. They must equal core/pki's
// OIDPolicy and OIDCommand, which a test of core/endpoint checks; the SDK
// keeps its own copy because it must not import core.
var HandledExtensions = []asn1.ObjectIdentifier{
	{1, 3, 6, 1, 4, 1, 32473, 7077, 1},
	{1, 3, 6, 1, 4, 1, 32473, 7077, 2},
}

// DialTLS connects to a petrel-endpoint at addr (HOST:PORT, or HOST for
// DefaultRemotePort) over mutual TLS 1.3. chain (leaf first, the root
// may be left out) and key are the client's certificate; the server's
// certificate must lead to serverCA and be valid for serverName (a host
// name or IP address; empty means addr's host). The connection is made
// lazily: the first call reports an unreachable endpoint or a refused
// certificate, the latter as codes.Unauthenticated. opts are added to the
// connection's options (interceptors, for instance).
func DialTLS(addr string, chain []*x509.Certificate, key crypto.Signer, serverCA *x509.Certificate, serverName string, opts ...grpc.DialOption) (*Client, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, DefaultRemotePort)
	}
	if serverName == "" {
		serverName, _, _ = net.SplitHostPort(addr)
	}
	cfg, err := TLSConfig(chain, key, []*x509.Certificate{serverCA}, serverName)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, append(append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8 << 20)),
		grpc.WithInitialWindowSize(8 << 20), grpc.WithInitialConnWindowSize(16 << 20),
		grpc.WithChainUnaryInterceptor(unaryTLSErrors), grpc.WithChainStreamInterceptor(streamTLSErrors)},
		tlsTransferOptions()...), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return &Client{conn: conn, API: daemonv1.NewDaemonClient(conn), content: &remoteContent{addr: addr, cfg: cfg}}, nil
}

// tlsTransferOptions make a TLS connection's transfers (messages of a
// megabyte, hundreds of them a second) cheaper in CPU: protocodec's codec
// and buffer pool, which neither clear every buffer before use nor
// gather a received message into one buffer before decoding it; and no
// read buffer of gRPC's own, since crypto/tls already buffers what it
// decrypts and gRPC's would only add a copy of every byte received. The
// bytes on the wire are the same.
func tlsTransferOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(protocodec.Codec{})),
		experimental.WithBufferPool(protocodec.Pool),
		grpc.WithReadBufferSize(0),
	}
}

// TLSConfig is the client side of the endpoint's mutual TLS 1.3: chain
// (leaf first) and key are presented as the client certificate, and the
// server's certificate is checked as crypto/tls would check it against
// serverCAs and serverName (required: the TLS state omits IP addresses),
// with Petrel's extensions marked as handled, since crypto/tls would
// refuse a root carrying the critical policy extension.
func TLSConfig(chain []*x509.Certificate, key crypto.Signer, serverCAs []*x509.Certificate, serverName string) (*tls.Config, error) {
	if len(chain) == 0 || chain[0] == nil {
		return nil, errors.New("remote: no client certificate")
	}
	if key == nil {
		return nil, errors.New("remote: no private key")
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := key.Public().(equaler); !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, fmt.Errorf("remote: the private key does not match certificate %q", chain[0].Subject.CommonName)
	}
	if len(serverCAs) == 0 || serverCAs[0] == nil {
		return nil, errors.New("remote: no server CA certificate")
	}
	if serverName == "" {
		return nil, errors.New("remote: no server name to check the server's certificate against")
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	roots := x509.NewCertPool()
	for _, ca := range serverCAs {
		roots.AddCert(handled(ca))
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		},
		// crypto/tls would refuse a root carrying Petrel's critical
		// policy extension, so the check is done in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs, roots, serverName)
		},
	}, nil
}

// verifyServer checks the server's chain against roots and the name
// dialled.
func verifyServer(cs tls.ConnectionState, roots *x509.CertPool, serverName string) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("verify server %s: no certificate presented", serverName)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(handled(c))
	}
	leaf := cs.PeerCertificates[0]
	if err := CheckPublicKey(leaf.PublicKey); err != nil {
		return fmt.Errorf("verify server %s: %w", serverName, err)
	}
	if _, err := handled(leaf).Verify(x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("verify server %s: %w", serverName, err)
	}
	return nil
}

// handled returns a copy of c with HandledExtensions removed from its
// unhandled critical extensions.
func handled(c *x509.Certificate) *x509.Certificate {
	cp := *c
	cp.UnhandledCriticalExtensions = nil
	for _, id := range c.UnhandledCriticalExtensions {
		known := false
		for _, h := range HandledExtensions {
			known = known || id.Equal(h)
		}
		if !known {
			cp.UnhandledCriticalExtensions = append(cp.UnhandledCriticalExtensions, id)
		}
	}
	return &cp
}

// CheckPublicKey accepts the key types Petrel accepts everywhere:
// Ed25519, ECDSA P-256 and P-384, RSA of 2048 to 8192 bits.
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("ecdsa key on curve %s: only P-256 and P-384 are accepted", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return fmt.Errorf("rsa key of %d bits: must be 2048 to 8192", n)
		}
		return nil
	}
	return fmt.Errorf("public key of type %T is not accepted", pub)
}

// tlsRefusal turns the transport error of a handshake the endpoint
// aborted into Unauthenticated. TLS cannot carry the server's reason, so
// the message says where to find it.
func tlsRefusal(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return err
	}
	msg := st.Message()
	switch {
	case strings.Contains(msg, "verify server"):
		return status.Errorf(codes.Unauthenticated, "the endpoint's certificate was refused: %s", msg)
	case strings.Contains(msg, "remote error: tls:"):
		return status.Errorf(codes.Unauthenticated, "the endpoint refused the client certificate (expired, not yet valid, revoked, not issued by its CA, or a chain that is too long or claims more than its issuer; the endpoint's log names the reason): %s", msg)
	}
	return err
}

func unaryTLSErrors(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return tlsRefusal(invoker(ctx, method, req, reply, cc, opts...))
}

func streamTLSErrors(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, tlsRefusal(err)
	}
	return tlsStream{s}, nil
}

// tlsStream applies tlsRefusal to a stream's errors.
type tlsStream struct{ grpc.ClientStream }

func (s tlsStream) SendMsg(m any) error { return tlsRefusal(s.ClientStream.SendMsg(m)) }
func (s tlsStream) RecvMsg(m any) error { return tlsRefusal(s.ClientStream.RecvMsg(m)) }
