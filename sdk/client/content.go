package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/crc32"
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

// uploadBeside makes an upload call opened with open, whose first
// message first names the content connection cc and declares size, and
// writes size bytes of src on cc, handing each chunk to extra too (a
// hash); trailer, when not nil, gives the message that follows the
// content (its checksum). It returns the endpoint's answer. The endpoint
// takes exactly size bytes from cc, and the content is whole only when
// the call ends whole, which it does only once everything was written.
func uploadBeside[Req, Resp any](ctx context.Context, cc *contentconn.Conn,
	open func(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error),
	first *Req, src io.Reader, size int64, extra []transfer.Sink, trailer func() *Req) (*Resp, error) {
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
	var writeErr error
	write := func(b []byte) error {
		if _, err := cc.Write(b); err != nil {
			writeErr = err
			return err
		}
		return nil
	}
	fan := transfer.NewFanout(append(extra, write)...)
	n, err := fan.ReadFrom(io.LimitReader(src, size))
	if err != nil {
		fan.Abort(err)
	} else if err = fan.Close(); err == nil && n != size {
		err = fmt.Errorf("the content ended after %d of its %d bytes", n, size)
	}
	if err != nil {
		cc.Abort()
		if writeErr != nil {
			// The endpoint stopped reading: its answer says why (a
			// refusal, or an image petreld holds already). Half-closing
			// is safe: the endpoint takes the content as whole only
			// once it has all size bytes.
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

// uploadBlockBeside uploads r (total bytes) to block device name on the
// content connection cc, with its CRC-32C after it on the call: TLS
// protects the bytes on the network, and the CRC catches what a relay
// could still do to them (lose, repeat or reorder some) at a twentieth
// of SHA-256's cost. petreld still reports the content's SHA-256.
func (c *Client) uploadBlockBeside(ctx context.Context, cc *contentconn.Conn, name string, r io.Reader, total int64, progress Progress) (*daemonv1.BlockInfo, error) {
	h := crc32.New(castagnoli)
	resp, err := uploadBeside(ctx, cc, c.API.BlockUpload, &daemonv1.BlockChunk{Name: name, Total: total, LocalFile: cc.Token},
		&countingReader{r: r, total: total, progress: progress}, total, []transfer.Sink{hashSink(h)},
		func() *daemonv1.BlockChunk { return &daemonv1.BlockChunk{Crc32C: proto.Uint32(h.Sum32())} })
	if err != nil {
		return nil, fmt.Errorf("upload to %s: %w", name, err)
	}
	return resp, nil
}

// downloadBlockBeside receives block device name's content on the
// content connection cc into tmp, verifying the CRC-32C that follows it
// on the call (see uploadBlockBeside).
func (c *Client) downloadBlockBeside(ctx context.Context, cc *contentconn.Conn, name, path string, tmp *os.File, progress Progress) (int64, error) {
	defer cc.Close()
	stream, err := c.API.BlockDownload(ctx, &daemonv1.BlockDownloadRequest{Name: name, LocalFile: cc.Token, Crc32C: true})
	if err != nil {
		return 0, err
	}
	head, err := stream.Recv()
	if err != nil {
		return 0, err
	}
	h := crc32.New(castagnoli)
	fan := transfer.NewFanout(hashSink(h), transfer.NewFileSink(tmp).Write)
	n, err := fan.ReadFrom(&countingReader{r: cc, total: head.GetTotal(), progress: progress})
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

// castagnoli is CRC-32C's table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)
