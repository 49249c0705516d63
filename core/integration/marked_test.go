package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/transfer"
)

// remoteClient connects to r's endpoint with a root-signed leaf without a
// command restriction, over mutual TLS.
func remoteClient(t testing.TB, r *remoteEnv) *client.Client {
	return dialSigned(t, r, r.file("ca.pem"), r.file("ca.key"), "transfer")
}

// dialSigned connects to r's endpoint over mutual TLS with a new leaf cn
// that the CA in certFile (with its key in keyFile) signs; the client is
// closed when the test ends.
func dialSigned(t testing.TB, r *remoteEnv, certFile, keyFile, cn string) *client.Client {
	t.Helper()
	root, err := pki.ReadCertsFile(r.file("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := pki.ReadCertsFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	signerKey, err := pki.ReadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := pki.NewLeafChain(signer, signerKey, cn, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.DialTLS(r.addr, chain, key, root[0], "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendBlock uploads msgs as they are, as a client of any version would
// send them, and returns petreld's answer.
func sendBlock(ctx context.Context, c *client.Client, msgs []*daemonv1.BlockChunk) (*daemonv1.BlockInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.API.BlockUpload(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break // the answer says why
		}
	}
	return stream.CloseAndRecv()
}

// markedUpload is the upload of data with chunks marked one by one, as
// MarkedChunks marks them, and the SHA-256 sent; change, when not nil,
// alters the chunk messages before they are sent.
func markedUpload(t *testing.T, name string, data []byte, change func([]*daemonv1.BlockChunk) []*daemonv1.BlockChunk) []*daemonv1.BlockChunk {
	t.Helper()
	var chunks []*daemonv1.BlockChunk
	m := transfer.NewMarkedChunks(func(b []byte, compressed bool) error {
		chunks = append(chunks, &daemonv1.BlockChunk{Data: append([]byte(nil), b...), ChunkGzip: compressed})
		return nil
	})
	if err := m.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if m.Raw == 0 || m.Raw == m.Chunks {
		t.Fatalf("%d chunks, %d raw: the content is not mixed", m.Chunks, m.Raw)
	}
	if change != nil {
		chunks = change(chunks)
	}
	sum := sha256.Sum256(data)
	msgs := []*daemonv1.BlockChunk{{Name: name, Gzip: true, Marked: true, Total: int64(len(data))}}
	msgs = append(msgs, chunks...)
	return append(msgs, &daemonv1.BlockChunk{Sha256: hex.EncodeToString(sum[:])})
}

// TestTransferMarkedChunks checks compressed block transfers with chunks
// marked one by one against petreld, over its socket and through
// petrel-endpoint: petreld says it reads them; uploads of mixed raw and
// compressed chunks are stored, and one with a corrupted or truncated
// compressed chunk, an altered raw chunk or a chunk missing is refused
// and leaves the device unchanged (petreld checks the digest); a
// download asked with marked chunks gets raw and compressed chunks that
// read back as the content; and a client from before marked chunks (the
// field unset) still uploads one gzip stream and downloads one.
func TestTransferMarkedChunks(t *testing.T) {
	r := newRemoteEnv(t)
	local, err := client.Dial(r.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	ctx := context.Background()
	if v, err := local.API.Version(ctx, &daemonv1.VersionRequest{}); err != nil || !v.GetMarkedBlockChunks() {
		t.Fatalf("Version: %v, %v; want marked block chunks", v, err)
	}
	if _, err := local.API.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:disk", SizeMb: 8}); err != nil {
		t.Fatal(err)
	}
	data := transferContent()
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	for via, c := range map[string]*client.Client{"socket": local, "endpoint": remoteClient(t, r)} {
		info, err := sendBlock(ctx, c, markedUpload(t, "team:disk", data, nil))
		if err != nil || info.GetSha256() != want {
			t.Fatalf("%s: marked upload: %v, %v", via, info, err)
		}
		refused := map[string]func([]*daemonv1.BlockChunk) []*daemonv1.BlockChunk{
			"compressed chunk corrupted": func(cs []*daemonv1.BlockChunk) []*daemonv1.BlockChunk {
				last := cs[len(cs)-1]
				last.Data[len(last.Data)/2] ^= 0x10
				return cs
			},
			"compressed chunk truncated": func(cs []*daemonv1.BlockChunk) []*daemonv1.BlockChunk {
				last := cs[len(cs)-1]
				last.Data = last.Data[:len(last.Data)-3]
				return cs
			},
			"raw chunk altered": func(cs []*daemonv1.BlockChunk) []*daemonv1.BlockChunk {
				cs[0].Data[100] ^= 1
				return cs
			},
			"raw chunk marked compressed": func(cs []*daemonv1.BlockChunk) []*daemonv1.BlockChunk {
				cs[0].ChunkGzip = true
				return cs
			},
			"chunk missing": func(cs []*daemonv1.BlockChunk) []*daemonv1.BlockChunk {
				return append(cs[:1], cs[2:]...)
			},
		}
		for what, change := range refused {
			// Zeros first, so that a refused upload that changed the
			// device would show.
			if _, err := local.UploadBlock(ctx, "team:disk", bytes.NewReader(make([]byte, 1000)), 1000, false, nil); err != nil {
				t.Fatal(err)
			}
			info, err := sendBlock(ctx, c, markedUpload(t, "team:disk", data, change))
			if err == nil {
				t.Fatalf("%s: upload with the %s stored: %v", via, what, info)
			}
			if code := status.Code(err); code != codes.InvalidArgument && code != codes.DataLoss && code != codes.FailedPrecondition {
				t.Fatalf("%s: upload with the %s: %v", via, what, err)
			}
			got := downloadAll(t, ctx, c, false, false)
			if !bytes.Equal(got[:1000], make([]byte, 1000)) || !bytes.Equal(got[1000:], make([]byte, len(got)-1000)) {
				t.Fatalf("%s: upload with the %s changed the device", via, what)
			}
		}

		// A client from before marked chunks: one gzip stream each way.
		var stream bytes.Buffer
		gz := transfer.NewGzipChunks(func(b []byte) error { stream.Write(b); return nil })
		if err := gz.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := gz.Finish(); err != nil {
			t.Fatal(err)
		}
		old := []*daemonv1.BlockChunk{{Name: "team:disk", Gzip: true, Total: int64(len(data))}}
		for b := stream.Bytes(); len(b) > 0; b = b[min(len(b), 1<<20):] {
			old = append(old, &daemonv1.BlockChunk{Data: b[:min(len(b), 1<<20)]})
		}
		old = append(old, &daemonv1.BlockChunk{Sha256: want})
		if info, err := sendBlock(ctx, c, old); err != nil || info.GetSha256() != want {
			t.Fatalf("%s: upload of one gzip stream: %v, %v", via, info, err)
		}
		for _, marked := range []bool{false, true} {
			got := downloadAll(t, ctx, c, true, marked)
			if !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, len(got)-len(data))) {
				t.Fatalf("%s: compressed download (marked %v): content differs", via, marked)
			}
		}
	}
}

// downloadAll downloads team:disk with the raw API, as a client that
// asks for marked chunks or not, checks that petreld answered as asked,
// that a marked download mixes raw and compressed chunks, and that the
// content matches petreld's SHA-256.
func downloadAll(t *testing.T, ctx context.Context, c *client.Client, gz, marked bool) []byte {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.API.BlockDownload(ctx, &daemonv1.BlockDownloadRequest{Name: "team:disk", Gzip: gz, Marked: marked})
	if err != nil {
		t.Fatal(err)
	}
	head, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if head.GetMarked() != (gz && marked) {
		t.Fatalf("download (gzip %v, marked %v): first chunk marked %v", gz, marked, head.GetMarked())
	}
	var wire bytes.Buffer
	sha := ""
	raw, compressed := 0, 0
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if msg.GetSha256() != "" {
			sha = msg.GetSha256()
		}
		data := msg.GetData()
		switch {
		case len(data) == 0:
		case marked && msg.GetChunkGzip():
			compressed++
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if data, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		case marked:
			raw++
		}
		wire.Write(data)
	}
	content := wire.Bytes()
	if gz && !marked {
		zr, err := gzip.NewReader(&wire)
		if err != nil {
			t.Fatal(err)
		}
		if content, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	if gz && marked && (raw == 0 || compressed == 0) {
		t.Fatalf("marked download: %d raw and %d compressed chunks; want both", raw, compressed)
	}
	if got := sha256.Sum256(content); hex.EncodeToString(got[:]) != sha {
		t.Fatalf("download (gzip %v, marked %v): content does not match petreld's SHA-256", gz, marked)
	}
	return content
}
