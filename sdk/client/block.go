package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
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

// hashSink feeds a hash; it never fails.
func hashSink(h hash.Hash) transfer.Sink {
	return func(b []byte) error {
		h.Write(b)
		return nil
	}
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

// UploadBlock replaces block device name's content with r (total bytes,
// or 0 when unknown), optionally compressing it on the wire. The daemon
// changes the device only once the SHA-256 computed here matches what it
// received.
func (c *Client) UploadBlock(ctx context.Context, name string, r io.Reader, total int64, compress bool, progress Progress) (*daemonv1.BlockInfo, error) {
	// Cancelling on return ends the stream on every path: an upload
	// abandoned on an error is discarded by the daemon at once.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.API.BlockUpload(ctx)
	if err != nil {
		return nil, err
	}
	// Reading the file, hashing it and sending it (compressing first,
	// with --gzip) run on goroutines of their own, chunk by chunk.
	h := sha256.New()
	w := &streamWriter{stream: stream, first: &daemonv1.BlockChunk{Name: name, Gzip: compress, Total: total}}
	send := func(b []byte) error { _, err := w.Write(b); return err }
	var gz *transfer.GzipChunks
	if compress {
		// Members are framed on the Fanout's goroutine and sent on
		// the GzipChunks' own. Cancelling first ends a send that waits
		// for a daemon gone away.
		gz = transfer.NewGzipChunks(send)
		defer func() { cancel(); gz.Close() }()
		send = gz.Write
	}
	fan := transfer.NewFanout(hashSink(h), send)
	_, copyErr := fan.ReadFrom(&countingReader{r: r, total: total, progress: progress})
	if copyErr != nil {
		fan.Abort(copyErr)
	} else {
		copyErr = fan.Close()
	}
	if gz != nil && copyErr == nil {
		copyErr = gz.Finish() // empty content is still a gzip stream
	}
	if w.first != nil && copyErr == nil { // empty content: still name the device
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

// UploadBlockFile uploads the file at path.
func (c *Client) UploadBlockFile(ctx context.Context, name, path string, compress bool, progress Progress) (*daemonv1.BlockInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return c.UploadBlock(ctx, name, f, fi.Size(), compress, progress)
}

// downloadReader turns download chunks into a reader.
type downloadReader struct {
	stream daemonv1.Daemon_BlockDownloadClient
	buf    []byte
	sha    string
}

func (r *downloadReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
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

// DownloadBlockFile writes block device name's content to path, verifying
// the daemon's SHA-256; path appears only once the content is complete
// and verified.
func (c *Client) DownloadBlockFile(ctx context.Context, name, path string, compress bool, progress Progress) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream, and frees the device, on every path
	stream, err := c.API.BlockDownload(ctx, &daemonv1.BlockDownloadRequest{Name: name, Gzip: compress})
	if err != nil {
		return 0, err
	}
	head, err := stream.Recv()
	if err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.part")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	r := &downloadReader{stream: stream}
	var src io.Reader = r
	if compress {
		src = transfer.NewGzipReader(r)
	}
	// Receiving, hashing and writing (with write-back started as the
	// content arrives) run on goroutines of their own, chunk by chunk.
	h := sha256.New()
	fan := transfer.NewFanout(hashSink(h), transfer.NewFileSink(tmp).Write)
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
	if err := tmp.Sync(); err != nil {
		return n, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return n, err
	}
	return n, nil
}
