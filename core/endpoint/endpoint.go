// Package endpoint is petrel-endpoint's server: the network-facing,
// unprivileged half of remote management. It terminates TLS 1.3 with
// mutual X.509 authentication against the owner's root CA (package pki),
// authorizes each call with the rules of package authz, and forwards it
// to petreld's socket for forwarded requests (DefaultSocket) together with
// the caller's certificate chain (authz.ChainMetadata), which petreld
// verifies again before acting: the endpoint itself holds no right of its
// own there.
//
// Every method of the daemon API is relayed, streams included: image and
// block uploads stream through without a size limit of their own
// (petreld applies its limits), and console, events and statistics
// follow live. Errors keep their gRPC codes.
package endpoint

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/activation"
	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/sdk/client"
	"github.com/petrel-vmm/petrel/sdk/contentconn"
	"github.com/petrel-vmm/petrel/sdk/fdpass"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/protocodec"
)

// DefaultListen is the default listen address: port 1025 on every
// interface, like Albatross's endpoint.
const DefaultListen = ":1025"

// DefaultSocket is petreld's socket for forwarded requests with its
// default run directory (<run-dir>/petreld-remote.sock). petreld serves a
// request there only with a certificate chain it verifies itself, which
// is what keeps a compromised endpoint from acting as the host's owner:
// the administrators' socket, petreld.sock, would take a request without
// a chain as the owner's.
const DefaultSocket = "/run/petrel/petreld-remote.sock"

// handshakeTimeout bounds a TLS handshake, so that idle connections
// cannot pile up before authenticating.
const handshakeTimeout = 10 * time.Second

// Options configures a Server. CAFile, CertFile, KeyFile and Socket are
// required.
type Options struct {
	// Listen is the TCP address to listen on; empty means DefaultListen.
	Listen string
	// Socket is petreld's unix socket for forwarded requests
	// (DefaultSocket with petreld's default run directory).
	Socket string
	// CAFile holds the root CA certificate(s) client chains must lead to.
	CAFile string
	// CertFile and KeyFile are the endpoint's certificate chain (leaf
	// first) and private key, as `petrel ca init` writes them
	// (server.pem, server.key).
	CertFile string
	KeyFile  string
	// RevocationFile is the revocation list, reloaded while running;
	// empty means no certificate is revoked.
	RevocationFile string
	// MaxChain bounds client chains, root included; 0 means
	// pki.DefaultMaxChain.
	MaxChain int
	// Logger receives refusals and errors; nil discards them.
	Logger hclog.Logger
}

// Server is a running endpoint. New binds the listening socket, so a
// caller that drops privileges does so between New and Serve.
type Server struct {
	log      hclog.Logger
	verifier *pki.Verifier
	watcher  *pki.Watcher
	lis      net.Listener
	grpc     *grpc.Server
	up       *grpc.ClientConn // to petreld
	content  *contentTable

	closeOnce sync.Once
}

// New loads the certificates, starts watching the revocation list,
// listens on opts.Listen and prepares the connection to petreld (made
// on first use, so petreld may start later or restart).
func New(opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	for _, f := range []struct{ v, flag string }{{opts.Socket, "petreld socket"}, {opts.CAFile, "CA certificate"}, {opts.CertFile, "server certificate"}, {opts.KeyFile, "server key"}} {
		if f.v == "" {
			return nil, fmt.Errorf("endpoint: no %s given", f.flag)
		}
	}
	roots, err := pki.ReadCertsFile(opts.CAFile)
	if err != nil {
		return nil, fmt.Errorf("endpoint: CA: %w", err)
	}
	chain, err := pki.ReadCertsFile(opts.CertFile)
	if err != nil {
		return nil, fmt.Errorf("endpoint: server certificate: %w", err)
	}
	key, err := pki.ReadKeyFile(opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("endpoint: server key: %w", err)
	}
	s := &Server{log: log, verifier: &pki.Verifier{Roots: roots, MaxChain: opts.MaxChain}, content: newContentTable()}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if opts.RevocationFile != "" {
		list, err := pki.LoadRevocationList(opts.RevocationFile)
		if err != nil {
			return nil, fmt.Errorf("endpoint: %w", err)
		}
		s.verifier.Revoked = list
		s.watcher = pki.WatchRevocations(opts.RevocationFile, list, 0, func(err error) {
			log.Error("revocation list unreadable; keeping the last good one", "error", err)
		})
	} else {
		log.Warn("no revocation list: certificates cannot be revoked")
	}
	tlsCfg, err := pki.ServerTLSConfig(chain, key, s.verifier)
	if err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	verify := tlsCfg.VerifyConnection
	tlsCfg.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			log.Warn("refused client", "error", err)
		}
		return err
	}
	offerContent(tlsCfg, fdpass.FilesSocket(opts.Socket))
	if s.up, err = dialDaemon(opts.Socket); err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	addr := opts.Listen
	if addr == "" {
		addr = DefaultListen
	}
	if s.lis, err = activation.Listener(addr); err != nil {
		return nil, fmt.Errorf("endpoint: listen: %w", err)
	}
	unary, stream := authz.Interceptors(s.identify, nil, s.recheck)
	s.grpc = grpc.NewServer(
		grpc.Creds(lingeringCreds{credentials.NewTLS(tlsCfg), s.content, log}),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.MaxRecvMsgSize(8<<20), grpc.InitialWindowSize(8<<20), grpc.InitialConnWindowSize(16<<20),
		grpc.ForceServerCodecV2(codec), // transfer content is relayed without decoding it
		// Frames are read into buffers that are not cleared first (gRPC
		// reads each whole into its buffer); and straight from
		// crypto/tls, which buffers what it decrypts: a read buffer of
		// gRPC's own would only copy every byte received once more.
		experimental.BufferPool(protocodec.Pool), grpc.ReadBufferSize(0),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	daemonv1.RegisterDaemonServer(s.grpc, &proxy{up: daemonv1.NewDaemonClient(s.up), files: fdpass.FilesSocket(opts.Socket), content: s.content})
	ok = true
	return s, nil
}

// dialDaemon prepares the connection to petreld's socket (made on first
// use), with the client library's options.
func dialDaemon(socket string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+socket, client.SocketOptions()...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", socket, err)
	}
	return conn, nil
}

// Addr is the address the endpoint listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Serve answers calls until Close.
func (s *Server) Serve() error {
	s.log.Info("petrel-endpoint listening", "address", s.lis.Addr().String())
	if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Close stops serving (letting calls in flight finish for a few
// seconds), stops the revocation watcher and closes the connection to
// petreld. It may be called more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.grpc != nil {
			stopped := make(chan struct{})
			go func() { s.grpc.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(3 * time.Second):
				s.grpc.Stop()
				<-stopped
			}
		} else if s.lis != nil {
			s.lis.Close()
		}
		s.content.close()
		if s.watcher != nil {
			s.watcher.Stop()
		}
		if s.up != nil {
			s.up.Close()
		}
	})
}

// identify returns the verified identity of the caller of a call. The
// handshake has verified the chain already; verifying it again per call
// applies revocations and expiries to long-lived connections too.
func (s *Server) identify(ctx context.Context) (*pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "not a TLS connection")
	}
	id, err := s.verifier.VerifyConn(info.State)
	if err != nil {
		s.log.Warn("refused call", "peer", p.Addr.String(), "error", err)
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

// recheck tells whether the identity of an open stream still holds; a
// failure ends the stream (and, through its context, the call to
// petreld that relays it).
func (s *Server) recheck(id *pki.Identity) error {
	if err := s.verifier.Recheck(id); err != nil {
		s.log.Warn("ended a stream", "domain", id.Domain.String(), "error", err)
		return err
	}
	return nil
}

// refusalDrain bounds how long and how much the endpoint reads from a
// client whose certificate it refused.
const (
	refusalDrainTime  = time.Second
	refusalDrainBytes = 64 << 10
)

// lingeringCreds is the server's TLS credentials with one change: when a
// handshake fails (a refused client certificate, typically), the
// connection is half-closed and what the client already sent is read
// before closing. Closing with unread data makes the kernel send a reset,
// which discards the TLS alert before the client reads it; the client
// would then see "broken pipe" instead of a refusal.
//
// It also takes content connections (content.go) out of gRPC's hands:
// once one is handshaken, its token is read and it waits for its call.
type lingeringCreds struct {
	credentials.TransportCredentials
	content *contentTable
	log     hclog.Logger
}

func (c lingeringCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	// The TLS credentials close the connection on failure; holding that
	// close back lets the refusal drain it first.
	conn := &heldConn{Conn: raw}
	conn.hold.Store(true)
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	conn.hold.Store(false)
	if err != nil {
		if hc, ok := raw.(interface{ CloseWrite() error }); ok {
			_ = hc.CloseWrite()
		}
		_ = raw.SetReadDeadline(time.Now().Add(refusalDrainTime))
		_, _ = io.Copy(io.Discard, io.LimitReader(raw, refusalDrainBytes))
		raw.Close()
		return out, info, err
	}
	if ti, ok := info.(credentials.TLSInfo); ok && ti.State.NegotiatedProtocol == contentconn.Protocol {
		if err := c.content.accept(out, ti.State); err != nil {
			c.log.Warn("refused content connection", "peer", raw.RemoteAddr().String(), "error", err)
		}
		return nil, nil, credentials.ErrConnDispatched
	}
	return out, info, err
}

// heldConn ignores Close while hold is set.
type heldConn struct {
	net.Conn
	hold atomic.Bool
}

func (h *heldConn) Close() error {
	if h.hold.Load() {
		return nil
	}
	return h.Conn.Close()
}

func (c lingeringCreds) Clone() credentials.TransportCredentials {
	return lingeringCreds{c.TransportCredentials.Clone(), c.content, c.log}
}

// offerContent makes cfg offer content connections (package
// sdk/contentconn) beside gRPC, to clients that ask for them while
// petreld's files socket, where their content goes, is there; a client
// refused them (the handshake fails) streams its content in the call.
func offerContent(cfg *tls.Config, files string) {
	plain := cfg.Clone()
	plain.NextProtos = []string{"h2"}
	cfg.NextProtos = []string{"h2", contentconn.Protocol}
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if !slices.Contains(hello.SupportedProtos, contentconn.Protocol) {
			return nil, nil
		}
		if _, err := os.Stat(files); err != nil {
			return plain, nil
		}
		return nil, nil
	}
}
