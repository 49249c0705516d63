package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/sdk/contentconn"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/transfer"
)

// remoteContent is where a remote client opens content connections
// (package sdk/contentconn): the endpoint's address and the client's TLS
// configuration.
type remoteContent struct {
	addr string
	cfg  *tls.Config
}

// openContent opens a content connection for one transfer when the
// client talks to a petrel-endpoint that takes them; nil when it does
// not (or cannot be reached that way), and the caller streams the
// content in the call, where a failure to reach the endpoint is
// reported as usual.
func (c *Client) openContent(ctx context.Context) *contentconn.Conn {
	if c.content == nil {
		return nil
	}
	cc, err := contentconn.Dial(ctx, c.content.addr, c.content.cfg)
	if err != nil {
		return nil
	}
	return cc
}

// besideWriter writes on a content connection and remembers whether a
// write failed: the endpoint stopped reading, and its answer says why.
type besideWriter struct {
	cc  *contentconn.Conn
	err error
}

func (w *besideWriter) Write(p []byte) (int, error) {
	n, err := w.cc.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// besideFormat is how an upload's content goes on a content connection
// (w): send takes each chunk; finish, when not nil, follows the last
// one; stop, when not nil, ends what send started, on a failure.
type besideFormat func(w io.Writer) (send transfer.Sink, finish, stop func() error)

// raw sends the content as it is, size bytes that the first message
// declares.
func raw(w io.Writer) (transfer.Sink, func() error, func() error) {
	return transfer.WriterSink(w), nil, nil
}

// framed sends the content as marked chunks in frames (transfer.FrameSink),
// compressing each chunk that shrinks, then the frame that ends them.
func framed(w io.Writer) (transfer.Sink, func() error, func() error) {
	mc := transfer.NewMarkedChunks(transfer.FrameSink(w))
	return mc.Write, func() error {
		if err := mc.Close(); err != nil {
			return err
		}
		return transfer.EndFrames(w)
	}, mc.Close
}

// uploadBeside makes an upload call opened with open, whose first
// message first names the content connection cc, and writes src's
// content on cc in format, handing each chunk to extra too (a hash);
// size, when positive, is the size first declares, which src must have.
// trailer, when not nil, gives the message that follows the content (its
// checksum). It returns the endpoint's answer. The endpoint takes the
// content as whole only once all of it came (size bytes, or the ending
// frame), and petreld stores it only when the call ends whole, which it
// does only once everything was written.
func uploadBeside[Req, Resp any](ctx context.Context, cc *contentconn.Conn,
	open func(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error),
	first *Req, src io.Reader, size int64, format besideFormat, extra []transfer.Sink, trailer func() *Req) (*Resp, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer cc.Close()
	stream, err := open(ctx)
	if err != nil {
		cc.Abort()
		return nil, err
	}
	if err := stream.Send(first); err != nil && !errors.Is(err, io.EOF) {
		cc.Abort()
		return nil, err
	}
	w := &besideWriter{cc: cc}
	send, finish, stop := format(w)
	fan := transfer.NewFanout(append(extra, send)...)
	if size > 0 {
		src = io.LimitReader(src, size)
	}
	n, err := fan.ReadFrom(src)
	if err != nil {
		// Closing the connection first ends a write that waits for an
		// endpoint that stopped reading, which Abort waits for.
		cc.Abort()
		fan.Abort(err)
	} else if err = fan.Close(); err == nil && size > 0 && n != size {
		err = fmt.Errorf("the content ended after %d of its %d bytes", n, size)
	}
	if err == nil && finish != nil {
		err = finish()
	}
	if err != nil {
		// A write that waits for an endpoint that stopped reading
		// fails now.
		cc.Abort()
		if stop != nil {
			stop()
		}
		if w.err != nil {
			// The endpoint stopped reading: its answer says why (a
			// refusal, or an image petreld holds already). Half-closing
			// is safe: the endpoint takes the content as whole only
			// once all of it came.
			return stream.CloseAndRecv()
		}
		// Cancelled without a half-close: the endpoint and petreld
		// keep nothing of it.
		cancel()
		return nil, err
	}
	if trailer != nil {
		if err := stream.Send(trailer()); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}

// uploadBlockBeside uploads r (total bytes, 0 when unknown, compressed
// or not) to block device name on the content connection cc, with its
// CRC-32C after it on the call: TLS protects the bytes on the network,
// and the CRC catches what a relay could still do to them (lose, repeat
// or reorder some) for a small part of SHA-256's cost. petreld reports
// the content's SHA-256 only with o.sha256. Compressed, the content goes
// in frames of marked chunks (transfer.FrameSink); otherwise as it is,
// total bytes.
func (c *Client) uploadBlockBeside(ctx context.Context, cc *contentconn.Conn, name string, r io.Reader, total int64, compress bool, progress Progress, o blockUpload) (*daemonv1.BlockInfo, error) {
	h := transfer.NewCRC32C()
	first := &daemonv1.BlockChunk{Name: name, Total: total, LocalFile: cc.Token, SkipSha256: !o.sha256}
	format, size := besideFormat(raw), total
	if compress {
		first.Gzip, first.Marked = true, true
		format, size = framed, 0
	}
	resp, err := uploadBeside(ctx, cc, c.API.BlockUpload, first,
		&countingReader{r: r, total: total, progress: progress}, size, format, []transfer.Sink{transfer.HashSink(h)},
		func() *daemonv1.BlockChunk { return &daemonv1.BlockChunk{Crc32C: proto.Uint32(h.Sum32())} })
	if err != nil {
		return nil, fmt.Errorf("upload to %s: %w", name, err)
	}
	return resp, nil
}

// downloadBlockBeside receives block device name's content on the
// content connection cc into tmp, verifying the CRC-32C that follows it
// on the call (see uploadBlockBeside); compressed, in frames of marked
// chunks.
func (c *Client) downloadBlockBeside(ctx context.Context, cc *contentconn.Conn, name, path string, tmp *os.File, compress bool, progress Progress) (int64, error) {
	defer cc.Close()
	stream, err := c.API.BlockDownload(ctx, &daemonv1.BlockDownloadRequest{Name: name, LocalFile: cc.Token, Crc32C: true, Gzip: compress, Marked: compress})
	if err != nil {
		return 0, err
	}
	head, err := stream.Recv()
	if err != nil {
		return 0, err
	}
	var src io.Reader = cc
	if compress {
		if !head.GetMarked() {
			return 0, fmt.Errorf("download %s: petreld sent no marked chunks on the content connection", name)
		}
		src = transfer.NewFramesReader(cc)
	}
	h := transfer.NewCRC32C()
	fan := transfer.NewFanout(transfer.HashSink(h), transfer.NewFileSink(tmp).Write)
	n, err := fan.ReadFrom(&countingReader{r: src, total: head.GetTotal(), progress: progress})
	if err != nil {
		fan.Abort(err)
	} else {
		err = fan.Close()
	}
	if err != nil {
		// The endpoint, if it still writes, finds the connection
		// closed and ends the call.
		cc.Abort()
	}
	// The checksum follows the content on the call, or the call's error
	// says why the content is short.
	var sent *uint32
	for {
		msg, rerr := stream.Recv()
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return n, fmt.Errorf("download %s: %w", name, rerr)
		}
		if len(msg.GetData()) > 0 {
			return n, fmt.Errorf("download %s: content in the call beside the content connection", name)
		}
		if msg.Crc32C != nil {
			sent = msg.Crc32C
		}
	}
	if err != nil {
		return n, fmt.Errorf("download %s: %w", name, err)
	}
	switch got := h.Sum32(); {
	case sent == nil:
		return n, fmt.Errorf("download %s: petreld sent no CRC-32C after the content; %s not written", name, path)
	case *sent != got:
		return n, fmt.Errorf("download %s: CRC-32C mismatch (daemon %08x, received %08x); %s not written", name, *sent, got, path)
	}
	return n, nil
}
