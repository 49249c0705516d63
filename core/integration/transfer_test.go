package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// transferContent is random bytes followed by repetitive ones, of a size
// that is no multiple of the transfer chunk, so both gzip framings
// (stored and compressed chunks) and a short last chunk are exercised.
func transferContent() []byte {
	data := make([]byte, 5<<20+4321)
	rand.Read(data[:3<<20])
	copy(data[3<<20:], bytes.Repeat([]byte("petrel "), len(data)/7))
	return data
}

// leftovers lists the temporary files of transfers under dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".tmp") || strings.HasSuffix(path, ".part")) {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// failingReader returns its content, then an error instead of the end.
type failingReader struct{ r io.Reader }

func (f failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if errors.Is(err, io.EOF) {
		return n, errors.New("source failed")
	}
	return n, err
}

// TestTransferRoundTrip uploads content into a block device, plain and
// compressed, and downloads it back every way (into a file petreld
// writes itself, streamed plain and compressed), checking the SHA-256 at
// every step; then interrupts uploads (of a block device and of an image)
// halfway and checks that they leave the device unchanged and no
// temporary file behind, in petreld's data directory or beside the
// download.
func TestTransferRoundTrip(t *testing.T) {
	e := newEnvTB(t)
	e.start()
	c, err := client.Dial(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Downloads into a file are written by petreld itself (a passed
	// file) with c, streamed as petrel-endpoint's callers have them with
	// streamed.
	streamed, err := client.Dial(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer streamed.Close()
	streamed.StreamContent()
	ctx := context.Background()
	if _, err := c.API.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:disk", SizeMb: 8}); err != nil {
		t.Fatal(err)
	}
	data := transferContent()
	padded := roundTrip(t, ctx, c, e.dir, []downloader{{"passed file", c, false}, {"stream", streamed, false}, {"gzip stream", streamed, true}})

	// Interrupted uploads: the source fails after most of the content.
	for _, gz := range []bool{false, true} {
		_, err := c.UploadBlock(ctx, "team:disk", failingReader{bytes.NewReader(make([]byte, 4<<20))}, 8<<20, gz, nil)
		if err == nil {
			t.Fatalf("an interrupted upload (gzip %v) succeeded", gz)
		}
	}
	if _, err := c.UploadImage(ctx, failingReader{bytes.NewReader(data)}, int64(len(data))+1, nil); err == nil {
		t.Fatal("an interrupted image upload succeeded")
	}
	// A cancelled upload, cut while the daemon is receiving.
	cctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(data[:2<<20])
		cancel()
		pw.CloseWithError(errors.New("cancelled"))
	}()
	if _, err := c.UploadBlock(cctx, "team:disk", pr, int64(len(data)), false, nil); err == nil {
		t.Fatal("a cancelled upload succeeded")
	}
	waitFor(t, "interrupted transfers to be cleaned up", 10*time.Second, func() bool {
		return len(leftovers(t, e.dataDir)) == 0 && len(leftovers(t, e.dir)) == 0
	})
	out := filepath.Join(e.dir, "after.img")
	waitFor(t, "the device to be free again", 10*time.Second, func() bool {
		_, err := c.DownloadBlockFile(ctx, "team:disk", out, false, nil)
		return err == nil
	})
	if got, _ := os.ReadFile(out); !bytes.Equal(got, padded) {
		t.Fatal("an interrupted upload changed the device")
	}
}

// downloader is a way to download: a client, with --gzip or not.
type downloader struct {
	via  string
	c    *client.Client
	gzip bool
}

// roundTrip uploads transferContent into block device team:disk (8 MB)
// with up, plain and compressed, checking the SHA-256 petreld reports
// (asked for with the compressed upload; the plain one has it only
// where it is the check), and after each upload downloads the device
// every way of downs, checking the content. It returns the content as
// the device holds it (padded to its size).
func roundTrip(t *testing.T, ctx context.Context, up *client.Client, dir string, downs []downloader) []byte {
	t.Helper()
	data := transferContent()
	padded := append(append([]byte(nil), data...), make([]byte, 8<<20-len(data))...)
	sum := sha256.Sum256(data)
	for _, gz := range []bool{false, true} {
		var opts []client.BlockUploadOption
		if gz {
			opts = append(opts, client.WithSHA256())
		}
		info, err := up.UploadBlock(ctx, "team:disk", bytes.NewReader(data), int64(len(data)), gz, nil, opts...)
		if err != nil {
			t.Fatalf("upload (gzip %v): %v", gz, err)
		}
		if got := info.GetSha256(); got != hex.EncodeToString(sum[:]) && (gz || got != "") {
			t.Fatalf("upload (gzip %v): petreld's SHA-256 %q, want %x", gz, got, sum)
		}
		for _, down := range downs {
			out := filepath.Join(dir, "out.img")
			n, err := down.c.DownloadBlockFile(ctx, "team:disk", out, down.gzip, nil)
			if err != nil {
				t.Fatalf("download (%s): %v", down.via, err)
			}
			if got, _ := os.ReadFile(out); n != int64(len(padded)) || !bytes.Equal(got, padded) {
				t.Fatalf("upload gzip %v, download by %s: content differs (%d bytes)", gz, down.via, len(got))
			}
		}
	}
	return padded
}

// TestRemoteTransferRoundTrip moves content through petrel-endpoint into
// a block device and back, plain and compressed, on content connections
// (the client's way) and streamed in the call (a client that does not
// open them), and uploads an image both ways, checking the content and
// its SHA-256 at every step.
func TestRemoteTransferRoundTrip(t *testing.T) {
	r := newRemoteEnv(t)
	c := remoteClient(t, r)
	streamed := remoteClient(t, r)
	streamed.StreamContent()
	local, err := client.Dial(r.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	ctx := context.Background()
	if _, err := local.API.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:disk", SizeMb: 8}); err != nil {
		t.Fatal(err)
	}
	downs := []downloader{{"content connection", c, false}, {"gzip content connection", c, true}, {"stream", streamed, false}, {"gzip stream", streamed, true}}
	for _, up := range []*client.Client{c, streamed} {
		roundTrip(t, ctx, up, r.dir, downs)
	}
	data := transferContent()
	sum := sha256.Sum256(data)
	for _, up := range []*client.Client{c, streamed} {
		ref, err := up.UploadImage(ctx, bytes.NewReader(data), int64(len(data)), nil)
		if err != nil || ref.GetSha256() != hex.EncodeToString(sum[:]) {
			t.Fatalf("remote image upload: %v, %v", ref, err)
		}
	}
}
