package endpoint

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/sdk/contentconn"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/transfer"
)

// Content connections (package sdk/contentconn) carry a remote caller's
// transfer content beside its gRPC call, in TLS records only: the
// endpoint accepts them on its own port, told apart from gRPC's by their
// application protocol, holds each under the token its client wrote on
// it, and hands it to the one transfer call, from the same client
// certificate, that names the token. The content then goes between the
// connection and petreld's pipe (piped.go) without being framed into or
// taken out of messages on the way.

const (
	// contentTTL is how long a content connection waits for its call.
	contentTTL = 30 * time.Second
	// claimWait is how long a call waits for the content connection it
	// names: the client opens it first, but the two race to the
	// endpoint.
	claimWait = 10 * time.Second
	// maxContentConns bounds the content connections waiting for their
	// call, and maxContentPerClient those of one client certificate.
	maxContentConns     = 64
	maxContentPerClient = 8
	// contentBuf is the size of the endpoint's reads and writes of
	// content: a pipe's capacity.
	contentBuf = pipeSize
)

// errLocalFile refuses a request that names a content connection where
// none are taken.
var errLocalFile = status.Error(codes.InvalidArgument, "local_file names a content connection, which this endpoint does not take; send the content in the call")

// contentSlot is one token's content connection, or a call waiting for
// it.
type contentSlot struct {
	conn  net.Conn
	leaf  []byte        // the client certificate it was opened with
	ready chan struct{} // closed once conn is set, or the slot dropped
	done  bool          // ready is closed
	taken bool          // a call has claimed the token
	timer *time.Timer
}

// contentTable holds the content connections waiting for their call.
// Its timers close what waits too long; close closes the rest.
type contentTable struct {
	mu sync.Mutex
	// ttl and wait are contentTTL and claimWait (setTimes, in tests).
	ttl, wait time.Duration
	slots     map[string]*contentSlot
	closed    bool
}

// setTimes changes ttl and wait for what comes next.
func (t *contentTable) setTimes(ttl, wait time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ttl, t.wait = ttl, wait
}

func newContentTable() *contentTable {
	return &contentTable{ttl: contentTTL, wait: claimWait, slots: map[string]*contentSlot{}}
}

// slotLocked returns tok's slot, making it if there is none and room
// for it.
func (t *contentTable) slotLocked(tok string, leaf []byte) (*contentSlot, error) {
	if s, ok := t.slots[tok]; ok {
		return s, nil
	}
	if t.closed {
		return nil, errors.New("the endpoint is stopping")
	}
	if len(t.slots) >= maxContentConns {
		return nil, fmt.Errorf("%d content connections already wait for their call; try again later", maxContentConns)
	}
	if leaf != nil {
		n := 0
		for _, s := range t.slots {
			if bytes.Equal(s.leaf, leaf) {
				n++
			}
		}
		if n >= maxContentPerClient {
			return nil, fmt.Errorf("%d content connections of this certificate already wait for their call", maxContentPerClient)
		}
	}
	s := &contentSlot{ready: make(chan struct{})}
	s.timer = time.AfterFunc(t.ttl, func() { t.drop(tok, s, false) })
	t.slots[tok] = s
	return s, nil
}

// drop removes tok's slot s. With keep (the call that claimed it), it
// returns the slot's connection, nil when it has none (dropped already,
// by its timer or close); otherwise it closes the connection.
func (t *contentTable) drop(tok string, s *contentSlot, keep bool) net.Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dropLocked(tok, s, keep)
}

func (t *contentTable) dropLocked(tok string, s *contentSlot, keep bool) net.Conn {
	if t.slots[tok] == s {
		delete(t.slots, tok)
	}
	s.timer.Stop()
	if !s.done {
		s.done = true
		close(s.ready)
	}
	c := s.conn
	s.conn = nil
	if c != nil && !keep {
		c.Close()
		return nil
	}
	return c
}

// accept reads the token from conn, a content connection just
// handshaken with a client whose TLS state is cs, and holds the
// connection under it. The handshake's deadline still bounds the read.
func (t *contentTable) accept(conn net.Conn, cs tls.ConnectionState) error {
	tok, err := contentconn.ReadToken(conn)
	if err != nil {
		conn.Close()
		return err
	}
	if len(cs.PeerCertificates) == 0 {
		conn.Close()
		return errors.New("content connection without a client certificate")
	}
	leaf := cs.PeerCertificates[0].Raw
	t.mu.Lock()
	defer t.mu.Unlock()
	s, err := t.slotLocked(tok, leaf)
	if err != nil {
		conn.Close()
		return err
	}
	if s.conn != nil || s.done {
		conn.Close()
		return errors.New("content connection token used already")
	}
	s.conn, s.leaf = conn, leaf
	s.done = true
	close(s.ready)
	return nil
}

// claim returns the content connection opened under tok, waiting for it
// a little; the call whose context is ctx must come from the same
// client certificate. The caller owns the connection.
func (t *contentTable) claim(ctx context.Context, tok string) (net.Conn, error) {
	leaf, err := callerLeaf(ctx)
	if err != nil {
		return nil, err
	}
	if !contentconn.ValidToken(tok) {
		return nil, status.Error(codes.InvalidArgument, "local_file is not a content connection's token")
	}
	t.mu.Lock()
	s, err := t.slotLocked(tok, nil)
	if err == nil && s.taken {
		err = errors.New("content connection token used already")
	}
	if err != nil {
		t.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "content connection: %v", err)
	}
	s.taken = true
	wait := time.NewTimer(t.wait)
	t.mu.Unlock()
	defer wait.Stop()
	select {
	case <-s.ready:
	case <-ctx.Done():
	case <-wait.C:
	}
	conn := t.drop(tok, s, true)
	switch {
	case ctx.Err() != nil:
		if conn != nil {
			conn.Close()
		}
		return nil, status.FromContextError(ctx.Err()).Err()
	case conn == nil:
		return nil, status.Error(codes.FailedPrecondition, "content connection: none was opened under the token local_file names, or it expired")
	case !bytes.Equal(s.leaf, leaf):
		conn.Close()
		return nil, status.Error(codes.PermissionDenied, "content connection: opened with another certificate than the call's")
	}
	return conn, nil
}

// callerLeaf returns the client certificate of the call whose context is
// ctx.
func callerLeaf(ctx context.Context) ([]byte, error) {
	p, ok := peer.FromContext(ctx)
	if ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			return info.State.PeerCertificates[0].Raw, nil
		}
	}
	return nil, status.Error(codes.Unauthenticated, "not a TLS connection with a client certificate")
}

// close closes every content connection still waiting; later ones are
// refused.
func (t *contentTable) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for tok, s := range t.slots {
		t.dropLocked(tok, s, false)
	}
}

// contentCall is a claimed content connection for the length of a call:
// it is closed when the call's context ends, which also ends a read or
// write that waits on it.
type contentCall struct {
	conn net.Conn
	stop func() bool
}

func (p *proxy) claimContent(ctx context.Context, tok string) (*contentCall, error) {
	if p.content == nil {
		return nil, errLocalFile
	}
	conn, err := p.content.claim(ctx, tok)
	if err != nil {
		return nil, err
	}
	return &contentCall{conn: conn, stop: context.AfterFunc(ctx, func() { conn.Close() })}, nil
}

func (c *contentCall) close() {
	c.stop()
	c.conn.Close()
}

// copySize copies size bytes from r to put, reading through buf; it
// returns io.ErrUnexpectedEOF when r ends before.
func copySize(put func([]byte) error, r io.Reader, buf []byte, size int64) error {
	for left := size; left > 0; {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), left)])
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		if err := put(buf[:n]); err != nil {
			return err
		}
		left -= int64(n)
	}
	return nil
}

// startContent starts a transfer on a content connection for the call
// whose context is ctx: it claims the connection tok names and passes
// petreld a pipe for the content (which petreld reads when read). end
// closes both.
func (p *proxy) startContent(ctx context.Context, tok string, read bool) (cc *contentCall, t *piped, end func(), err error) {
	cc, err = p.claimContent(ctx, tok)
	if err != nil {
		return nil, nil, nil, err
	}
	t, err = p.startPiped(ctx, read)
	if err == nil && t == nil {
		// No pipe: the call's error, when it ended meanwhile.
		err = status.Error(codes.Unavailable, "petreld takes no pipes on its files socket; try again without a content connection")
		if ctx.Err() != nil {
			err = status.FromContextError(ctx.Err()).Err()
		}
	}
	if err != nil {
		cc.close()
		return nil, nil, nil, err
	}
	return cc, t, func() { t.end(); cc.close() }, nil
}

// errContent wraps a content connection's failure for the caller.
func errContent(err error) error {
	return status.Errorf(codes.Aborted, "content connection: %v", err)
}

// contentUp serves an upload whose content comes on a content
// connection: first, the call's first message, named it, and request
// makes the message naming petreld's pipe in its stead; the content goes
// into the pipe, the caller's checksum and the call's end follow
// through the call.
func contentUp[Req any, Chunk interface {
	*Req
	GetData() []byte
	GetLocalFile() string
}, Resp any](p *proxy, stream grpc.ClientStreamingServer[Req, Resp], open func(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error),
	first Chunk, size int64, framed bool, request func(tok string) *Req) error {
	if len(first.GetData()) > 0 {
		return status.Error(codes.InvalidArgument, "an upload on a content connection carries no data in its messages")
	}
	if size <= 0 && !framed {
		return status.Error(codes.InvalidArgument, "an upload on a content connection declares its size, or comes in frames")
	}
	cc, t, end, err := p.startContent(stream.Context(), first.GetLocalFile(), true)
	if err != nil {
		return err
	}
	defer end()
	// Exactly size bytes, or the frames through the ending one: a
	// connection that ends before is a cut one (TLS does not tell a
	// closed connection from a finished content), and petreld sees the
	// call cancelled, not a short content.
	feed := func(put func([]byte) error) error {
		// Room for a whole frame of a chunk and its header.
		buf := make([]byte, contentBuf+4)
		var err error
		if framed {
			err = transfer.CopyFrames(put, cc.conn, buf)
		} else {
			err = copySize(put, cc.conn, buf[:contentBuf], size)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return status.Error(codes.Aborted, "content connection: ended before the content's end")
		}
		if err != nil {
			return errContent(err)
		}
		return nil
	}
	// The checksum, if any, and the call's end follow on the call, and
	// go on to petreld as they are.
	rest := func(upstream grpc.ClientStreamingClient[Req, Resp]) error {
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return err
			}
			if len(Chunk(m).GetData()) > 0 {
				return status.Error(codes.InvalidArgument, "an upload on a content connection carries no data in its messages")
			}
			if err := upstream.Send(m); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	return upPiped(t, stream, open, request, feed, rest)
}

// contentDown serves a block download whose content goes to the caller
// on a content connection: petreld writes it into a pipe (compressed, in
// frames of marked chunks), and the endpoint on to the connection, which
// it then closes; the first chunk (name and total) and the checksum go through
// the call.
func (p *proxy) contentDown(req *daemonv1.BlockDownloadRequest, stream daemonv1.Daemon_BlockDownloadServer) error {
	if req.GetGzip() && !req.GetMarked() {
		return status.Error(codes.InvalidArgument, "a compressed download on a content connection comes in marked chunks")
	}
	cc, t, end, err := p.startContent(stream.Context(), req.GetLocalFile(), false)
	if err != nil {
		return err
	}
	defer end()
	up := &daemonv1.BlockDownloadRequest{Name: req.GetName(), Crc32C: req.GetCrc32C(), Gzip: req.GetGzip(), Marked: req.GetMarked()}
	return p.downPiped(t, up, stream, func(r *os.File) error {
		// Wrapped so that io.CopyBuffer uses this buffer, not a 32 KiB
		// one of the pipe's WriteTo.
		if _, err := io.CopyBuffer(struct{ io.Writer }{cc.conn}, struct{ io.Reader }{r}, make([]byte, contentBuf)); err != nil {
			return errContent(err)
		}
		// Closing sends TLS's closing alert: the content's end, for the
		// caller, which sends nothing on the connection.
		if err := cc.conn.Close(); err != nil {
			return errContent(err)
		}
		return nil
	})
}
