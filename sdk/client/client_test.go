package client

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// fakeDaemon serves the parts of the daemon API the client's helpers
// use, in memory, and records what it was sent.
type fakeDaemon struct {
	daemonv1.UnimplementedDaemonServer

	mu     sync.Mutex
	images map[string][]byte
	blocks map[string][]byte
	// creates lists the digests each Create named, image then initrd.
	creates [][2]string
	// uploads lists, per image upload, the digest its first message named
	// and how many messages were received.
	uploads []upload
	// refuseCreate and refuseUpload, when set, are every Create's and
	// every image upload's answer.
	refuseCreate, refuseUpload error
	// forget makes the store drop every uploaded image before the next
	// Create, as a collection between them would.
	forget bool
	// badSum makes downloads end with a wrong checksum.
	badSum bool
	// pull is what PullImage sends.
	pull []*daemonv1.PullProgress
	// marked makes the daemon one that reads and sends block chunks
	// marked one by one, and says so in its VersionResponse; without it,
	// it is a daemon from before marked chunks, which ignores the field.
	marked bool
	// markedUploads and markedDownloads count the block transfers made
	// with marked chunks; rawChunks and gzipChunks the chunks they
	// carried, as they are or compressed.
	markedUploads, markedDownloads, rawChunks, gzipChunks int
}

func (f *fakeDaemon) Version(context.Context, *daemonv1.VersionRequest) (*daemonv1.VersionResponse, error) {
	if !f.marked {
		return nil, status.Error(codes.Unimplemented, "method Version not implemented")
	}
	return &daemonv1.VersionResponse{Version: "fake", MarkedBlockChunks: true}, nil
}

// unmark decodes one chunk of a marked transfer.
func (f *fakeDaemon) unmark(msg *daemonv1.BlockChunk) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !msg.GetChunkGzip() {
		if len(msg.GetData()) > 0 {
			f.rawChunks++
		}
		return msg.GetData(), nil
	}
	f.gzipChunks++
	zr, err := gzip.NewReader(bytes.NewReader(msg.GetData()))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "gzip: %v", err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "gzip: %v", err)
	}
	return b, nil
}

type upload struct {
	sha      string
	messages int
}

func newFakeDaemon() *fakeDaemon {
	return &fakeDaemon{images: map[string][]byte{}, blocks: map[string][]byte{}}
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (f *fakeDaemon) UploadImage(stream daemonv1.Daemon_UploadImageServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.uploads = append(f.uploads, upload{sha: first.GetSha256(), messages: 1})
	n := len(f.uploads) - 1
	held, ok := f.images[first.GetSha256()]
	refuse := f.refuseUpload
	f.mu.Unlock()
	if refuse != nil {
		return refuse
	}
	if ok {
		// Answered before the content: the client stops sending.
		return stream.SendAndClose(&daemonv1.ImageRef{Sha256: first.GetSha256(), Size: int64(len(held))})
	}
	data := append([]byte{}, first.GetData()...)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.uploads[n].messages++
		f.mu.Unlock()
		data = append(data, msg.GetData()...)
	}
	sum := hexSum(data)
	if want := first.GetSha256(); want != "" && want != sum {
		return status.Errorf(codes.InvalidArgument, "the image's SHA-256 is %s, not %s", sum, want)
	}
	if size := first.GetSize(); size != 0 && size != int64(len(data)) {
		return status.Errorf(codes.InvalidArgument, "%d bytes received, %d declared", len(data), size)
	}
	f.mu.Lock()
	if !f.forget {
		f.images[sum] = data
	}
	f.mu.Unlock()
	return stream.SendAndClose(&daemonv1.ImageRef{Sha256: sum, Size: int64(len(data))})
}

func (f *fakeDaemon) Create(_ context.Context, req *daemonv1.CreateRequest) (*daemonv1.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, [2]string{req.GetImageSha256(), req.GetInitrdSha256()})
	if f.refuseCreate != nil {
		return nil, f.refuseCreate
	}
	var missing []string
	for _, sha := range []string{req.GetImageSha256(), req.GetInitrdSha256()} {
		if _, ok := f.images[sha]; sha != "" && !ok {
			missing = append(missing, sha)
		}
	}
	if len(missing) > 0 {
		st, err := status.New(codes.InvalidArgument, "unknown digest").WithDetails(&daemonv1.UnknownImage{Sha256: missing})
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	return &daemonv1.VM{Name: req.GetName(), State: "running", ImageSha256: req.GetImageSha256(), InitrdSha256: req.GetInitrdSha256()}, nil
}

func (f *fakeDaemon) BlockUpload(stream daemonv1.Daemon_BlockUploadServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	marked := f.marked && first.GetGzip() && first.GetMarked()
	if marked {
		f.mu.Lock()
		f.markedUploads++
		f.mu.Unlock()
	}
	var wire bytes.Buffer
	sha := ""
	for msg := first; ; {
		data := msg.GetData()
		if marked {
			if data, err = f.unmark(msg); err != nil {
				return err
			}
		}
		wire.Write(data)
		if msg.GetSha256() != "" {
			sha = msg.GetSha256()
		}
		if msg, err = stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
	}
	content := wire.Bytes()
	if first.GetGzip() && !marked {
		zr, err := gzip.NewReader(&wire)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "gzip: %v", err)
		}
		if content, err = io.ReadAll(zr); err != nil {
			return status.Errorf(codes.InvalidArgument, "gzip: %v", err)
		}
	}
	if sha != hexSum(content) {
		return status.Errorf(codes.InvalidArgument, "checksum %q does not match the content", sha)
	}
	f.mu.Lock()
	f.blocks[first.GetName()] = content
	f.mu.Unlock()
	return stream.SendAndClose(&daemonv1.BlockInfo{Name: first.GetName(), Sha256: sha})
}

func (f *fakeDaemon) BlockDownload(req *daemonv1.BlockDownloadRequest, stream daemonv1.Daemon_BlockDownloadServer) error {
	f.mu.Lock()
	content, ok := f.blocks[req.GetName()]
	bad := f.badSum
	f.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "no block device %s", req.GetName())
	}
	marked := f.marked && req.GetGzip() && req.GetMarked()
	if err := stream.Send(&daemonv1.BlockChunk{Name: req.GetName(), Total: int64(len(content)), Gzip: req.GetGzip(), Marked: marked}); err != nil {
		return err
	}
	sum := hexSum(content)
	if bad {
		sum = hexSum(append(content, 0))
	}
	if marked {
		f.mu.Lock()
		f.markedDownloads++
		f.mu.Unlock()
		// Compressible 1000-byte chunks compressed, the others as
		// they are.
		for off := 0; off < len(content); off += 1000 {
			chunk := content[off:min(off+1000, len(content))]
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(chunk)
			zw.Close()
			msg := &daemonv1.BlockChunk{Data: chunk, Gzip: true, Marked: true}
			if b.Len() < len(chunk) {
				msg.Data, msg.ChunkGzip = b.Bytes(), true
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		return stream.Send(&daemonv1.BlockChunk{Sha256: sum})
	}
	wire := content
	if req.GetGzip() {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(content)
		zw.Close()
		wire = b.Bytes()
	}
	for off := 0; off < len(wire); off += 1000 {
		if err := stream.Send(&daemonv1.BlockChunk{Data: wire[off:min(off+1000, len(wire))]}); err != nil {
			return err
		}
	}
	return stream.Send(&daemonv1.BlockChunk{Sha256: sum})
}

func (f *fakeDaemon) PullImage(_ *daemonv1.PullImageRequest, stream daemonv1.Daemon_PullImageServer) error {
	for _, p := range f.pull {
		if err := stream.Send(p); err != nil {
			return err
		}
	}
	return nil
}

// serveFake serves f on a unix socket in a temporary directory and
// returns a Client dialled to it.
func serveFake(t *testing.T, f *fakeDaemon) *Client {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "petreld.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	daemonv1.RegisterDaemonServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	c, err := Dial(socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		srv.Stop()
		<-done
	})
	return c
}

func writeFile(t *testing.T, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestCreateFromFilesUploadsOnlyUnknown: the create names digests; only
// the file petreld says it lacks is uploaded, naming its digest, and the
// create is sent again.
func TestCreateFromFilesUploadsOnlyUnknown(t *testing.T) {
	f := newFakeDaemon()
	c := serveFake(t, f)
	kernel, initrd := []byte("kernel bytes"), bytes.Repeat([]byte("initrd "), 400000)
	f.images[hexSum(kernel)] = kernel
	var reported []string
	vm, err := c.CreateFromFiles(testCtx(t), &daemonv1.CreateRequest{Name: "web"}, writeFile(t, "vmlinuz", kernel), writeFile(t, "initrd", initrd),
		func(path string) func(sent, total int64) {
			return func(sent, total int64) {
				reported = append(reported, fmt.Sprintf("%s %d/%d", filepath.Base(path), sent, total))
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	if vm.GetImageSha256() != hexSum(kernel) || vm.GetInitrdSha256() != hexSum(initrd) {
		t.Fatalf("created %v", vm)
	}
	if len(f.creates) != 2 || len(f.uploads) != 1 || f.uploads[0].sha != hexSum(initrd) {
		t.Fatalf("creates %v, uploads %v: want two creates and one upload of the initrd by digest", f.creates, f.uploads)
	}
	if want := (len(initrd) + ChunkSize - 1) / ChunkSize; f.uploads[0].messages != want {
		t.Fatalf("initrd sent in %d messages, want %d", f.uploads[0].messages, want)
	}
	if last := reported[len(reported)-1]; last != fmt.Sprintf("initrd %d/%d", len(initrd), len(initrd)) {
		t.Fatalf("progress %v does not end at the whole initrd", reported)
	}
}

// TestCreateFromFilesHeld: when petreld holds the image, the create is
// one call and nothing is sent.
func TestCreateFromFilesHeld(t *testing.T) {
	f := newFakeDaemon()
	c := serveFake(t, f)
	img := []byte("unikernel")
	f.images[hexSum(img)] = img
	if _, err := c.CreateFromFiles(testCtx(t), &daemonv1.CreateRequest{Name: "web"}, writeFile(t, "web.hvt", img), "", nil); err != nil {
		t.Fatal(err)
	}
	if len(f.creates) != 1 || len(f.uploads) != 0 {
		t.Fatalf("%d creates, %d uploads for an image petreld holds", len(f.creates), len(f.uploads))
	}
}

// TestCreateFromFilesRefusals: petreld's refusals reach the caller with
// their status code, which the CLI turns into its exit code: of the
// create, and of an upload it needed.
func TestCreateFromFilesRefusals(t *testing.T) {
	f := newFakeDaemon()
	c := serveFake(t, f)
	f.refuseCreate = status.Error(codes.ResourceExhausted, "policy of team: 2 VMs")
	_, err := c.CreateFromFiles(testCtx(t), &daemonv1.CreateRequest{Name: "web"}, writeFile(t, "web.hvt", []byte("x")), "", nil)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("refused create: %v", err)
	}

	// An image whose upload petreld refuses: that refusal, as it is.
	f = newFakeDaemon()
	c = serveFake(t, f)
	f.refuseUpload = status.Error(codes.ResourceExhausted, "upload refused: image storage of team")
	_, err = c.CreateFromFiles(testCtx(t), &daemonv1.CreateRequest{Name: "web"}, writeFile(t, "web.hvt", []byte("x")), "", nil)
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || st.Message() != "upload refused: image storage of team" {
		t.Fatalf("refused upload: %v", err)
	}
	if len(f.creates) != 1 {
		t.Fatalf("%d creates after a refused upload, want 1", len(f.creates))
	}
}

// TestCreateFromFilesBounded: images that vanish again after each upload
// (collected before the create) end the loop after createAttempts
// creates, with petreld's refusal; a digest the create did not send ends
// it at once.
func TestCreateFromFilesBounded(t *testing.T) {
	f := newFakeDaemon()
	c := serveFake(t, f)
	f.forget = true
	img := []byte("collected every time")
	_, err := c.CreateFromFiles(testCtx(t), &daemonv1.CreateRequest{Name: "web"}, writeFile(t, "web.hvt", img), "", nil)
	if got := UnknownImages(err); len(got) != 1 || got[0] != hexSum(img) {
		t.Fatalf("after images kept vanishing: %v", err)
	}
	if len(f.creates) != createAttempts || len(f.uploads) != createAttempts-1 {
		t.Fatalf("%d creates and %d uploads, want %d and %d", len(f.creates), len(f.uploads), createAttempts, createAttempts-1)
	}

	f = newFakeDaemon()
	c = serveFake(t, f)
	other := hexSum([]byte("some other image"))
	_, err = c.CreateFromFiles(testCtx(t), &daemonv1.CreateRequest{Name: "web", ImageSha256: other}, "", "", nil)
	if got := UnknownImages(err); len(got) != 1 || got[0] != other || len(f.creates) != 1 || len(f.uploads) != 0 {
		t.Fatalf("a create by a digest the client has no file for: %v after %d creates, %d uploads", err, len(f.creates), len(f.uploads))
	}
}

// TestUploadImageAnsweredEarly: when petreld answers after the first
// message (it holds the digest named), the rest of the file is not sent,
// and progress still ends at the whole file.
func TestUploadImageAnsweredEarly(t *testing.T) {
	f := newFakeDaemon()
	c := serveFake(t, f)
	img := bytes.Repeat([]byte{7}, 3*ChunkSize+5)
	f.images[hexSum(img)] = img
	var last [2]int64
	ref, err := c.UploadImageFile(testCtx(t), writeFile(t, "big.hvt", img), func(sent, total int64) { last = [2]int64{sent, total} })
	if err != nil || ref.GetSha256() != hexSum(img) {
		t.Fatalf("upload of a held image: %v %v", ref, err)
	}
	if len(f.uploads) != 1 || f.uploads[0].messages != 1 {
		t.Fatalf("uploads %v: the content was sent although petreld had it", f.uploads)
	}
	if last != [2]int64{int64(len(img)), int64(len(img))} {
		t.Fatalf("progress ended at %v", last)
	}
	if _, err := c.UploadImageFile(testCtx(t), t.TempDir(), nil); err == nil {
		t.Fatal("upload of a directory")
	}
}

// failingReader returns n bytes, then err.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(r.n, len(p))
	r.n -= k
	return k, nil
}

// TestUploadImageReadError: a read error ends the upload with it, and
// petreld stores nothing.
func TestUploadImageReadError(t *testing.T) {
	f := newFakeDaemon()
	c := serveFake(t, f)
	bad := errors.New("disk read error")
	_, err := c.UploadImage(testCtx(t), &failingReader{n: ChunkSize + 10, err: bad}, -1, nil)
	if !errors.Is(err, bad) {
		t.Fatalf("upload from a failing reader: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.images) != 0 {
		t.Fatalf("an interrupted upload was stored: %d images", len(f.images))
	}
}

// recordingAPI is a DaemonClient whose image uploads go to a
// recordingUpload.
type recordingAPI struct {
	daemonv1.DaemonClient
	up *recordingUpload
}

func (a recordingAPI) UploadImage(ctx context.Context, _ ...grpc.CallOption) (daemonv1.Daemon_UploadImageClient, error) {
	a.up.ctx = ctx
	return a.up, nil
}

// recordingUpload records what is done to an image upload stream.
type recordingUpload struct {
	grpc.ClientStream
	ctx        context.Context
	sent       int
	halfClosed bool
}

func (u *recordingUpload) Send(*daemonv1.ImageChunk) error { u.sent++; return nil }
func (u *recordingUpload) CloseSend() error                { u.halfClosed = true; return nil }
func (u *recordingUpload) CloseAndRecv() (*daemonv1.ImageRef, error) {
	u.halfClosed = true
	return &daemonv1.ImageRef{}, nil
}

// TestUploadImageAbortedOnReadError: an upload whose reader fails is
// aborted (its context cancelled), never half-closed, which petreld would
// take for the end of a complete image.
func TestUploadImageAbortedOnReadError(t *testing.T) {
	up := &recordingUpload{}
	c := &Client{API: recordingAPI{up: up}}
	bad := errors.New("disk read error")
	if _, err := c.UploadImage(context.Background(), &failingReader{n: ChunkSize + 10, err: bad}, -1, nil); !errors.Is(err, bad) {
		t.Fatalf("upload from a failing reader: %v", err)
	}
	if up.halfClosed || up.sent != 2 || up.ctx.Err() == nil {
		t.Fatalf("after a read error: half-closed %v, %d messages sent, context %v", up.halfClosed, up.sent, up.ctx.Err())
	}
}

// TestBlockRoundTrip: content uploaded to a block device, plain or
// compressed, comes back the same, plain or compressed; an empty upload
// still names its device.
func TestBlockRoundTrip(t *testing.T) {
	for _, marked := range []bool{false, true} {
		t.Run(fmt.Sprintf("marked=%v", marked), func(t *testing.T) { testBlockRoundTrip(t, marked) })
	}
}

// testBlockRoundTrip runs TestBlockRoundTrip against a daemon that reads
// marked chunks or one from before them, with content whose chunks are
// compressible and incompressible in turn, and checks that marked chunks
// are sent only to the daemon that reads them.
func testBlockRoundTrip(t *testing.T, marked bool) {
	f := newFakeDaemon()
	f.marked = marked
	c := serveFake(t, f)
	ctx := testCtx(t)
	content := make([]byte, 4<<20+123)
	for i := range content {
		content[i] = byte(i * 7 / 1000)
	}
	rand.New(rand.NewSource(1)).Read(content[1<<20 : 2<<20])
	rand.New(rand.NewSource(2)).Read(content[3<<20 : 4<<20])
	for _, up := range []bool{false, true} {
		for _, down := range []bool{false, true} {
			name := fmt.Sprintf("team:disk-%v-%v", up, down)
			var done int64
			info, err := c.UploadBlockFile(ctx, name, writeFile(t, "content", content), up, func(d, total int64) {
				if d < done || total != int64(len(content)) {
					t.Errorf("progress %d/%d after %d", d, total, done)
				}
				done = d
			})
			if err != nil || info.GetSha256() != hexSum(content) || done != int64(len(content)) {
				t.Fatalf("upload (gzip %v): %v %v, progress at %d", up, info, err, done)
			}
			out := filepath.Join(t.TempDir(), "out")
			n, err := c.DownloadBlockFile(ctx, name, out, down, nil)
			if err != nil || n != int64(len(content)) {
				t.Fatalf("download (gzip %v): %d bytes, %v", down, n, err)
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, content) {
				t.Fatalf("content uploaded with gzip %v, downloaded with gzip %v differs", up, down)
			}
		}
	}
	for _, gz := range []bool{false, true} {
		name := fmt.Sprintf("blank-%v", gz)
		if _, err := c.UploadBlock(ctx, name, bytes.NewReader(nil), 0, gz, nil); err != nil {
			t.Fatalf("empty upload (gzip %v): %v", gz, err)
		}
		if got, ok := f.blocks[name]; !ok || len(got) != 0 {
			t.Fatalf("empty upload (gzip %v): %q %v", gz, got, ok)
		}
	}
	// Two compressed uploads and downloads each, the last upload empty.
	want := [2]int{0, 0}
	if marked {
		want = [2]int{3, 2}
	}
	if f.markedUploads != want[0] || f.markedDownloads != want[1] {
		t.Fatalf("marked uploads and downloads: %d and %d, want %v", f.markedUploads, f.markedDownloads, want)
	}
	if marked && (f.rawChunks == 0 || f.gzipChunks == 0) {
		t.Fatalf("marked transfers of mixed content carried %d raw and %d compressed chunks", f.rawChunks, f.gzipChunks)
	}
}

// TestDownloadChecksumMismatch: content that does not match petreld's
// checksum is not written, and no partial file is left; a missing device
// is NotFound.
func TestDownloadChecksumMismatch(t *testing.T) {
	f := newFakeDaemon()
	c := serveFake(t, f)
	f.blocks["disk"] = []byte("content")
	f.badSum = true
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	if _, err := c.DownloadBlockFile(testCtx(t), "disk", out, false, nil); err == nil || !bytes.Contains([]byte(err.Error()), []byte("checksum mismatch")) {
		t.Fatalf("download with a wrong checksum: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
	if _, err := c.DownloadBlockFile(testCtx(t), "nodisk", out, false, nil); status.Code(err) != codes.NotFound {
		t.Fatalf("download of a missing device: %v", err)
	}
}

// TestPullImage: progress is reported until the image arrives; a pull
// petreld ends without an image is an error.
func TestPullImage(t *testing.T) {
	f := newFakeDaemon()
	c := serveFake(t, f)
	f.pull = []*daemonv1.PullProgress{{Done: 10, Total: 30}, {Done: 30, Total: 30}, {Image: &daemonv1.PulledImage{Sha256: "ab"}}}
	var seen []int64
	img, err := c.PullImage(testCtx(t), "registry.example.org/web:1", func(done, _ int64) { seen = append(seen, done) })
	if err != nil || img.GetSha256() != "ab" || fmt.Sprint(seen) != "[10 30 0]" {
		t.Fatalf("pull: %v %v, progress %v", img, err, seen)
	}
	f.pull = f.pull[:2]
	if _, err := c.PullImage(testCtx(t), "registry.example.org/web:1", nil); err == nil {
		t.Fatal("a pull without a result succeeded")
	}
}

// TestNoDaemon: a client whose socket has no daemon fails its first call
// as Unavailable, which the CLI reports as petreld not running.
func TestNoDaemon(t *testing.T) {
	c, err := Dial(filepath.Join(t.TempDir(), "none.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.API.Version(testCtx(t), &daemonv1.VersionRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("call without a daemon: %v", err)
	}
}

// TestTLSRefusal: a handshake the endpoint aborted, or a server
// certificate the client refused, is Unauthenticated (the CLI's
// authentication exit code), saying which side refused; other errors
// pass unchanged.
func TestTLSRefusal(t *testing.T) {
	for _, c := range []struct {
		in   error
		code codes.Code
		says string
	}{
		{status.Error(codes.Unavailable, "connection error: desc = \"transport: authentication handshake failed: remote error: tls: bad certificate\""), codes.Unauthenticated, "refused the client certificate"},
		{status.Error(codes.Unavailable, "transport: authentication handshake failed: verify server petrel.example.org: x509: certificate signed by unknown authority"), codes.Unauthenticated, "endpoint's certificate was refused"},
		{status.Error(codes.Unavailable, "connection refused"), codes.Unavailable, "connection refused"},
		{status.Error(codes.PermissionDenied, "remote error: tls: not really"), codes.PermissionDenied, "not really"},
	} {
		got := tlsRefusal(c.in)
		st, _ := status.FromError(got)
		if st.Code() != c.code || !bytes.Contains([]byte(st.Message()), []byte(c.says)) {
			t.Errorf("tlsRefusal(%v) = %v, want %s saying %q", c.in, got, c.code, c.says)
		}
	}
	plain := errors.New("not a status")
	if tlsRefusal(plain) != plain {
		t.Error("a non-status error was changed")
	}
}
