package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/petrel-vmm/petrel/cmd/internal/remote"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/sdk/client"
)

// leafValidity is how long each client certificate the agent makes for
// itself lives; a new connection with a new one replaces the old one at
// half of it.
const leafValidity = time.Hour

// rotatingConn is a gRPC connection to petrel-endpoint that renews its
// short-lived client certificate: every rotation dials a new connection
// with a fresh leaf signed by the agent's sub-CA key and closes the one
// before it a rotation later, so calls in flight finish.
type rotatingConn struct {
	dial func() (*grpc.ClientConn, error)

	mu   sync.Mutex
	cur  *grpc.ClientConn
	prev *grpc.ClientConn
}

// newRotatingConn dials through the endpoint at addr with leaves signed by
// the sub-CA chain and key; names in requests are made relative to the
// sub-CA's domain, as the petrel CLI does.
func newRotatingConn(addr string, chain []*x509.Certificate, key crypto.Signer, serverCA *x509.Certificate, serverName string) (*rotatingConn, error) {
	domain, err := remote.DomainOf(chain)
	if err != nil {
		return nil, fmt.Errorf("domain of the sub-CA: %w", err)
	}
	dial := func() (*grpc.ClientConn, error) {
		leafKey, err := pki.GenerateKey("", 0)
		if err != nil {
			return nil, fmt.Errorf("leaf key: %w", err)
		}
		leaf, err := pki.IssueLeaf(chain[0], key, leafKey.Public(), "petrel-kubelet", nil, leafValidity)
		if err != nil {
			return nil, fmt.Errorf("leaf certificate: %w", err)
		}
		cfg, err := client.TLSConfig(append([]*x509.Certificate{leaf}, chain...), leafKey, []*x509.Certificate{serverCA}, serverName)
		if err != nil {
			return nil, fmt.Errorf("TLS configuration: %w", err)
		}
		opts := append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8 << 20))}, remote.Qualifying(domain)...)
		conn, err := grpc.NewClient(addr, opts...)
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", addr, err)
		}
		return conn, nil
	}
	cur, err := dial()
	if err != nil {
		return nil, err
	}
	return &rotatingConn{dial: dial, cur: cur}, nil
}

func (r *rotatingConn) conn() *grpc.ClientConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// Invoke runs a unary call on the current connection.
func (r *rotatingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return r.conn().Invoke(ctx, method, args, reply, opts...)
}

// NewStream opens a stream on the current connection.
func (r *rotatingConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return r.conn().NewStream(ctx, desc, method, opts...)
}

// run rotates every half leaf lifetime until ctx ends, then closes every
// connection.
func (r *rotatingConn) run(ctx context.Context) {
	t := time.NewTicker(leafValidity / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.close()
			return
		case <-t.C:
		}
		next, err := r.dial()
		if err != nil {
			// The current leaf is still valid for half its life; the
			// next tick tries again.
			continue
		}
		r.mu.Lock()
		old := r.prev
		r.prev, r.cur = r.cur, next
		r.mu.Unlock()
		if old != nil {
			_ = old.Close()
		}
	}
}

func (r *rotatingConn) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range []*grpc.ClientConn{r.cur, r.prev} {
		if c != nil {
			_ = c.Close()
		}
	}
}
