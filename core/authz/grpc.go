package authz

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/pki"
)

// ChainMetadata is the gRPC metadata key with which the endpoint passes
// the caller's certificate chain to petreld: DER certificates, standard
// base64, leaf first, separated by commas. Its presence is what makes a
// request remote; petreld verifies the chain itself and never trusts the
// endpoint's judgement. It grants nothing: on the administrators' socket
// the caller is a local administrator anyway and the chain only
// restricts, and on the endpoint's socket (petreld-remote.sock) a request
// without a chain is refused, so the endpoint has its callers' rights and
// no others.
const ChainMetadata = "petrel-client-chain"

// maxChainCerts bounds how many certificates ChainFromMetadata decodes,
// so a hostile value costs little; the verifier's own limit is lower.
const maxChainCerts = 16

// EncodeChain renders certs for ChainMetadata.
func EncodeChain(certs []*x509.Certificate) string {
	parts := make([]string, len(certs))
	for i, c := range certs {
		parts[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	return strings.Join(parts, ",")
}

// DecodeChain parses a ChainMetadata value.
func DecodeChain(s string) ([]*x509.Certificate, error) {
	if s == "" {
		return nil, errors.New("empty certificate chain")
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxChainCerts {
		return nil, fmt.Errorf("%d certificates in the chain, at most %d are read", len(parts), maxChainCerts)
	}
	out := make([]*x509.Certificate, 0, len(parts))
	for i, p := range parts {
		der, err := base64.StdEncoding.DecodeString(p)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// ChainFromMetadata returns the chain a request carries in
// ChainMetadata, or nil when it carries none (a local request).
func ChainFromMetadata(ctx context.Context) ([]*x509.Certificate, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(ChainMetadata)
	switch len(vals) {
	case 0:
		return nil, nil
	case 1:
		return DecodeChain(vals[0])
	}
	return nil, fmt.Errorf("%d %s values; exactly one is expected", len(vals), ChainMetadata)
}

// OutgoingContext returns ctx with id's chain as ChainMetadata and no
// other metadata, for forwarding a request to petreld.
func OutgoingContext(ctx context.Context, id *pki.Identity) context.Context {
	chain := id.Chain
	// The root is the one certificate petreld has already.
	if n := len(chain); n > 1 && chain[n-1].IsCA && string(chain[n-1].RawIssuer) == string(chain[n-1].RawSubject) {
		chain = chain[:n-1]
	}
	return metadata.NewOutgoingContext(ctx, metadata.Pairs(ChainMetadata, EncodeChain(chain)))
}

// Identify returns the caller's verified identity for a call, or nil for
// a local caller who is not subject to authorization; an error refuses
// the call and should be a status error (Unauthenticated).
type Identify func(ctx context.Context) (*pki.Identity, error)

// BeforeDeploy runs after a deploy-like request (IsDeploy) was
// authorized and before it is handled; petreld installs the caller's
// policies there. A returned error refuses the call.
type BeforeDeploy func(ctx context.Context, id *pki.Identity) error

// Recheck reports whether the identity a call was authorized with still
// holds: no certificate of its chain revoked or expired since
// (pki.Verifier.Recheck). An error ends a stream that is still open.
type Recheck func(id *pki.Identity) error

// RecheckInterval is how often an open stream's identity is checked
// again. Together with the revocation list's reload (at most
// pki.DefaultWatchInterval late) it ends a stream within a second of a
// certificate of its chain being revoked or expiring.
const RecheckInterval = 250 * time.Millisecond

// Interceptors returns gRPC server interceptors that authorize every call
// of a caller identify recognises, using the rules of this package, and
// filter what is sent back to it. The handler finds the identity with
// IdentityFrom. before may be nil. A stream's identity is checked again
// with recheck every RecheckInterval while it is open: events, consoles
// and statistics followed for hours must not outlive the certificate
// they were opened with. recheck may be nil only where no stream
// outlives its chain.
func Interceptors(identify Identify, before BeforeDeploy, recheck Recheck) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		id, err := identify(ctx)
		if err != nil {
			return nil, err
		}
		if id == nil {
			return handler(ctx, req)
		}
		if err := AuthorizeMethod(id, info.FullMethod); err != nil {
			return nil, err
		}
		msg, ok := req.(proto.Message)
		if !ok {
			return nil, status.Errorf(codes.Internal, "%s: request is not a protocol buffer", info.FullMethod)
		}
		if err := AuthorizeRequest(id, info.FullMethod, msg); err != nil {
			return nil, err
		}
		ctx = WithIdentity(ctx, id)
		if before != nil && IsDeploy(info.FullMethod) {
			if err := before(ctx, id); err != nil {
				return nil, err
			}
		}
		resp, err := handler(ctx, req)
		if err == nil {
			Filter(id, resp)
		}
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		id, err := identify(ss.Context())
		if err != nil {
			return err
		}
		if id == nil {
			return handler(srv, ss)
		}
		if err := AuthorizeMethod(id, info.FullMethod); err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(WithIdentity(ss.Context(), id))
		defer cancel()
		as := &authStream{ServerStream: ss, id: id, ctx: ctx}
		// The first message is read and checked here rather than when
		// the handler asks for it, so that a refusal reaches the caller
		// with its own status rather than as the handler's read error.
		if first := NewRequest(info.FullMethod); first != nil {
			as.firstErr = ss.RecvMsg(first)
			as.first = first
			if as.firstErr == nil {
				if err := AuthorizeRequest(id, info.FullMethod, first); err != nil {
					return err
				}
			}
		}
		if before != nil && IsDeploy(info.FullMethod) {
			if err := before(as.ctx, id); err != nil {
				return err
			}
		}
		if recheck == nil {
			return handler(srv, as)
		}
		stopped := watchIdentity(ctx, id, recheck, cancel)
		err = handler(srv, as)
		cancel()
		if why := <-stopped; why != nil {
			// Whatever the handler made of its cancelled context, the
			// caller learns why the stream ended.
			return status.Errorf(codes.Unauthenticated, "%v; the stream has ended", why)
		}
		return err
	}
	return unary, stream
}

// watchIdentity checks id with recheck every RecheckInterval until ctx
// ends; when the check fails it calls cancel. The channel it returns
// yields the failure, or nil, once the watch is over.
func watchIdentity(ctx context.Context, id *pki.Identity, recheck Recheck, cancel func()) <-chan error {
	out := make(chan error, 1)
	go func() {
		t := time.NewTicker(RecheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				out <- nil
				return
			case <-t.C:
				if err := recheck(id); err != nil {
					cancel()
					out <- err
					return
				}
			}
		}
	}()
	return out
}

// authStream hands the handler the first message the interceptor read,
// carries the identity in its context, and filters what is sent.
type authStream struct {
	grpc.ServerStream
	id       *pki.Identity
	ctx      context.Context
	first    proto.Message
	firstErr error
}

func (s *authStream) Context() context.Context { return s.ctx }

func (s *authStream) RecvMsg(m any) error {
	if s.first == nil {
		return s.ServerStream.RecvMsg(m)
	}
	first, err := s.first, s.firstErr
	s.first, s.firstErr = nil, nil
	if err != nil {
		return err
	}
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "stream message %T is not a protocol buffer", m)
	}
	proto.Reset(pm)
	proto.Merge(pm, first)
	return nil
}

func (s *authStream) SendMsg(m any) error {
	if !Filter(s.id, m) {
		return nil
	}
	return s.ServerStream.SendMsg(m)
}
