// Package client is the Go client of petreld's daemon API. The petrel CLI
// uses it, and so can any program that manages VMs on a host.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"

	"github.com/petrel-vmm/petrel/sdk/fdpass"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/protocodec"
)

// DefaultSocket is where petreld listens with its default configuration.
const DefaultSocket = "/run/petrel/petreld.sock"

// SocketEnv names the environment variable that overrides DefaultSocket.
const SocketEnv = "PETREL_SOCKET"

// SocketPath returns flagValue if set, else $PETREL_SOCKET, else
// DefaultSocket.
func SocketPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv(SocketEnv); env != "" {
		return env
	}
	return DefaultSocket
}

// Client talks to one petreld.
type Client struct {
	conn *grpc.ClientConn
	// API is the generated client, for calls without a helper here.
	API daemonv1.DaemonClient
	// files is the files socket of a local petreld (package fdpass),
	// on which transfers of regular files pass the file instead of
	// sending its content; empty for a remote one.
	files string
	// content is where a remote client opens content connections for
	// its transfers; nil for a local one.
	content *remoteContent

	// markedMu guards markedKnown and marked: whether the daemon reads
	// block uploads with marked chunks, asked once per Client.
	markedMu    sync.Mutex
	markedKnown bool
	marked      bool

	// pluginsRefused is set once petreld has refused this client its full
	// plugin list (ListPlugins).
	pluginsRefused atomic.Bool
}

// ChunkSize is the size of each image upload message.
const ChunkSize = 1 << 20

// Dial connects to the daemon socket. The connection is made lazily; the
// first call reports an unreachable daemon.
func Dial(socket string) (*Client, error) {
	conn, err := grpc.NewClient("unix://"+socket, SocketOptions()...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", socket, err)
	}
	return &Client{conn: conn, API: daemonv1.NewDaemonClient(conn), files: fdpass.FilesSocket(socket)}, nil
}

// SocketOptions are the gRPC options of a connection to one of petreld's
// unix sockets, for programs that make their own (petrel-endpoint's, to
// the remote socket): streamed transfers carry megabytes over it, which
// the default 64 KiB flow-control window would stall, and protocodec's
// codec and pool spare them copies.
func SocketOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.ForceCodecV2(protocodec.Codec{})),
		grpc.WithInitialWindowSize(8 << 20), grpc.WithInitialConnWindowSize(16 << 20),
		experimental.WithBufferPool(protocodec.Pool),
	}
}

// StreamContent makes this client carry the content of its transfers
// through the daemon API even to a local petreld that takes passed
// files, or to a petrel-endpoint that takes content connections: to
// compare the ways. Call it before the client's first transfer.
func (c *Client) StreamContent() { c.files, c.content = "", nil }

// Over returns a Client that calls petreld through api, a connection made
// elsewhere (petrel-kubelet's, whose certificates rotate): its transfers
// stream their content, and Close leaves the connection to its owner.
func Over(api daemonv1.DaemonClient) *Client { return &Client{API: api} }

// Close closes the connection, if the Client made it.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// UploadImage streams r (of size bytes, or -1 when unknown) to the
// daemon's image store. progress, when not nil, is called after each chunk.
func (c *Client) UploadImage(ctx context.Context, r io.Reader, size int64, progress func(sent int64)) (*daemonv1.ImageRef, error) {
	return c.uploadImage(ctx, r, size, "", progress)
}

// uploadImage is UploadImage naming the content's SHA-256 (lowercase hex)
// when sha is not empty: the daemon then answers as soon as it finds it
// has that image, and the rest of r is not sent.
func (c *Client) uploadImage(ctx context.Context, r io.Reader, size int64, sha string, progress func(sent int64)) (*daemonv1.ImageRef, error) {
	// Cancelling on return ends the stream on every path, so an upload
	// abandoned on an error neither lingers nor is stored.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if f, ok := r.(*os.File); ok && size >= 0 {
		tok, ok, err := c.passFile(ctx, f)
		if err != nil {
			return nil, err
		}
		if ok {
			var p Progress
			if progress != nil {
				p = func(done, _ int64) { progress(done) }
			}
			return uploadPassed(ctx, f, size, p, c.API.UploadImage, &daemonv1.ImageChunk{Size: size, Sha256: sha, LocalFile: tok})
		}
	}
	if size > 0 {
		if cc := c.openContent(ctx); cc != nil {
			var src io.Reader = r
			if progress != nil {
				src = &countingReader{r: r, total: size, progress: func(done, _ int64) { progress(done) }}
			}
			return uploadBeside(ctx, cc, c.API.UploadImage, &daemonv1.ImageChunk{Size: size, Sha256: sha, LocalFile: cc.Token}, src, size, raw, nil, nil)
		}
	}
	stream, err := c.API.UploadImage(ctx)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, ChunkSize)
	var sent int64
	first := true
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 || first {
			msg := &daemonv1.ImageChunk{Data: buf[:n]}
			if first && size >= 0 {
				msg.Size = size
			}
			if first {
				msg.Sha256 = sha
			}
			first = false
			if err := stream.Send(msg); err != nil {
				if errors.Is(err, io.EOF) {
					// The daemon ended the call early: it had the
					// image already, or it refused the upload.
					return stream.CloseAndRecv()
				}
				return nil, err
			}
			sent += int64(n)
			if progress != nil {
				progress(sent)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			// No CloseSend: a half-close would tell petreld the image is
			// complete, and it could store the part received before the
			// cancellation reached it. The deferred cancel aborts the
			// stream instead.
			return nil, fmt.Errorf("read image: %w", rerr)
		}
	}
	return stream.CloseAndRecv()
}

// UploadImageFile uploads the file at path. It hashes the file first and
// names the digest, so that a daemon that has the image already (another
// VM's, or an earlier upload's) answers at once: the content is not sent
// again, and an image the caller's domain holds already costs its image
// allowance nothing.
func (c *Client) UploadImageFile(ctx context.Context, path string, progress func(sent, total int64)) (*daemonv1.ImageRef, error) {
	sha, err := HashFile(path)
	if err != nil {
		return nil, err
	}
	return c.uploadImageFile(ctx, path, sha, progress)
}

// uploadImageFile uploads the file at path, whose SHA-256 the caller
// computed: petreld checks the content against it.
func (c *Client) uploadImageFile(ctx context.Context, path, sha string, progress func(sent, total int64)) (*daemonv1.ImageRef, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	var p func(int64)
	var reported int64
	if progress != nil {
		p = func(sent int64) { reported = sent; progress(sent, fi.Size()) }
	}
	ref, err := c.uploadImage(ctx, f, fi.Size(), sha, p)
	if err == nil && progress != nil && reported < fi.Size() {
		progress(fi.Size(), fi.Size()) // done, though answered early
	}
	return ref, err
}
