package endpoint

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/sdk/client"
	"github.com/petrel-vmm/petrel/sdk/contentconn"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// tokens records the local_file of every message a client sends.
type tokens struct {
	mu  sync.Mutex
	got []string
}

func (r *tokens) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &recordingStream{ClientStream: s, r: r}, nil
}

type recordingStream struct {
	grpc.ClientStream
	r *tokens
}

func (s *recordingStream) SendMsg(m any) error {
	if v, ok := m.(interface{ GetLocalFile() string }); ok && v.GetLocalFile() != "" {
		s.r.mu.Lock()
		s.r.got = append(s.r.got, v.GetLocalFile())
		s.r.mu.Unlock()
	}
	return s.ClientStream.SendMsg(m)
}

// contentDial opens a content connection to e with chain and key.
func contentDial(t *testing.T, ctx context.Context, e *testEndpoint, chain []*x509.Certificate, key crypto.Signer) (*contentconn.Conn, error) {
	t.Helper()
	cfg, err := client.TLSConfig(chain, key, []*x509.Certificate{e.root}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return contentconn.Dial(ctx, e.srv.Addr().String(), cfg)
}

// closedSoon tells whether the endpoint closes c within a few seconds.
func closedSoon(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestContentConnections: a remote client moves its transfers' content on
// content connections, which the endpoint pairs with the call that
// names them only when both come from the same certificate; a
// connection that ends short of the declared size cuts the call; connections that no call claims are closed,
// and one certificate cannot hold more than its share; an endpoint in
// front of a petreld without a files socket refuses them, and its
// callers stream their content.
func TestContentConnections(t *testing.T) {
	fake, e := startPipedEndpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var rec tokens
	chain, key := e.leaf("recorded")
	c, err := client.DialTLS(e.srv.Addr().String(), chain, key, e.root, "", grpc.WithChainStreamInterceptor(rec.intercept))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pipedTransfers(t, ctx, c, e.dir)
	if len(rec.got) != 3 || fake.piped.Load() != 3 {
		t.Fatalf("calls named content connections %q and %d transfers were piped, want 3 and 3", rec.got, fake.piped.Load())
	}
	for _, tok := range rec.got {
		if len(tok) != contentconn.TokenLen {
			t.Fatalf("token %q", tok)
		}
	}

	// Compressed: in frames of marked chunks, both ways.
	if _, err := c.UploadBlock(ctx, "alice:disk", bytes.NewReader(blockContent), int64(len(blockContent)), true, nil); err != nil {
		t.Fatalf("a compressed upload on a content connection: %v", err)
	}
	out := filepath.Join(e.dir, "gz.img")
	if n, err := c.DownloadBlockFile(ctx, "alice:disk", out, true, nil); err != nil || n != int64(len(blockContent)) {
		t.Fatalf("a compressed download on a content connection: %d bytes, %v", n, err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, blockContent) {
		t.Fatal("a compressed download on a content connection: content differs")
	}
	if len(rec.got) != 5 || fake.piped.Load() != 5 {
		t.Fatalf("calls named content connections %q and %d transfers were piped, want 5 and 5", rec.got, fake.piped.Load())
	}
	// Their checks were the CRC-32C, so petreld was not asked for the
	// SHA-256, until the caller asks for it.
	if fake.hashed.Load() != 0 {
		t.Fatalf("%d block uploads on content connections asked petreld for the SHA-256 unasked", fake.hashed.Load())
	}
	blockSum := sha256.Sum256(blockContent)
	if info, err := c.UploadBlock(ctx, "alice:disk", bytes.NewReader(blockContent), int64(len(blockContent)), false, nil, client.WithSHA256()); err != nil || info.GetSha256() != hex.EncodeToString(blockSum[:]) || fake.hashed.Load() != 1 {
		t.Fatalf("an upload asking for the SHA-256: %v, %v, %d asked", info, err, fake.hashed.Load())
	}

	// An image petreld holds already is answered before its content is
	// read: the client's writes fail, and the answer comes.
	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	bigPath := filepath.Join(e.dir, "big.img")
	if err := os.WriteFile(bigPath, big, 0o644); err != nil {
		t.Fatal(err)
	}
	bigSum := sha256.Sum256(big)
	fake.has.Store(hex.EncodeToString(bigSum[:]))
	if ref, err := c.UploadImageFile(ctx, bigPath, nil); err != nil || ref.GetSha256() != hex.EncodeToString(bigSum[:]) {
		t.Fatalf("an image petreld holds: %v, %v", ref, err)
	}
	if len(rec.got) != 7 || fake.piped.Load() != 7 {
		t.Fatalf("calls named content connections %q and %d transfers were piped, want 7 and 7", rec.got, fake.piped.Load())
	}

	e.srv.content.setTimes(contentTTL, 200*time.Millisecond)
	up := func(tok string) (daemonv1.Daemon_BlockUploadClient, context.CancelFunc) {
		cctx, ccancel := context.WithCancel(ctx)
		stream, err := c.API.BlockUpload(cctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&daemonv1.BlockChunk{Name: "alice:disk", Total: int64(len(blockContent)), LocalFile: tok}); err != nil {
			t.Fatal(err)
		}
		return stream, ccancel
	}
	stream, done := up("../some/file")
	if err := stream.RecvMsg(new(daemonv1.BlockInfo)); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a call naming no token: %v, want InvalidArgument", err)
	}
	done()
	stream, done = up(strings.Repeat("ab", contentconn.TokenLen/2))
	if err := stream.RecvMsg(new(daemonv1.BlockInfo)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a call naming no content connection: %v, want FailedPrecondition", err)
	}
	done()

	otherChain, otherKey := e.leaf("other")
	other, err := contentDial(t, ctx, e, otherChain, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	stream, done = up(other.Token)
	if err := stream.RecvMsg(new(daemonv1.BlockInfo)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a call naming another certificate's connection: %v, want PermissionDenied", err)
	}
	done()
	if !closedSoon(other) {
		t.Fatal("the connection refused to a call stays open")
	}

	cut, err := contentDial(t, ctx, e, chain, key)
	if err != nil {
		t.Fatal(err)
	}
	stream, done = up(cut.Token)
	if _, err := cut.Write(blockContent[:len(blockContent)/2]); err != nil {
		t.Fatal(err)
	}
	// Cut once petreld has the pipe.
	for deadline := time.Now().Add(5 * time.Second); fake.piped.Load() != 8; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the upload did not reach petreld")
		}
	}
	cut.Abort()
	// The endpoint ends the call itself: a connection that ends short
	// of the declared size is a cut one, however it ends.
	if err := stream.RecvMsg(new(daemonv1.BlockInfo)); status.Code(err) != codes.Aborted {
		t.Fatalf("an upload whose content connection was cut: %v, want Aborted", err)
	}
	done()
	for deadline := time.Now().Add(5 * time.Second); fake.cancelled.Load() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("petreld did not see the cut upload's call cancelled")
		}
	}

	e.srv.content.setTimes(200*time.Millisecond, 200*time.Millisecond)
	idle, err := contentDial(t, ctx, e, chain, key)
	if err != nil {
		t.Fatal(err)
	}
	if !closedSoon(idle) {
		t.Fatal("a content connection no call claims stays open")
	}
	e.srv.content.setTimes(time.Minute, 200*time.Millisecond)
	var held []*contentconn.Conn
	for range maxContentPerClient {
		h, err := contentDial(t, ctx, e, chain, key)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		held = append(held, h)
	}
	extra, err := contentDial(t, ctx, e, chain, key)
	if err != nil {
		t.Fatal(err)
	}
	if !closedSoon(extra) {
		t.Fatalf("a certificate holds more than %d waiting content connections", maxContentPerClient)
	}
	e.srv.Close()
	for _, h := range held {
		h.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := h.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("a waiting content connection after Close: %v", err)
		}
	}

	plain := startEndpoint(t, &fakeDaemon{})
	plainChain, plainKey := plain.leaf("web")
	if _, err := contentDial(t, ctx, plain, plainChain, plainKey); err == nil || !strings.Contains(err.Error(), "no application protocol") {
		t.Fatalf("content connection to an endpoint whose petreld has no files socket: %v", err)
	}
}
