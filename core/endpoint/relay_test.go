package endpoint

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	gproto "google.golang.org/protobuf/proto"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// blockContent is what the fake daemon's device holds, and what an
// upload must deliver to it: several chunks and a short one.
var blockContent = func() []byte {
	b := make([]byte, 5<<20+777)
	rand.Read(b)
	return b
}()

func (f *fakeDaemon) BlockUpload(stream daemonv1.Daemon_BlockUploadServer) error {
	f.note(stream.Context())
	var got bytes.Buffer
	var name, sum string
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if m.GetName() != "" {
			name = m.GetName()
		}
		if m.GetSha256() != "" {
			sum = m.GetSha256()
		}
		got.Write(m.GetData())
	}
	want := sha256.Sum256(got.Bytes())
	if sum != hex.EncodeToString(want[:]) || !bytes.Equal(got.Bytes(), blockContent) {
		return status.Errorf(codes.InvalidArgument, "received %d bytes for %s, not what was sent", got.Len(), name)
	}
	return stream.SendAndClose(&daemonv1.BlockInfo{Name: name, Sha256: sum})
}

func (f *fakeDaemon) BlockDownload(req *daemonv1.BlockDownloadRequest, stream daemonv1.Daemon_BlockDownloadServer) error {
	f.note(stream.Context())
	if err := stream.Send(&daemonv1.BlockChunk{Name: req.GetName(), Total: int64(len(blockContent))}); err != nil {
		return err
	}
	for off := 0; off < len(blockContent); off += 1 << 20 {
		if err := stream.Send(&daemonv1.BlockChunk{Data: blockContent[off:min(off+1<<20, len(blockContent))]}); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(blockContent)
	return stream.Send(&daemonv1.BlockChunk{Sha256: hex.EncodeToString(sum[:])})
}

// TestRelayBlockTransfers moves a block device's content both ways
// through the endpoint, whose relay passes the chunks on undecoded, and
// checks it arrives whole at each end; an upload outside the caller's
// domain is still refused on its first message, before petreld hears
// of it.
func TestRelayBlockTransfers(t *testing.T) {
	fake, c, dir := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	info, err := c.UploadBlock(ctx, "alice:disk", bytes.NewReader(blockContent), int64(len(blockContent)), false, nil)
	if err != nil {
		t.Fatalf("upload through the endpoint: %v", err)
	}
	if info.GetName() != "alice:disk" {
		t.Errorf("petreld was sent the device %q", info.GetName())
	}

	out := filepath.Join(dir, "disk.img")
	n, err := c.DownloadBlockFile(ctx, "alice:disk", out, false, nil)
	if err != nil {
		t.Fatalf("download through the endpoint: %v", err)
	}
	got, err := os.ReadFile(out)
	if err != nil || n != int64(len(blockContent)) || !bytes.Equal(got, blockContent) {
		t.Fatalf("download through the endpoint: %d bytes, differing content or %v", n, err)
	}

	fake.mu.Lock()
	calls := len(fake.chains)
	fake.mu.Unlock()
	if _, err := c.UploadBlock(ctx, "bob:disk", bytes.NewReader(blockContent), int64(len(blockContent)), false, nil); status.Code(err) != codes.PermissionDenied {
		t.Errorf("upload outside the domain: %v", err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.chains) != calls {
		t.Error("petreld was called for an upload outside the caller's domain")
	}
}

// TestRawCodec checks that a message read raw is sent on byte for byte,
// and that every other message is plain protobuf.
func TestRawCodec(t *testing.T) {
	msg := &daemonv1.BlockChunk{Name: "alice:disk", Data: blockContent[:1000], Total: 1000}
	enc, err := codec.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := gproto.Marshal(msg)
	if !bytes.Equal(enc.Materialize(), want) {
		t.Fatal("a typed message is not encoded as protobuf")
	}
	raw := &rawMessage{}
	if err := codec.Unmarshal(enc, raw); err != nil {
		t.Fatal(err)
	}
	enc.Free() // as gRPC does once Unmarshal returns: raw keeps its own reference
	again, err := codec.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Materialize(), want) {
		t.Fatal("a raw message was not sent as it came")
	}
	back := &daemonv1.BlockChunk{}
	if err := codec.Unmarshal(again, back); err != nil || !gproto.Equal(back, msg) {
		t.Fatalf("decoded %v, %v", back, err)
	}
	again.Free()
}
