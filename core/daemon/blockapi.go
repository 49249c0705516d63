package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/internal/block"
	"github.com/petrel-vmm/petrel/sdk/fdpass"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/protocodec"
	"github.com/petrel-vmm/petrel/sdk/transfer"
)

// blockChunkSize is the largest download message: a chunk of content,
// or a chunk's gzip member, which may be a few bytes larger than the
// chunk when it is stored.
const blockChunkSize = 2 << 20

func blockInfo(d block.Device) *daemonv1.BlockInfo {
	return &daemonv1.BlockInfo{Name: d.Name, SizeMb: d.SizeMB, InUseBy: d.InUseBy}
}

func (s *server) BlockList(_ context.Context, req *daemonv1.BlockListRequest) (*daemonv1.BlockListResponse, error) {
	devs, err := s.d.blocks.List(req.GetPath())
	if err != nil {
		return nil, grpcError(err)
	}
	out := &daemonv1.BlockListResponse{}
	for _, d := range devs {
		out.Devices = append(out.Devices, blockInfo(d))
	}
	out.Orphans, _ = s.d.blocks.Orphans()
	return out, nil
}

func (s *server) BlockCreate(_ context.Context, req *daemonv1.BlockCreateRequest) (*daemonv1.BlockInfo, error) {
	s.d.policyMu.Lock()
	defer s.d.policyMu.Unlock()
	if err := s.d.checkBlockQuota(req.GetName(), req.GetSizeMb()); err != nil {
		return nil, grpcError(err)
	}
	d, err := s.d.blocks.Create(req.GetName(), req.GetSizeMb())
	if err != nil {
		return nil, grpcError(err)
	}
	return blockInfo(d), nil
}

func (s *server) BlockDestroy(_ context.Context, req *daemonv1.BlockDestroyRequest) (*daemonv1.BlockDestroyResponse, error) {
	if err := s.d.blocks.Destroy(req.GetName()); err != nil {
		return nil, grpcError(err)
	}
	return &daemonv1.BlockDestroyResponse{}, nil
}

// blockStreamReader turns upload chunks into a reader and remembers the
// checksum the last chunk carries.
type blockStreamReader struct {
	stream daemonv1.Daemon_BlockUploadServer
	buf    []byte
	sha    string
	err    error
	// held is the data of the message being read, given back to the
	// codec's pool (protocodec.Release) once read, for the next message.
	held []byte
}

// recv receives the next message, giving back the previous one's data.
func (r *blockStreamReader) recv() (*daemonv1.BlockChunk, error) {
	protocodec.Release(r.held)
	r.held = nil
	msg, err := r.stream.Recv()
	if err == nil {
		r.held = msg.GetData()
	}
	return msg, err
}

func (r *blockStreamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.recv()
		if err == io.EOF {
			return 0, io.EOF
		}
		if err != nil {
			r.err = err
			return 0, err
		}
		if msg.GetSha256() != "" {
			r.sha = msg.GetSha256()
		}
		r.buf = msg.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// markedChunks returns the chunks of a marked upload, starting with what
// is left of the first message (whose data is compressed when
// firstGzip), as a transfer.ChunkSource; it remembers the checksum.
func (r *blockStreamReader) markedChunks(firstGzip bool) transfer.ChunkSource {
	first := true
	return func() ([]byte, bool, error) {
		if first {
			first = false
			data := r.buf
			r.buf = nil
			return data, firstGzip, nil
		}
		msg, err := r.recv()
		if err == io.EOF {
			return nil, false, io.EOF
		}
		if err != nil {
			r.err = err
			return nil, false, err
		}
		if msg.GetSha256() != "" {
			r.sha = msg.GetSha256()
		}
		return msg.GetData(), msg.GetChunkGzip(), nil
	}
}

func (s *server) BlockUpload(stream daemonv1.Daemon_BlockUploadServer) error {
	first, err := stream.Recv()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "upload: %v", err)
	}
	// A local client may pass the content's file instead of sending it,
	// and petrel-endpoint a pipe it writes its caller's content into.
	local, pipe, err := s.passedSource(first.GetLocalFile(), first.GetTotal())
	if err != nil {
		return err
	}
	if local != nil {
		defer local.Close()
	}
	d, err := s.d.blocks.Get(first.GetName())
	if err != nil {
		return grpcError(err)
	}
	if first.GetTotal() > d.SizeMB*block.MB {
		return status.Errorf(codes.InvalidArgument, "%d bytes do not fit in block device %s (%d MB)", first.GetTotal(), d.Name, d.SizeMB)
	}
	// A streamed upload is checked by its SHA-256; a passed file or pipe
	// is hashed unless the caller has no use for the digest.
	u, err := s.d.blocks.BeginUpload(d.Name, local == nil || !first.GetSkipSha256())
	if err != nil {
		return grpcError(err)
	}
	defer u.Abort()
	if local != nil {
		return s.blockUploadFile(stream, d, u, local, pipe, first)
	}
	r := &blockStreamReader{stream: stream, buf: first.GetData(), held: first.GetData(), sha: first.GetSha256()}
	var src io.Reader = r
	marked := first.GetGzip() && first.GetMarked()
	switch {
	case marked:
		// Each message a chunk of its own, as it is or gzip-compressed.
		src = transfer.NewMarkedReader(r.markedChunks(first.GetChunkGzip()))
	case first.GetGzip():
		// One gzip stream (clients that do not mark chunks): members
		// stored for incompressible chunks are copied straight out of
		// the messages; compressed ones go through flate.
		src = transfer.NewGzipReader(r)
	}
	// The upload writes and hashes on goroutines of its own while this
	// one receives (and decompresses) the next chunks.
	if _, err := u.ReadFrom(src); err != nil {
		if r.err != nil {
			return status.Errorf(codes.Canceled, "upload to %s interrupted (the device is unchanged): %v", d.Name, r.err)
		}
		if errors.Is(err, transfer.ErrCorrupt) {
			return status.Errorf(codes.InvalidArgument, "upload to %s (the device is unchanged): %v", d.Name, err)
		}
		return grpcError(fmt.Errorf("upload to %s (the device is unchanged): %w", d.Name, err))
	}
	if first.GetGzip() && !marked {
		// Drain what follows the gzip stream to collect the checksum.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return status.Errorf(codes.Canceled, "upload to %s interrupted: %v", d.Name, err)
		}
	}
	if r.sha == "" {
		return status.Errorf(codes.InvalidArgument, "upload to %s carried no checksum; the device is unchanged", d.Name)
	}
	sum, err := u.Commit(r.sha)
	if err != nil {
		return grpcError(err)
	}
	info := blockInfo(d)
	info.Sha256 = sum
	return stream.SendAndClose(info)
}

// blockUploadFile stores the content of a passed file, read by petreld
// itself from the file's offset: a local client's regular file, total
// bytes, checked by nothing, since they crossed no channel that could
// alter them; or the endpoint's pipe, checked against the checksum the
// endpoint's caller computed and the endpoint sends after the content.
// u hashes the content with SHA-256 unless the caller skipped it, so a
// pipe's check is then its CRC-32C.
func (s *server) blockUploadFile(stream daemonv1.Daemon_BlockUploadServer, d block.Device, u *block.Upload, f *os.File, pipe bool, first *daemonv1.BlockChunk) error {
	total := first.GetTotal()
	ctx := stream.Context()
	src, stop := passedReader(ctx, f, pipe)
	defer stop()
	if first.GetGzip() {
		// The endpoint's compressed content comes in frames of marked
		// chunks (a local client's file is never compressed).
		if !pipe || !first.GetMarked() {
			return status.Errorf(codes.InvalidArgument, "upload to %s: a compressed upload through a pipe comes in marked chunks, and a passed file is not compressed", d.Name)
		}
		src = transfer.NewFramesReader(src)
	}
	crc := transfer.NewCRC32C()
	if pipe {
		src = io.TeeReader(src, crc)
	}
	n, err := u.ReadFrom(src)
	switch {
	case ctx.Err() != nil:
		return status.Errorf(codes.Canceled, "upload to %s interrupted (the device is unchanged): %v", d.Name, ctx.Err())
	case errors.Is(err, transfer.ErrCorrupt) || errors.Is(err, io.ErrUnexpectedEOF):
		return status.Errorf(codes.InvalidArgument, "upload to %s (the device is unchanged): %v", d.Name, err)
	case err != nil:
		return grpcError(fmt.Errorf("upload to %s (the device is unchanged): %w", d.Name, err))
	case n != total && (!pipe || total > 0):
		return status.Errorf(codes.InvalidArgument, "upload to %s: %d bytes arrived, not the %d the upload declared; the device is unchanged", d.Name, n, total)
	}
	sum, sent := "", (*uint32)(nil)
	if err := uploadEnd(stream.Recv, func(m *daemonv1.BlockChunk) {
		if v := m.GetSha256(); v != "" {
			sum = v
		}
		if m.Crc32C != nil {
			sent = m.Crc32C
		}
	}); err != nil {
		return err
	}
	switch {
	case pipe && sum == "" && sent == nil:
		return status.Errorf(codes.InvalidArgument, "upload to %s carried no checksum; the device is unchanged", d.Name)
	case pipe && sent == nil && first.GetSkipSha256():
		return status.Errorf(codes.InvalidArgument, "upload to %s skipped the SHA-256 but carried no CRC-32C to be checked by; the device is unchanged", d.Name)
	case pipe && sent != nil && *sent != crc.Sum32():
		return status.Errorf(codes.InvalidArgument, "upload to %s: CRC-32C mismatch: sent %08x, received %08x; the device is unchanged", d.Name, *sent, crc.Sum32())
	}
	if sum, err = u.Commit(sum); err != nil {
		return grpcError(err)
	}
	info := blockInfo(d)
	info.Sha256 = sum
	return stream.SendAndClose(info)
}

// sinkWriter makes a transfer.Sink an io.Writer.
type sinkWriter transfer.Sink

func (s sinkWriter) Write(p []byte) (int, error) {
	if err := s(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// chunkWriter sends written bytes as download chunks.
type chunkWriter struct {
	stream daemonv1.Daemon_BlockDownloadServer
	gzip   bool
}

func (w chunkWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += blockChunkSize {
		end := min(off+blockChunkSize, len(p))
		if err := w.stream.Send(&daemonv1.BlockChunk{Data: p[off:end], Gzip: w.gzip}); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

func (s *server) BlockDownload(req *daemonv1.BlockDownloadRequest, stream daemonv1.Daemon_BlockDownloadServer) error {
	if tok := req.GetLocalFile(); tok != "" {
		return s.blockDownloadFile(stream, req, tok)
	}
	d, err := s.d.blocks.Get(req.GetName())
	if err != nil {
		return grpcError(err)
	}
	marked := req.GetGzip() && req.GetMarked()
	if err := stream.Send(&daemonv1.BlockChunk{Name: d.Name, Gzip: req.GetGzip(), Marked: marked, Total: d.SizeMB * block.MB}); err != nil {
		return err
	}
	send := chunkWriter{stream: stream, gzip: req.GetGzip()}
	var w io.Writer = send
	var gz *transfer.GzipChunks
	var mc *transfer.MarkedChunks
	switch {
	case marked:
		// A chunk in each message, compressed only when it shrinks:
		// incompressible ones are sent as they are, on the download's
		// writing goroutine, compressed ones on the MarkedChunks' own.
		mc = transfer.NewMarkedChunks(func(b []byte, compressed bool) error {
			return stream.Send(&daemonv1.BlockChunk{Data: b, Gzip: true, Marked: true, ChunkGzip: compressed})
		})
		defer mc.Close()
		w = sinkWriter(mc.Write)
	case req.GetGzip():
		// One gzip member per chunk, stored when the chunk would not
		// shrink: together one gzip stream, as clients expect.
		// Framed on the download's writing goroutine, sent on the
		// GzipChunks' own.
		gz = transfer.NewGzipChunks(transfer.WriterSink(send))
		defer gz.Close()
		w = sinkWriter(gz.Write)
	}
	sum, _, err := s.d.blocks.Download(d.Name, w)
	if err != nil {
		if errors.Is(err, block.ErrBusy) || errors.Is(err, block.ErrNotFound) {
			return grpcError(err)
		}
		return status.Errorf(codes.Internal, "download %s: %v", d.Name, err)
	}
	if gz != nil {
		if err := gz.Finish(); err != nil {
			return status.Errorf(codes.Internal, "download %s: %v", d.Name, err)
		}
	}
	if mc != nil {
		if err := mc.Close(); err != nil {
			return status.Errorf(codes.Internal, "download %s: %v", d.Name, err)
		}
	}
	return stream.Send(&daemonv1.BlockChunk{Sha256: sum, Gzip: req.GetGzip()})
}

// blockDownloadFile writes a device's content into a passed file, at the
// file's offset: a local client's regular file, by a kernel copy, after
// which the stream ends, the first chunk (name and total) being the only
// one sent; or the endpoint's pipe, hashed on the way, the checksum
// (the CRC-32C with crc, otherwise the SHA-256) following in a last
// chunk once the pipe is closed, for the endpoint's caller to check.
func (s *server) blockDownloadFile(stream daemonv1.Daemon_BlockDownloadServer, req *daemonv1.BlockDownloadRequest, tok string) error {
	name, crc, gz := req.GetName(), req.GetCrc32C(), req.GetGzip()
	// The file is taken first, so that no refusal leaves it waiting.
	f, err := s.passedFile(tok)
	if err != nil {
		return err
	}
	defer f.Close()
	check := fdpass.Writable
	if s.pipes {
		check = fdpass.WritablePipe
	}
	if err := check(f); err != nil {
		return status.Errorf(codes.InvalidArgument, "passed file: %v", err)
	}
	if gz && (!s.pipes || !req.GetMarked()) {
		return status.Error(codes.InvalidArgument, "a compressed download into a pipe goes in marked chunks, and one into a passed file is not compressed")
	}
	d, err := s.d.blocks.Get(name)
	if err != nil {
		return grpcError(err)
	}
	if err := stream.Send(&daemonv1.BlockChunk{Name: d.Name, Total: d.SizeMB * block.MB, Gzip: gz, Marked: gz}); err != nil {
		return err
	}
	ctx := stream.Context()
	var end *daemonv1.BlockChunk
	if s.pipes {
		stop := context.AfterFunc(ctx, func() { f.SetDeadline(time.Now()) })
		end, err = s.downloadPiped(d.Name, f, crc, gz)
		stop()
		if err == nil {
			err = f.Close() // the end of the content, for the endpoint
		}
	} else {
		_, err = s.d.blocks.CopyTo(ctx, d.Name, f)
	}
	if err != nil {
		switch {
		case errors.Is(err, block.ErrBusy) || errors.Is(err, block.ErrNotFound):
			return grpcError(err)
		case ctx.Err() != nil:
			return status.Errorf(codes.Canceled, "download %s interrupted: %v", d.Name, err)
		}
		return status.Errorf(codes.Internal, "download %s: %v", d.Name, err)
	}
	if end != nil {
		return stream.Send(end)
	}
	return nil
}

// downloadPiped writes device name's content into the endpoint's pipe
// f, compressed in frames of marked chunks with gz, and returns the
// message that follows it: its CRC-32C with crc, otherwise its SHA-256.
func (s *server) downloadPiped(name string, f *os.File, crc, gz bool) (*daemonv1.BlockChunk, error) {
	var w io.Writer = f
	var mc *transfer.MarkedChunks
	if gz {
		mc = transfer.NewMarkedChunks(transfer.FrameSink(f))
		defer mc.Close()
		w = sinkWriter(mc.Write)
	}
	var h hash.Hash = sha256.New()
	if crc {
		h = transfer.NewCRC32C()
	}
	if _, err := s.d.blocks.DownloadHashed(name, w, h); err != nil {
		return nil, err
	}
	if mc != nil {
		if err := mc.Close(); err != nil {
			return nil, err
		}
		if err := transfer.EndFrames(f); err != nil {
			return nil, err
		}
	}
	if crc {
		return &daemonv1.BlockChunk{Crc32C: proto.Uint32(h.(hash.Hash32).Sum32())}, nil
	}
	return &daemonv1.BlockChunk{Sha256: hex.EncodeToString(h.Sum(nil))}, nil
}
