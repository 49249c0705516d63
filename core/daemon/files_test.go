package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/sdk/client"
	"github.com/petrel-vmm/petrel/sdk/fdpass"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/transfer"
)

// countingAPI is a daemon client that counts the content bytes its
// transfers carry in messages, in either direction.
type countingAPI struct {
	daemonv1.DaemonClient
	bytes *atomic.Int64
}

type countingUpload[Req, Resp any] struct {
	grpc.ClientStreamingClient[Req, Resp]
	bytes *atomic.Int64
	size  func(*Req) int
}

func (s countingUpload[Req, Resp]) Send(m *Req) error {
	s.bytes.Add(int64(s.size(m)))
	return s.ClientStreamingClient.Send(m)
}

type countingDownload struct {
	grpc.ServerStreamingClient[daemonv1.BlockChunk]
	bytes *atomic.Int64
}

func (s countingDownload) Recv() (*daemonv1.BlockChunk, error) {
	m, err := s.ServerStreamingClient.Recv()
	if err == nil {
		s.bytes.Add(int64(len(m.GetData())))
	}
	return m, err
}

func (c countingAPI) BlockUpload(ctx context.Context, opts ...grpc.CallOption) (grpc.ClientStreamingClient[daemonv1.BlockChunk, daemonv1.BlockInfo], error) {
	s, err := c.DaemonClient.BlockUpload(ctx, opts...)
	return countingUpload[daemonv1.BlockChunk, daemonv1.BlockInfo]{s, c.bytes, func(m *daemonv1.BlockChunk) int { return len(m.GetData()) }}, err
}

func (c countingAPI) UploadImage(ctx context.Context, opts ...grpc.CallOption) (grpc.ClientStreamingClient[daemonv1.ImageChunk, daemonv1.ImageRef], error) {
	s, err := c.DaemonClient.UploadImage(ctx, opts...)
	return countingUpload[daemonv1.ImageChunk, daemonv1.ImageRef]{s, c.bytes, func(m *daemonv1.ImageChunk) int { return len(m.GetData()) }}, err
}

func (c countingAPI) BlockDownload(ctx context.Context, in *daemonv1.BlockDownloadRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[daemonv1.BlockChunk], error) {
	s, err := c.DaemonClient.BlockDownload(ctx, in, opts...)
	return countingDownload{s, c.bytes}, err
}

// writeRandom writes n random bytes to a new file in dir and returns its
// path and content.
func writeRandom(t *testing.T, dir string, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	path := filepath.Join(dir, "src.img")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// TestPassedFiles: a client on petreld's host hands it the files of its
// transfers, and no content travels in messages: a block upload and
// download and an image upload arrive whole, with petreld's SHA-256, and
// progress is followed through the shared offset.
func TestPassedFiles(t *testing.T) {
	td := startDaemon(t, nil)
	ctx := ctxT(t)
	c, err := client.Dial(td.d.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var moved atomic.Int64
	c.API = countingAPI{c.API, &moved}
	if _, err := c.API.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:disk", SizeMb: 4}); err != nil {
		t.Fatal(err)
	}
	src, data := writeRandom(t, td.dir, 3<<20+123)

	// The digest only when asked for: a passed file needs no check.
	if info, err := c.UploadBlockFile(ctx, "team:disk", src, false, nil, client.WithSHA256()); err != nil || info.GetSha256() != digest(data) {
		t.Fatalf("upload with its SHA-256: %v, petreld's SHA-256 %q, want %s", err, info.GetSha256(), digest(data))
	}
	var last, lastTotal int64
	info, err := c.UploadBlockFile(ctx, "team:disk", src, true, func(done, total int64) { last, lastTotal = done, total })
	if err != nil {
		t.Fatal(err)
	}
	if info.GetSha256() != "" {
		t.Fatalf("upload: petreld computed a SHA-256 (%s) it was not asked for", info.GetSha256())
	}
	if last != int64(len(data)) || lastTotal != int64(len(data)) {
		t.Fatalf("upload: last progress %d of %d, want %d of %d", last, lastTotal, len(data), len(data))
	}

	out := filepath.Join(t.TempDir(), "out.img")
	n, err := c.DownloadBlockFile(ctx, "team:disk", out, true, func(done, total int64) { last, lastTotal = done, total })
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), data...), make([]byte, 4<<20-len(data))...)
	if got, _ := os.ReadFile(out); n != 4<<20 || !bytes.Equal(got, want) {
		t.Fatalf("download: %d bytes, content equal %v", n, bytes.Equal(got, want))
	}
	if last != 4<<20 || lastTotal != 4<<20 {
		t.Fatalf("download: last progress %d of %d, want the device's %d", last, lastTotal, 4<<20)
	}

	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ref, err := c.UploadImage(ctx, f, int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ref.GetSha256() != digest(data) {
		t.Fatalf("image: petreld's SHA-256 %s, want %s", ref.GetSha256(), digest(data))
	}
	stored, err := td.d.store.ImagePath(ref.GetSha256())
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(stored); !bytes.Equal(got, data) {
		t.Fatal("image: the stored image differs from the file")
	}
	if moved.Load() != 0 {
		t.Fatalf("%d content bytes travelled in messages; the files were passed", moved.Load())
	}

	// The same transfers, streamed, for comparison: the content is in
	// the messages this time.
	s, err := client.Dial(td.d.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.StreamContent()
	s.API = countingAPI{s.API, &moved}
	if _, err := s.UploadBlockFile(ctx, "team:disk", src, false, nil); err != nil {
		t.Fatal(err)
	}
	if moved.Load() != int64(len(data)) {
		t.Fatalf("a streamed upload carried %d bytes in messages, want %d", moved.Load(), len(data))
	}
}

// passFile opens path with flag and passes it on td's files socket.
func passFile(t *testing.T, td *testDaemon, path string, flag int) string {
	t.Helper()
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return passOpen(t, td, f)
}

func passOpen(t *testing.T, td *testDaemon, f *os.File) string {
	t.Helper()
	tok, err := fdpass.Send(context.Background(), fdpass.FilesSocket(td.d.Socket()), f)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// passRemote passes f on the files socket beside td's endpoint socket,
// as petrel-endpoint passes its pipes.
func passRemote(t *testing.T, td *testDaemon, f *os.File) string {
	t.Helper()
	tok, err := fdpass.Send(context.Background(), fdpass.FilesSocket(td.d.RemoteSocket()), f)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// remotePipe makes a pipe and passes one end to petreld's remote files
// socket, as petrel-endpoint does: the read end when petreld reads the
// content. It returns the other end, closed at the test's end, and the
// token.
func remotePipe(t *testing.T, td *testDaemon, petreldReads bool) (*os.File, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	theirs, mine := w, r
	if petreldReads {
		theirs, mine = r, w
	}
	t.Cleanup(func() { mine.Close() })
	tok := passRemote(t, td, theirs)
	theirs.Close()
	return mine, tok
}

// uploadPassed uploads to device name from the file passed under tok,
// declaring total bytes.
func uploadPassed(ctx context.Context, c daemonv1.DaemonClient, name, tok string, total int64) error {
	stream, err := c.BlockUpload(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&daemonv1.BlockChunk{Name: name, Total: total, LocalFile: tok}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

// downloadPassed downloads device name into the file passed under tok.
func downloadPassed(ctx context.Context, c daemonv1.DaemonClient, name, tok string) error {
	stream, err := c.BlockDownload(ctx, &daemonv1.BlockDownloadRequest{Name: name, LocalFile: tok})
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// TestPassedFileRefusals: what is not a regular file open the right way,
// a size that is not what the upload declares, a token used twice or
// never given, a local file's token sent through the endpoint's socket
// and a regular file passed beside it are all refused as the caller's
// mistakes, and leave the device as it was.
func TestPassedFileRefusals(t *testing.T) {
	td, root := startTrusting(t)
	ctx := ctxT(t)
	if _, err := td.admin.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:disk", SizeMb: 1}); err != nil {
		t.Fatal(err)
	}
	src, data := writeRandom(t, td.dir, 1000)
	good := passFile(t, td, src, os.O_RDONLY)
	if err := uploadPassed(ctx, td.admin, "team:disk", good, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	dir, err := os.Open(td.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	one := 1
	teamCtx, _ := root.sub(t, "team", policy.Policy{VMs: 1, MemoryMB: 64, ImagesMB: &one}).as(t, ctx, "team-leaf")
	for _, c := range []struct {
		what string
		call func() error
		code codes.Code
		msg  string
	}{
		{"an upload from a pipe", func() error {
			return uploadPassed(ctx, td.admin, "team:disk", passOpen(t, td, pr), 0)
		}, codes.InvalidArgument, "not a regular file"},
		{"an upload from a directory", func() error {
			return uploadPassed(ctx, td.admin, "team:disk", passOpen(t, td, dir), 0)
		}, codes.InvalidArgument, "not a regular file"},
		{"an upload from a write-only file", func() error {
			return uploadPassed(ctx, td.admin, "team:disk", passFile(t, td, src, os.O_WRONLY), int64(len(data)))
		}, codes.InvalidArgument, "not open for reading"},
		{"an upload declaring another size", func() error {
			return uploadPassed(ctx, td.admin, "team:disk", passFile(t, td, src, os.O_RDONLY), int64(len(data))+1)
		}, codes.InvalidArgument, "not the 1001"},
		{"a token used twice", func() error {
			return uploadPassed(ctx, td.admin, "team:disk", good, int64(len(data)))
		}, codes.InvalidArgument, "no file was passed"},
		{"a token never given", func() error {
			return uploadPassed(ctx, td.admin, "team:disk", "0123456789abcdef0123456789abcdef", int64(len(data)))
		}, codes.InvalidArgument, "no file was passed"},
		{"a download into a read-only file", func() error {
			return downloadPassed(ctx, td.admin, "team:disk", passFile(t, td, src, os.O_RDONLY))
		}, codes.InvalidArgument, "not open for writing"},
		{"a local file's token through the endpoint's socket", func() error {
			return uploadPassed(teamCtx, td.remote, "team:disk", passFile(t, td, src, os.O_RDONLY), int64(len(data)))
		}, codes.InvalidArgument, "no file was passed"},
		{"a local file's token for a download through the endpoint's socket", func() error {
			return downloadPassed(teamCtx, td.remote, "team:disk", passFile(t, td, filepath.Join(td.dir, "out"), os.O_RDWR|os.O_CREATE))
		}, codes.InvalidArgument, "no file was passed"},
		{"a local file's token for an image through the endpoint's socket", func() error {
			stream, err := td.remote.UploadImage(teamCtx)
			if err != nil {
				return err
			}
			stream.Send(&daemonv1.ImageChunk{Size: int64(len(data)), LocalFile: passFile(t, td, src, os.O_RDONLY)})
			_, err = stream.CloseAndRecv()
			return err
		}, codes.InvalidArgument, "no file was passed"},
		{"a regular file passed beside the endpoint's socket", func() error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			return uploadPassed(teamCtx, td.remote, "team:disk", passRemote(t, td, f), int64(len(data)))
		}, codes.InvalidArgument, "not a pipe"},
	} {
		st := wantCode(t, c.what, c.call(), c.code)
		if !strings.Contains(st.Message(), c.msg) {
			t.Errorf("%s: %q does not say %q", c.what, st.Message(), c.msg)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(td.dir, "out")); len(got) != 0 {
		t.Fatalf("a refused download wrote %d bytes", len(got))
	}
	out := filepath.Join(td.dir, "after")
	if err := downloadPassed(ctx, td.admin, "team:disk", passFile(t, td, out, os.O_RDWR|os.O_CREATE)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); len(got) != 1<<20 || !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("refused uploads changed the device (%d bytes)", len(got))
	}
	if tmps, _ := filepath.Glob(filepath.Join(td.dir, "data", "*", "upload-*.tmp")); len(tmps) != 0 {
		t.Fatalf("refused uploads left %v", tmps)
	}
}

// pipeUpload uploads content to device name through the endpoint's
// socket as petrel-endpoint does: a pipe passed beside the socket, its
// content written and the pipe closed, then the checksum sha and the
// stream's end; cut, when set, is called instead of that end, after
// half the content. The first message takes gzip (and then marked) and
// skip_sha256 from head, which may be nil.
func pipeUpload(t *testing.T, td *testDaemon, ctx context.Context, name string, content []byte, head *daemonv1.BlockChunk, end *daemonv1.BlockChunk, cut func()) (*daemonv1.BlockInfo, error) {
	t.Helper()
	w, tok := remotePipe(t, td, true)
	stream, err := td.remote.BlockUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(len(content))
	if cut != nil {
		total = 0 // unknown: only the stream's end can say the content is whole
	}
	gz := head.GetGzip()
	if err := stream.Send(&daemonv1.BlockChunk{Name: name, Total: total, LocalFile: tok, Gzip: gz, Marked: gz, SkipSha256: head.GetSkipSha256()}); err != nil {
		t.Fatal(err)
	}
	if gz {
		// In frames of marked chunks, as the endpoint passes on what
		// its caller sent on a content connection.
		var framed bytes.Buffer
		mc := transfer.NewMarkedChunks(transfer.FrameSink(&framed))
		if err := mc.Write(content); err != nil {
			t.Fatal(err)
		}
		if err := mc.Close(); err != nil {
			t.Fatal(err)
		}
		if cut == nil {
			transfer.EndFrames(&framed)
		}
		content = framed.Bytes()
	}
	if cut != nil {
		// The pipe ends first, as when petrel-endpoint gives up on its
		// caller; then the call is cut.
		w.Write(content[:len(content)/2])
		w.Close()
		time.Sleep(50 * time.Millisecond)
		cut()
		// The answer, without a half-close, which would say the
		// upload is complete.
		info := new(daemonv1.BlockInfo)
		return info, stream.RecvMsg(info)
	}
	w.Write(content)
	w.Close()
	if err := stream.Send(end); err != nil {
		t.Fatal(err)
	}
	return stream.CloseAndRecv()
}

// pipeDownload downloads device name through the endpoint's socket as
// petrel-endpoint does, into a pipe passed beside it, and returns the
// content and the message that follows it, with its checksum: the
// CRC-32C with crc, otherwise the SHA-256.
func pipeDownload(t *testing.T, td *testDaemon, ctx context.Context, name string, crc, gz bool) ([]byte, *daemonv1.BlockChunk, error) {
	t.Helper()
	r, tok := remotePipe(t, td, false)
	stream, err := td.remote.BlockDownload(ctx, &daemonv1.BlockDownloadRequest{Name: name, LocalFile: tok, Crc32C: crc, Gzip: gz, Marked: gz})
	if err != nil {
		return nil, nil, err
	}
	if head, err := stream.Recv(); err != nil || head.GetMarked() != gz {
		return nil, nil, fmt.Errorf("first chunk %v, %v", head, err)
	}
	var src io.Reader = r
	if gz {
		src = transfer.NewFramesReader(r)
	}
	got, err := io.ReadAll(src)
	if err != nil {
		return nil, nil, err
	}
	last, err := stream.Recv()
	if err != nil {
		return nil, nil, err
	}
	return got, last, nil
}

// TestPipedTransfers: petrel-endpoint's pipes carry a block upload, a
// block download and an image upload through the endpoint's socket; an
// upload is stored only when its caller's checksum matches and its
// stream ends, not when it is cut, and a download's checksum follows its
// content.
func TestPipedTransfers(t *testing.T) {
	td, root := startTrusting(t)
	ctx := ctxT(t)
	one := 1
	teamCtx, _ := root.sub(t, "team", policy.Policy{VMs: 1, MemoryMB: 64, ImagesMB: &one}).as(t, ctx, "team-leaf")
	if _, err := td.admin.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:disk", SizeMb: 1}); err != nil {
		t.Fatal(err)
	}
	_, data := writeRandom(t, td.dir, 300<<10)
	gzipped := &daemonv1.BlockChunk{Gzip: true}
	info, err := pipeUpload(t, td, teamCtx, "team:disk", data, nil, &daemonv1.BlockChunk{Sha256: digest(data)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.GetSha256() != digest(data) {
		t.Fatalf("piped upload: petreld's SHA-256 %s, want %s", info.GetSha256(), digest(data))
	}
	other := append([]byte(nil), data...)
	other[0] ^= 1
	_, err = pipeUpload(t, td, teamCtx, "team:disk", other, nil, &daemonv1.BlockChunk{Sha256: digest(data)}, nil)
	wantCode(t, "a piped upload whose checksum differs", err, codes.InvalidArgument)
	_, err = pipeUpload(t, td, teamCtx, "team:disk", other, nil, &daemonv1.BlockChunk{Crc32C: proto.Uint32(crc32c(data))}, nil)
	wantCode(t, "a piped upload whose CRC-32C differs", err, codes.InvalidArgument)
	_, err = pipeUpload(t, td, teamCtx, "team:disk", data, nil, &daemonv1.BlockChunk{}, nil)
	wantCode(t, "a piped upload without a checksum", err, codes.InvalidArgument)
	// The content's CRC-32C instead of its SHA-256 (a content
	// connection's upload): stored, and petreld still reports the
	// SHA-256.
	if info, err = pipeUpload(t, td, teamCtx, "team:disk", data, nil, &daemonv1.BlockChunk{Crc32C: proto.Uint32(crc32c(data))}, nil); err != nil {
		t.Fatal(err)
	}
	if info.GetSha256() != digest(data) {
		t.Fatalf("piped upload with a CRC-32C: petreld's SHA-256 %s, want %s", info.GetSha256(), digest(data))
	}
	// Without the SHA-256, as the caller asked: stored, checked by the
	// CRC-32C, with no digest; refused if the CRC-32C is missing.
	skip := &daemonv1.BlockChunk{SkipSha256: true}
	if info, err = pipeUpload(t, td, teamCtx, "team:disk", other, skip, &daemonv1.BlockChunk{Crc32C: proto.Uint32(crc32c(other))}, nil); err != nil || info.GetSha256() != "" {
		t.Fatalf("piped upload skipping the SHA-256: %v, %v; want stored, without a digest", info, err)
	}
	var stored bytes.Buffer
	if _, _, err := td.d.blocks.Download("team:disk", &stored); err != nil || !bytes.HasPrefix(stored.Bytes(), other) {
		t.Fatalf("piped upload skipping the SHA-256: not stored (%v)", err)
	}
	_, err = pipeUpload(t, td, teamCtx, "team:disk", data, skip, &daemonv1.BlockChunk{Sha256: digest(data)}, nil)
	wantCode(t, "a piped upload skipping the SHA-256 with only a SHA-256 to check", err, codes.InvalidArgument)
	_, err = pipeUpload(t, td, teamCtx, "team:disk", data, skip, &daemonv1.BlockChunk{Crc32C: proto.Uint32(crc32c(other))}, nil)
	wantCode(t, "a piped upload skipping the SHA-256 whose CRC-32C differs", err, codes.InvalidArgument)
	// data again, which the downloads below expect.
	if _, err = pipeUpload(t, td, teamCtx, "team:disk", data, nil, &daemonv1.BlockChunk{Crc32C: proto.Uint32(crc32c(data))}, nil); err != nil {
		t.Fatal(err)
	}
	// Compressed, in frames of marked chunks: stored whole, or refused
	// when the frames end short of their ending frame.
	if info, err = pipeUpload(t, td, teamCtx, "team:disk", data, gzipped, &daemonv1.BlockChunk{Crc32C: proto.Uint32(crc32c(data))}, nil); err != nil || info.GetSha256() != digest(data) {
		t.Fatalf("piped compressed upload: %v, %v", info, err)
	}
	framedCut, cancelFramed := context.WithCancel(teamCtx)
	_, err = pipeUpload(t, td, framedCut, "team:disk", other, gzipped, nil, cancelFramed)
	if c := status.Code(err); c != codes.Canceled && c != codes.InvalidArgument {
		t.Fatalf("a piped compressed upload without its ending frame: %v, want Canceled or InvalidArgument", err)
	}
	cctx, cancel := context.WithCancel(teamCtx)
	_, err = pipeUpload(t, td, cctx, "team:disk", other, nil, nil, cancel)
	wantCode(t, "a piped upload cut halfway", err, codes.Canceled)

	// The download: the device holds data, padded to 1 MB. The cut
	// upload may hold the device a moment longer than its caller waits.
	var got []byte
	var last *daemonv1.BlockChunk
	for try := 0; ; try++ {
		got, last, err = pipeDownload(t, td, teamCtx, "team:disk", false, false)
		if status.Code(err) != codes.Aborted || try == 100 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), data...), make([]byte, 1<<20-len(data))...)
	if !bytes.Equal(got, want) {
		t.Fatalf("piped download: %d bytes, equal %v; the failed uploads changed the device?", len(got), bytes.Equal(got, want))
	}
	if last.GetSha256() != digest(want) || last.Crc32C != nil {
		t.Fatalf("piped download: checksum %v, want the SHA-256 %s alone", last, digest(want))
	}
	for _, gz := range []bool{false, true} {
		got, last, err = pipeDownload(t, td, teamCtx, "team:disk", true, gz)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || last.Crc32C == nil || *last.Crc32C != crc32c(want) || last.GetSha256() != "" {
			t.Fatalf("piped download asking for the CRC-32C (gzip %v): %d bytes, equal %v, checksum %v, want the CRC-32C %08x alone", gz, len(got), bytes.Equal(got, want), last, crc32c(want))
		}
	}

	// An image.
	w, tok := remotePipe(t, td, true)
	up, err := td.remote.UploadImage(teamCtx)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Send(&daemonv1.ImageChunk{Size: int64(len(data)), LocalFile: tok}); err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	ref, err := up.CloseAndRecv()
	if err != nil || ref.GetSha256() != digest(data) {
		t.Fatalf("piped image upload: %v, %v; want %s", ref, err, digest(data))
	}

	// An image cut halfway, of no declared size, is not stored.
	w, tok = remotePipe(t, td, true)
	cctx, cancel = context.WithCancel(teamCtx)
	defer cancel()
	if up, err = td.remote.UploadImage(cctx); err != nil {
		t.Fatal(err)
	}
	if err := up.Send(&daemonv1.ImageChunk{LocalFile: tok}); err != nil {
		t.Fatal(err)
	}
	w.Write(other[:len(other)/2])
	w.Close()
	time.Sleep(50 * time.Millisecond)
	cancel()
	wantCode(t, "a piped image upload cut halfway", up.RecvMsg(new(daemonv1.ImageRef)), codes.Canceled)
	time.Sleep(50 * time.Millisecond)
	if _, err := td.d.store.ImagePath(digest(other[:len(other)/2])); err == nil {
		t.Fatal("the cut image was stored")
	}
}

// crc32c is b's CRC-32C.
func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }
