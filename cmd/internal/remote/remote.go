// Package remote is what Petrel's user interfaces share to act on a host
// through petrel-endpoint with the user's own certificates: the domain a
// certificate chain stands for, and gRPC interceptors that make the names
// of requests absolute in it. The petrel CLI and its web console (petrel
// ui) both use it, so a name means the same in either.
package remote

import (
	"context"
	"crypto/x509"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/name"
)

// DomainOf is the administrative domain a chain file stands for: the
// common names of its sub-CA certificates (self-signed roots left out),
// issuer-most first.
func DomainOf(certs []*x509.Certificate) (name.Path, error) {
	d := name.Root
	for i := len(certs) - 1; i >= 0; i-- {
		c := certs[i]
		if !c.IsCA || string(c.RawIssuer) == string(c.RawSubject) {
			continue
		}
		var err error
		if d, err = d.Child(c.Subject.CommonName); err != nil {
			return name.Path{}, fmt.Errorf("certificate %q: %w", c.Subject.CommonName, err)
		}
	}
	return d, nil
}

// Qualifying returns the dial options that make the names of requests
// absolute in domain on their way out: "web" becomes "alice:web" for
// alice, and ":alice:web" stays as it is.
func Qualifying(domain name.Path) []grpc.DialOption {
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(QualifyUnary(domain)), grpc.WithChainStreamInterceptor(QualifyStream(domain))}
}

// QualifyUnary makes the names of unary requests absolute.
func QualifyUnary(domain name.Path) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if m, ok := req.(proto.Message); ok {
			if _, err := authz.Qualify(method, m, domain); err != nil {
				return err
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// QualifyStream makes the names in the first message of streams
// absolute (the only one that carries a name).
func QualifyStream(domain name.Path) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &qualifyingStream{ClientStream: s, method: method, domain: domain}, nil
	}
}

// qualifyingStream qualifies the first message it sends.
type qualifyingStream struct {
	grpc.ClientStream
	method string
	domain name.Path
	sent   bool
}

func (s *qualifyingStream) SendMsg(m any) error {
	if !s.sent {
		s.sent = true
		if pm, ok := m.(proto.Message); ok {
			if _, err := authz.Qualify(s.method, pm, s.domain); err != nil {
				return err
			}
		}
	}
	return s.ClientStream.SendMsg(m)
}
