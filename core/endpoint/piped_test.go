package endpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/sdk/client"
	"github.com/petrel-vmm/petrel/sdk/fdpass"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/transfer"
)

// pipedDaemon is a fake petreld that takes the endpoint's pipes, as
// petreld does on its remote socket: the content of its transfers goes
// through them, and nothing else.
type pipedDaemon struct {
	fakeDaemon
	files *fdpass.Registry
	// piped counts the transfers that came with a pipe, streamed those
	// that carried content in their messages, cancelled the block
	// uploads whose call was cut after their content.
	piped, streamed, cancelled atomic.Int32
	// hashed counts the block uploads that came without skip_sha256, and
	// so ask for the SHA-256 in the answer.
	hashed atomic.Int32
	// has is the SHA-256 of an image it holds already (a string).
	has atomic.Value
}

// take returns the pipe passed under tok.
func (f *pipedDaemon) take(tok string) (*os.File, error) {
	if tok == "" {
		f.streamed.Add(1)
		return nil, status.Error(codes.InvalidArgument, "no pipe")
	}
	f.piped.Add(1)
	return f.files.Take(tok)
}

// end reads what follows piped content: a checksum, then the end. It
// returns the checksum, "sha256:HEX" or "crc32c:HEX".
func end[M interface{ GetSha256() string }](recv func() (M, error)) (string, error) {
	sum := ""
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return sum, nil
		}
		if err != nil {
			return "", err
		}
		if s := m.GetSha256(); s != "" {
			sum = "sha256:" + s
		}
		if c, ok := any(m).(*daemonv1.BlockChunk); ok && c.Crc32C != nil {
			sum = fmt.Sprintf("crc32c:%08x", *c.Crc32C)
		}
	}
}

// checksums are blockContent's checksums as end returns them.
var checksums = func() map[string]bool {
	sum := sha256.Sum256(blockContent)
	return map[string]bool{
		"sha256:" + hex.EncodeToString(sum[:]):                                                      true,
		fmt.Sprintf("crc32c:%08x", crc32.Checksum(blockContent, crc32.MakeTable(crc32.Castagnoli))): true,
	}
}()

// Version says the fake reads marked chunks, as petreld does.
func (f *pipedDaemon) Version(context.Context, *daemonv1.VersionRequest) (*daemonv1.VersionResponse, error) {
	return &daemonv1.VersionResponse{MarkedBlockChunks: true}, nil
}

// receive returns the content of the pipe passed under tok and the
// checksum that follows it on the stream, whose end it reads.
func receive[M interface{ GetSha256() string }](f *pipedDaemon, tok string, framed bool, recv func() (M, error)) ([]byte, string, error) {
	p, err := f.take(tok)
	if err != nil {
		return nil, "", err
	}
	defer p.Close()
	var r io.Reader = p
	if framed {
		r = transfer.NewFramesReader(p)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		return nil, "", err
	}
	sum, err := end(recv)
	return got, sum, err
}

func (f *pipedDaemon) BlockUpload(stream daemonv1.Daemon_BlockUploadServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	got, sum, err := receive(f, first.GetLocalFile(), first.GetGzip(), stream.Recv)
	if status.Code(err) == codes.Canceled {
		f.cancelled.Add(1)
	}
	if err != nil {
		return err
	}
	if !checksums[sum] || !bytes.Equal(got, blockContent) || first.GetTotal() != int64(len(got)) {
		return status.Errorf(codes.InvalidArgument, "received %d bytes and checksum %q, not what was sent", len(got), sum)
	}
	if first.GetSkipSha256() {
		return stream.SendAndClose(&daemonv1.BlockInfo{Name: first.GetName()})
	}
	f.hashed.Add(1)
	digest := sha256.Sum256(got)
	return stream.SendAndClose(&daemonv1.BlockInfo{Name: first.GetName(), Sha256: hex.EncodeToString(digest[:])})
}

func (f *pipedDaemon) UploadImage(stream daemonv1.Daemon_UploadImageServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if sha := first.GetSha256(); sha != "" && sha == f.has.Load() {
		// An image it holds: answered at once, the pipe unread.
		p, err := f.take(first.GetLocalFile())
		if err != nil {
			return err
		}
		p.Close()
		return stream.SendAndClose(&daemonv1.ImageRef{Sha256: sha})
	}
	got, _, err := receive(f, first.GetLocalFile(), false, stream.Recv)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(got)
	return stream.SendAndClose(&daemonv1.ImageRef{Sha256: hex.EncodeToString(sum[:]), Size: int64(len(got))})
}

func (f *pipedDaemon) BlockDownload(req *daemonv1.BlockDownloadRequest, stream daemonv1.Daemon_BlockDownloadServer) error {
	p, err := f.take(req.GetLocalFile())
	if err != nil {
		return err
	}
	defer p.Close()
	gz := req.GetGzip()
	if err := stream.Send(&daemonv1.BlockChunk{Name: req.GetName(), Total: int64(len(blockContent)), Gzip: gz, Marked: gz}); err != nil {
		return err
	}
	if gz {
		mc := transfer.NewMarkedChunks(transfer.FrameSink(p))
		if err := mc.Write(blockContent); err != nil {
			return err
		}
		if err := mc.Close(); err != nil {
			return err
		}
		if err := transfer.EndFrames(p); err != nil {
			return err
		}
	} else if _, err := p.Write(blockContent); err != nil {
		return err
	}
	p.Close()
	if req.GetCrc32C() {
		return stream.Send(&daemonv1.BlockChunk{Crc32C: proto.Uint32(crc32.Checksum(blockContent, crc32.MakeTable(crc32.Castagnoli)))})
	}
	sum := sha256.Sum256(blockContent)
	return stream.Send(&daemonv1.BlockChunk{Sha256: hex.EncodeToString(sum[:])})
}

// pipedTransfers makes a block upload, a block download and an image
// upload through c, each of which must arrive whole.
func pipedTransfers(t *testing.T, ctx context.Context, c *client.Client, dir string) {
	t.Helper()
	if _, err := c.UploadBlock(ctx, "alice:disk", bytes.NewReader(blockContent), int64(len(blockContent)), false, nil); err != nil {
		t.Fatalf("piped upload: %v", err)
	}
	out := filepath.Join(dir, "disk.img")
	if n, err := c.DownloadBlockFile(ctx, "alice:disk", out, false, nil); err != nil || n != int64(len(blockContent)) {
		t.Fatalf("piped download: %d bytes, %v", n, err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, blockContent) {
		t.Fatal("piped download: content differs")
	}
	ref, err := c.UploadImage(ctx, bytes.NewReader(blockContent), int64(len(blockContent)), nil)
	sum := sha256.Sum256(blockContent)
	if err != nil || ref.GetSha256() != hex.EncodeToString(sum[:]) {
		t.Fatalf("piped image upload: %v, %v", ref, err)
	}
}

// startPiped starts an endpoint in front of a pipedDaemon with its files
// socket.
func startPipedEndpoint(t *testing.T) (*pipedDaemon, *testEndpoint) {
	fake := &pipedDaemon{}
	e := startEndpoint(t, fake)
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: fdpass.FilesSocket(e.sock), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	fake.files = fdpass.NewRegistry(lis)
	t.Cleanup(func() { fake.files.Close() })
	return fake, e
}

// TestPipedTransfers: where petreld takes pipes, the endpoint moves the
// content of a block upload, a block download and an image upload
// through them, whole, with the caller's checksum after it, whether the
// caller streams the content in the call or sends it on a content
// connection; a compressed upload in the call is relayed as a stream.
func TestPipedTransfers(t *testing.T) {
	fake, e := startPipedEndpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	chain, key := e.leaf("streamer")
	streamed, err := client.DialTLS(e.srv.Addr().String(), chain, key, e.root, "")
	if err != nil {
		t.Fatal(err)
	}
	defer streamed.Close()
	streamed.StreamContent()
	pipedTransfers(t, ctx, streamed, e.dir)
	if p, s := fake.piped.Load(), fake.streamed.Load(); p != 3 || s != 0 {
		t.Fatalf("%d transfers piped and %d streamed, want 3 and 0", p, s)
	}
	pipedTransfers(t, ctx, e.remote, e.dir)
	if p, s := fake.piped.Load(), fake.streamed.Load(); p != 6 || s != 0 {
		t.Fatalf("%d transfers piped and %d streamed, want 6 and 0", p, s)
	}

	if _, err := streamed.UploadBlock(ctx, "alice:disk", bytes.NewReader(blockContent), int64(len(blockContent)), true, nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a compressed upload reached the piped fake as %v; it is relayed as a stream", err)
	}
	if p, s := fake.piped.Load(), fake.streamed.Load(); p != 6 || s != 1 {
		t.Fatalf("%d transfers piped and %d streamed, want 6 and 1", p, s)
	}
}
