package endpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/sdk/fdpass"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// pipedDaemon is a fake petreld that takes the endpoint's pipes, as
// petreld does on its remote socket: the content of its transfers goes
// through them, and nothing else.
type pipedDaemon struct {
	fakeDaemon
	files *fdpass.Registry
	// piped counts the transfers that came with a pipe, streamed those
	// that carried content in their messages.
	piped, streamed atomic.Int32
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

// end reads what follows piped content: a checksum, then the end.
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
			sum = s
		}
	}
}

// receive returns the content of the pipe passed under tok and the
// checksum that follows it on the stream, whose end it reads.
func receive[M interface{ GetSha256() string }](f *pipedDaemon, tok string, recv func() (M, error)) ([]byte, string, error) {
	p, err := f.take(tok)
	if err != nil {
		return nil, "", err
	}
	defer p.Close()
	got, err := io.ReadAll(p)
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
	got, sum, err := receive(f, first.GetLocalFile(), stream.Recv)
	if err != nil {
		return err
	}
	want := sha256.Sum256(got)
	if sum != hex.EncodeToString(want[:]) || !bytes.Equal(got, blockContent) || first.GetTotal() != int64(len(got)) {
		return status.Errorf(codes.InvalidArgument, "received %d bytes, not what was sent", len(got))
	}
	return stream.SendAndClose(&daemonv1.BlockInfo{Name: first.GetName(), Sha256: sum})
}

func (f *pipedDaemon) UploadImage(stream daemonv1.Daemon_UploadImageServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	got, _, err := receive(f, first.GetLocalFile(), stream.Recv)
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
	if err := stream.Send(&daemonv1.BlockChunk{Name: req.GetName(), Total: int64(len(blockContent))}); err != nil {
		return err
	}
	if _, err := p.Write(blockContent); err != nil {
		return err
	}
	p.Close()
	sum := sha256.Sum256(blockContent)
	return stream.Send(&daemonv1.BlockChunk{Sha256: hex.EncodeToString(sum[:])})
}

// TestPipedTransfers: where petreld takes pipes, the endpoint moves the
// content of a block upload, a block download and an image upload
// through them, whole, with the caller's checksum after it; a caller
// cannot name a passed file itself; a compressed upload is relayed as a
// stream.
func TestPipedTransfers(t *testing.T) {
	fake := &pipedDaemon{}
	e := startEndpoint(t, fake)
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: fdpass.FilesSocket(e.sock), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	fake.files = fdpass.NewRegistry(lis)
	t.Cleanup(func() { fake.files.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := e.remote

	if _, err := c.UploadBlock(ctx, "alice:disk", bytes.NewReader(blockContent), int64(len(blockContent)), false, nil); err != nil {
		t.Fatalf("piped upload: %v", err)
	}
	out := filepath.Join(e.dir, "disk.img")
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
	if p, s := fake.piped.Load(), fake.streamed.Load(); p != 3 || s != 0 {
		t.Fatalf("%d transfers piped and %d streamed, want 3 and 0", p, s)
	}

	stream, err := c.API.BlockUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&daemonv1.BlockChunk{Name: "alice:disk", LocalFile: "0123456789abcdef0123456789abcdef"})
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a caller naming a passed file: %v, want InvalidArgument", err)
	}
	if _, err := c.UploadBlock(ctx, "alice:disk", bytes.NewReader(blockContent), int64(len(blockContent)), true, nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a compressed upload reached the piped fake as %v; it is relayed as a stream", err)
	}
	if p, s := fake.piped.Load(), fake.streamed.Load(); p != 3 || s != 1 {
		t.Fatalf("%d transfers piped and %d streamed, want 3 and 1", p, s)
	}
}
