package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/petrel-vmm/petrel/sdk/contentconn"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/protocodec"
	"github.com/petrel-vmm/petrel/sdk/transfer"
)

// Progress is called as a transfer advances, with the bytes of content
// done and the total (0 when unknown).
type Progress func(done, total int64)

// countingReader counts what passes through it.
type countingReader struct {
	r        io.Reader
	n        int64
	total    int64
	progress Progress
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n, c.total)
	}
	return n, err
}

// streamWriter sends written bytes as upload chunks.
type streamWriter struct {
	stream daemonv1.Daemon_BlockUploadClient
	first  *daemonv1.BlockChunk
}

// maxBlockMessage is the largest upload message: a chunk of content, or
// a chunk's gzip member, which may be a few bytes larger than the chunk
// when it is stored.
const maxBlockMessage = 2 << 20

func (w *streamWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += maxBlockMessage {
		end := min(off+maxBlockMessage, len(p))
		msg := &daemonv1.BlockChunk{Data: p[off:end]}
		if w.first != nil {
			msg, w.first = w.first, nil
			msg.Data = p[off:end]
		}
		if err := w.stream.Send(msg); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

// readsMarkedChunks reports whether the daemon reads block uploads whose
// chunks are marked one by one (VersionResponse.marked_block_chunks),
// asking it on first use. A daemon that does not say so, or cannot be
// asked, is sent one gzip stream, which every daemon reads; only an
// answer is remembered.
func (c *Client) readsMarkedChunks(ctx context.Context) bool {
	c.markedMu.Lock()
	defer c.markedMu.Unlock()
	if !c.markedKnown {
		v, err := c.API.Version(ctx, &daemonv1.VersionRequest{})
		if err != nil {
			return false
		}
		c.markedKnown, c.marked = true, v.GetMarkedBlockChunks()
	}
	return c.marked
}

// sendChunk sends one chunk of a marked upload, in a message of its own;
// it is a transfer.MarkedSink.
func (w *streamWriter) sendChunk(p []byte, compressed bool) error {
	msg := &daemonv1.BlockChunk{}
	if w.first != nil {
		msg, w.first = w.first, nil
	}
	msg.Data, msg.ChunkGzip = p, compressed
	return w.stream.Send(msg)
}

// BlockUploadOption changes how UploadBlock and UploadBlockFile upload.
type BlockUploadOption func(*blockUpload)

// blockUpload holds the options of one block upload.
type blockUpload struct {
	sha256 bool
}

// WithSHA256 asks petreld for the SHA-256 of the content it stored, in
// BlockInfo.sha256. Without it the digest is there only where it is the
// transfer's check (content streamed in the call): a passed file and a
// content connection skip it (BlockChunk.skip_sha256), which spares
// petreld's host the hashing, the largest part of its CPU in an upload.
func WithSHA256() BlockUploadOption {
	return func(o *blockUpload) { o.sha256 = true }
}

// blockUploadOptions applies opts.
func blockUploadOptions(opts []BlockUploadOption) blockUpload {
	var o blockUpload
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// UploadBlock replaces block device name's content with r (total bytes,
// or 0 when unknown), optionally compressing it on the wire. The daemon
// changes the device only once the checksum computed here (the CRC-32C
// on a content connection, otherwise the SHA-256) matches what it
// received.
func (c *Client) UploadBlock(ctx context.Context, name string, r io.Reader, total int64, compress bool, progress Progress, opts ...BlockUploadOption) (*daemonv1.BlockInfo, error) {
	// Cancelling on return ends the stream on every path: an upload
	// abandoned on an error is discarded by the daemon at once.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	marked := compress && c.readsMarkedChunks(ctx)
	// On a content connection: the content as it is, total bytes, or
	// compressed in marked chunks.
	if (!compress && total > 0) || marked {
		if cc := c.openContent(ctx); cc != nil {
			return c.uploadBlockBeside(ctx, cc, name, r, total, compress, progress, blockUploadOptions(opts))
		}
	}
	stream, err := c.API.BlockUpload(ctx)
	if err != nil {
		return nil, err
	}
	// Reading the file, hashing it and sending it (compressing first,
	// with --gzip) run on goroutines of their own, chunk by chunk.
	h := sha256.New()
	w := &streamWriter{stream: stream, first: &daemonv1.BlockChunk{Name: name, Gzip: compress, Marked: marked, Total: total}}
	send := func(b []byte) error { _, err := w.Write(b); return err }
	// finish sends what the compression still holds, once the content
	// is read.
	finish := func() error { return nil }
	// stopSender ends the goroutine that sends compressed chunks, if
	// there is one. Until it has returned, that goroutine may still use
	// the stream (and w), so nothing else touches them on a failure
	// before it. Cancelling first ends a send that waits for a daemon
	// gone away.
	stopSender := func() {}
	switch {
	case marked:
		// A chunk in each message, compressed only when it shrinks:
		// compressed chunks are sent on the MarkedChunks' goroutine,
		// the others as they are on the Fanout's.
		mc := transfer.NewMarkedChunks(w.sendChunk)
		stopSender = func() { cancel(); mc.Close() }
		send, finish = mc.Write, mc.Close
	case compress:
		// One gzip stream: members are framed on the Fanout's
		// goroutine and sent on the GzipChunks' own.
		gz := transfer.NewGzipChunks(send)
		stopSender = func() { cancel(); gz.Close() }
		send, finish = gz.Write, gz.Finish // empty content is still a gzip stream
	}
	defer func() { stopSender() }()
	fan := transfer.NewFanout(transfer.HashSink(h), send)
	_, copyErr := fan.ReadFrom(&countingReader{r: r, total: total, progress: progress})
	if copyErr != nil {
		// The stream is abandoned: cancelling first ends a send of the
		// Fanout's that waits for a daemon gone away, which Abort waits
		// for.
		cancel()
		fan.Abort(copyErr)
	} else {
		copyErr = fan.Close()
	}
	if copyErr == nil {
		copyErr = finish()
	}
	if copyErr != nil {
		stopSender()
	}
	if copyErr == nil && w.first != nil { // empty content: still name the device
		copyErr = stream.Send(w.first)
	}
	if copyErr == nil {
		copyErr = stream.Send(&daemonv1.BlockChunk{Sha256: hex.EncodeToString(h.Sum(nil))})
	}
	if copyErr != nil && !errors.Is(copyErr, io.EOF) {
		stream.CloseSend()
		return nil, fmt.Errorf("upload to %s: %w", name, copyErr)
	}
	return stream.CloseAndRecv()
}

// UploadBlockFile uploads the file at path. A local petreld that takes
// files (package fdpass) is passed the open file and reads it itself,
// without compression or a checksum of the client's: the content then
// crosses no channel that could alter it.
func (c *Client) UploadBlockFile(ctx context.Context, name, path string, compress bool, progress Progress, opts ...BlockUploadOption) (*daemonv1.BlockInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// A local petreld reads the file itself: nothing to compress.
	tok, ok, err := c.passFile(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("upload to %s: %w", name, err)
	}
	if ok {
		first := &daemonv1.BlockChunk{Name: name, Total: fi.Size(), LocalFile: tok, SkipSha256: !blockUploadOptions(opts).sha256}
		return uploadPassed(ctx, f, fi.Size(), progress, c.API.BlockUpload, first)
	}
	return c.UploadBlock(ctx, name, f, fi.Size(), compress, progress, opts...)
}

// downloadReader turns download chunks into a reader.
type downloadReader struct {
	stream daemonv1.Daemon_BlockDownloadClient
	buf    []byte
	sha    string
	// held is the data of the message being read, given back to the
	// codec's pool (protocodec.Release) once read, for the next message.
	held []byte
}

// recv receives the next message, giving back the previous one's data
// and remembering the checksum.
func (r *downloadReader) recv() (*daemonv1.BlockChunk, error) {
	protocodec.Release(r.held)
	r.held = nil
	msg, err := r.stream.Recv()
	if err != nil {
		return nil, err
	}
	if msg.GetSha256() != "" {
		r.sha = msg.GetSha256()
	}
	r.held = msg.GetData()
	return msg, nil
}

func (r *downloadReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.recv()
		if err != nil {
			return 0, err
		}
		r.buf = msg.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// nextChunk returns the next chunk of a marked download, remembering the
// checksum; it is a transfer.ChunkSource.
func (r *downloadReader) nextChunk() ([]byte, bool, error) {
	msg, err := r.recv()
	if err != nil {
		return nil, false, err
	}
	return msg.GetData(), msg.GetChunkGzip(), nil
}

// DownloadBlockFile writes block device name's content to path; path
// appears only once the content is complete, durable and, when it came
// through the daemon API, verified against the daemon's SHA-256. A local
// petreld that takes files writes the content into the new file itself.
func (c *Client) DownloadBlockFile(ctx context.Context, name, path string, compress bool, progress Progress) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream, and frees the device, on every path
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.part")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	// A local petreld writes into the file itself: nothing to compress
	// or to check, since the content crosses no channel.
	tok, ok, err := c.passFile(ctx, tmp)
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", name, err)
	}
	var n int64
	var cc *contentconn.Conn
	if !ok {
		cc = c.openContent(ctx)
	}
	switch {
	case ok:
		n, err = c.downloadBlockLocal(ctx, name, tmp, tok, progress)
	case cc != nil:
		n, err = c.downloadBlockBeside(ctx, cc, name, path, tmp, compress, progress)
	default:
		n, err = c.downloadBlockStream(ctx, name, path, tmp, compress, progress)
	}
	if err != nil {
		return n, err
	}
	if err := tmp.Sync(); err != nil {
		return n, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return n, err
	}
	return n, nil
}

// downloadBlockStream receives block device name's content through the
// daemon API into tmp, verifying the daemon's SHA-256.
func (c *Client) downloadBlockStream(ctx context.Context, name, path string, tmp *os.File, compress bool, progress Progress) (int64, error) {
	stream, err := c.API.BlockDownload(ctx, &daemonv1.BlockDownloadRequest{Name: name, Gzip: compress, Marked: compress})
	if err != nil {
		return 0, err
	}
	head, err := stream.Recv()
	if err != nil {
		return 0, err
	}
	r := &downloadReader{stream: stream}
	var src io.Reader = r
	switch {
	case compress && head.GetMarked():
		src = transfer.NewMarkedReader(r.nextChunk)
	case compress:
		// A daemon that does not mark chunks sends one gzip stream.
		src = transfer.NewGzipReader(r)
	}
	// Receiving, hashing and writing (with write-back started as the
	// content arrives) run on goroutines of their own, chunk by chunk.
	h := sha256.New()
	fan := transfer.NewFanout(transfer.HashSink(h), transfer.NewFileSink(tmp).Write)
	n, err := fan.ReadFrom(&countingReader{r: src, total: head.GetTotal(), progress: progress})
	if err != nil {
		fan.Abort(err)
		return n, fmt.Errorf("download %s: %w", name, err)
	}
	if err := fan.Close(); err != nil {
		return n, fmt.Errorf("download %s: %w", name, err)
	}
	for r.sha == "" { // the checksum follows the content
		if _, err := r.Read(make([]byte, 1)); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return n, fmt.Errorf("download %s: %w", name, err)
		}
	}
	got := hex.EncodeToString(h.Sum(nil))
	if r.sha == "" || r.sha != got {
		return n, fmt.Errorf("download %s: checksum mismatch (daemon %q, received %s); %s not written", name, r.sha, got, path)
	}
	return n, nil
}
