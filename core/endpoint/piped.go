package endpoint

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/sdk/fdpass"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/protocodec"
)

// The content of plain block uploads and downloads and of image uploads
// goes between the endpoint and petreld through a pipe rather than a
// second gRPC stream: the endpoint passes petreld one end of a pipe on
// the files socket beside petreld's remote socket (package fdpass), names
// it in the request, and writes its caller's chunks into the pipe, or
// reads petreld's content out of it. Framing megabytes in HTTP/2 and
// decoding them again costs about as much CPU as the rest of the hop;
// a pipe costs two copies in the kernel. The request itself still goes
// through the gRPC stream, with the caller's chain, and petreld
// authorizes it as before; checksums and the stream's end, which says
// whether the content is whole, still go through it too.
//
// When petreld takes no pipes (one without the files socket), the
// transfer is relayed as before.

// pipeSize is the capacity asked for the pipes: a whole chunk, so that
// the writer seldom waits for the reader.
const pipeSize = 1 << 20

// passPipe makes a pipe and passes one end of it to petreld (the read
// end when read is true), returning the other end and the token naming
// the passed one. ok is false when petreld takes no files.
func (p *proxy) passPipe(ctx context.Context, read bool) (mine *os.File, tok string, ok bool) {
	if p.files == "" {
		return nil, "", false
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, "", false
	}
	theirs := w
	mine = r
	if read {
		theirs, mine = r, w
	}
	growPipe(mine)
	tok, err = fdpass.Send(ctx, p.files, theirs)
	theirs.Close()
	if err != nil {
		mine.Close()
		return nil, "", false
	}
	return mine, tok, true
}

// piped is a transfer through a pipe: the context of its call to
// petreld (the caller's, with the caller's chain), the endpoint's end of
// the pipe, which stops waiting when the context ends, and the token of
// petreld's end.
type piped struct {
	ctx    context.Context
	cancel context.CancelFunc
	pipe   *os.File
	tok    string
	stop   func() bool
}

// startPiped starts a transfer through a pipe for the call whose context
// is callCtx, petreld reading the pipe when read is true. It returns nil
// and no error when petreld takes no pipes (the transfer is relayed as
// a stream), and nil and the error when the caller may not call petreld.
func (p *proxy) startPiped(callCtx context.Context, read bool) (*piped, error) {
	octx, err := out(callCtx)
	if err != nil {
		return nil, err
	}
	mine, tok, ok := p.passPipe(octx, read)
	if !ok {
		return nil, nil
	}
	t := &piped{pipe: mine, tok: tok}
	t.ctx, t.cancel = context.WithCancel(octx)
	t.stop = context.AfterFunc(t.ctx, func() { mine.SetDeadline(time.Now()) })
	return t, nil
}

// end cuts the call if it is still going and closes the pipe.
func (t *piped) end() {
	t.stop()
	t.cancel()
	t.pipe.Close()
}

// upPiped makes the call to petreld, opened with open, of an upload
// whose content goes through t's pipe: request names the pipe; feed
// writes the content into it through put, and rest passes on what
// follows the content once the pipe is closed (the checksum). A put
// that fails because petreld stopped reading ends with petreld's answer
// (a refusal, or an image it has already); any other failure of feed or
// rest cuts the call, so that petreld sees it cancelled, never ended as
// if the content were whole.
func upPiped[Req, Resp any](t *piped, stream grpc.ClientStreamingServer[Req, Resp], open func(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error),
	request func(tok string) *Req, feed func(put func([]byte) error) error, rest func(grpc.ClientStreamingClient[Req, Resp]) error) error {
	upstream, err := open(t.ctx)
	if err != nil {
		return err
	}
	if err := upstream.Send(request(t.tok)); err != nil {
		if errors.Is(err, io.EOF) {
			return answer(stream, upstream)
		}
		return err
	}
	var pipeErr error
	put := func(b []byte) error {
		_, pipeErr = t.pipe.Write(b)
		return pipeErr
	}
	if err := feed(put); err != nil {
		switch {
		case pipeErr != nil && t.ctx.Err() != nil:
			// The caller went away.
			return status.FromContextError(t.ctx.Err()).Err()
		case pipeErr != nil:
			return answer(stream, upstream)
		}
		t.cancel()
		return err
	}
	if err := t.pipe.Close(); err != nil {
		t.cancel()
		return err
	}
	if err := rest(upstream); err != nil {
		t.cancel()
		return err
	}
	return answer(stream, upstream)
}

// pipeUp relays an upload whose first message the handler received: its
// content through a pipe into petreld, the rest (the checksum, the end)
// through the stream. handled is false when petreld takes no pipes, and
// the caller relays the upload as a stream.
func pipeUp[Req any, Chunk interface {
	*Req
	GetData() []byte
	GetSha256() string
}, Resp any](p *proxy, stream grpc.ClientStreamingServer[Req, Resp], open func(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error),
	first Chunk, request func(tok string) *Req, trailer func(sha string) *Req) (handled bool, err error) {
	t, err := p.startPiped(stream.Context(), true)
	if t == nil {
		return err != nil, err
	}
	defer t.end()
	sha := first.GetSha256()
	feed := func(put func([]byte) error) error {
		data := first.GetData()
		for {
			if err := put(data); err != nil {
				return err
			}
			protocodec.Release(data)
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return err
			}
			msg := Chunk(m)
			if v := msg.GetSha256(); v != "" {
				sha = v
			}
			data = msg.GetData()
		}
	}
	rest := func(upstream grpc.ClientStreamingClient[Req, Resp]) error {
		if sha == "" {
			return nil
		}
		if err := upstream.Send(trailer(sha)); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return nil
	}
	return true, upPiped(t, stream, open, request, feed, rest)
}

func (p *proxy) BlockUpload(stream daemonv1.Daemon_BlockUploadServer) error {
	first := new(daemonv1.BlockChunk)
	if err := stream.RecvMsg(first); err != nil {
		return err
	}
	request := func(tok string) *daemonv1.BlockChunk {
		return &daemonv1.BlockChunk{Name: first.GetName(), Total: first.GetTotal(), Gzip: first.GetGzip(), Marked: first.GetMarked(), SkipSha256: first.GetSkipSha256(), LocalFile: tok}
	}
	trailer := func(sha string) *daemonv1.BlockChunk { return &daemonv1.BlockChunk{Sha256: sha} }
	if first.GetLocalFile() != "" {
		if first.GetGzip() && !first.GetMarked() {
			return status.Error(codes.InvalidArgument, "a compressed upload on a content connection comes in marked chunks")
		}
		return contentUp(p, stream, p.up.BlockUpload, first, first.GetTotal(), first.GetGzip(), request)
	}
	if !first.GetGzip() {
		handled, err := pipeUp(p, stream, p.up.BlockUpload, first, request, trailer)
		if handled {
			return err
		}
	}
	return relayUp(stream, p.up.BlockUpload, first)
}

func (p *proxy) UploadImage(stream daemonv1.Daemon_UploadImageServer) error {
	first := new(daemonv1.ImageChunk)
	if err := stream.RecvMsg(first); err != nil {
		return err
	}
	request := func(tok string) *daemonv1.ImageChunk {
		return &daemonv1.ImageChunk{Size: first.GetSize(), Sha256: first.GetSha256(), LocalFile: tok}
	}
	trailer := func(sha string) *daemonv1.ImageChunk { return &daemonv1.ImageChunk{Sha256: sha} }
	if first.GetLocalFile() != "" {
		return contentUp(p, stream, p.up.UploadImage, first, first.GetSize(), false, request)
	}
	handled, err := pipeUp(p, stream, p.up.UploadImage, first, request, trailer)
	if handled {
		return err
	}
	return relayUp(stream, p.up.UploadImage, first)
}

func (p *proxy) BlockDownload(req *daemonv1.BlockDownloadRequest, stream daemonv1.Daemon_BlockDownloadServer) error {
	if req.GetLocalFile() != "" {
		return p.contentDown(req, stream)
	}
	if !req.GetGzip() {
		if handled, err := p.pipeDown(req, stream); handled {
			return err
		}
	}
	return relayDownRaw(stream, req, p.up.BlockDownload)
}

// downPiped serves a block download whose content petreld writes into
// t's pipe: it asks petreld for it with req (to which it adds the pipe's
// token), passes on petreld's first chunk (name and total), has deliver
// take the content from the pipe to the caller, then passes on what
// follows it: petreld's checksum, or its error, which says why the
// content is short.
func (p *proxy) downPiped(t *piped, req *daemonv1.BlockDownloadRequest, stream daemonv1.Daemon_BlockDownloadServer, deliver func(r *os.File) error) error {
	req.LocalFile = t.tok
	upstream, err := p.up.BlockDownload(t.ctx, req)
	if err != nil {
		return err
	}
	head, err := upstream.Recv()
	if err != nil {
		return err
	}
	if err := stream.Send(head); err != nil {
		return err
	}
	if err := deliver(t.pipe); err != nil {
		if t.ctx.Err() != nil {
			return status.FromContextError(t.ctx.Err()).Err()
		}
		return err
	}
	return relayDown(upstream, stream.Send)
}

// pipeDown relays a plain block download: petreld writes the content into
// a pipe, which the endpoint sends on in chunks, then the checksum that
// follows it on the stream. handled is false when petreld takes no pipes.
func (p *proxy) pipeDown(req *daemonv1.BlockDownloadRequest, stream daemonv1.Daemon_BlockDownloadServer) (handled bool, err error) {
	t, err := p.startPiped(stream.Context(), false)
	if t == nil {
		return err != nil, err
	}
	defer t.end()
	return true, p.downPiped(t, &daemonv1.BlockDownloadRequest{Name: req.GetName()}, stream, func(r *os.File) error {
		buf := make([]byte, pipeSize)
		for {
			n, rerr := io.ReadFull(r, buf)
			if n > 0 {
				// Sending encodes the chunk before it returns: buf is
				// free again then.
				if err := stream.Send(&daemonv1.BlockChunk{Data: buf[:n]}); err != nil {
					return err
				}
			}
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
				return nil
			}
			if rerr != nil {
				return rerr
			}
		}
	})
}
