package endpoint

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	"github.com/petrel-vmm/petrel/sdk/protocodec"
)

// The content of block and image transfers passes through the endpoint
// as the encoded messages it arrived in: a message read into a
// rawMessage keeps gRPC's buffers, and sending it hands the same buffers
// to the other connection. Decoding every megabyte-sized chunk and
// encoding it again, as a typed relay does, costs two copies and an
// allocation per chunk on a host whose cores the transfer already keeps
// busy with TLS and hashing.
//
// Only messages that the authorization interceptors neither check nor
// filter travel raw: the chunks after the first of an upload (the first,
// which names what it writes to, is decoded and authorized as before)
// and the chunks of a block download (authz.Filter changes no
// BlockChunk). petreld decodes, checks and hashes them all itself.

// rawMessage is one gRPC message, still encoded.
type rawMessage struct {
	data mem.BufferSlice
}

// rawCodec is protocodec's protobuf codec, except that it leaves a
// rawMessage encoded: Unmarshal keeps a reference to the received
// buffers, and Marshal hands them on, to be freed once sent.
type rawCodec struct {
	protocodec.Codec
}

// codec is the endpoint's codec, on its server and on its calls to
// petreld that relay raw messages.
var codec = rawCodec{}

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*rawMessage); ok {
		data := m.data
		m.data = nil
		return data, nil
	}
	return c.Codec.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*rawMessage); ok {
		data.Ref()
		m.data = data
		return nil
	}
	return c.Codec.Unmarshal(data, v)
}

// relayUp copies a client stream from the caller to petreld, starting
// with first, which the handler received already (decoded: the
// interceptors authorized it as a request), and relays petreld's
// answer. The other messages travel raw.
func relayUp[Req, Resp any](stream grpc.ClientStreamingServer[Req, Resp], open func(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error), first *Req) error {
	octx, err := out(stream.Context())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(octx)
	defer cancel()
	upstream, err := open(ctx, grpc.ForceCodecV2(codec))
	if err != nil {
		return err
	}
	var m any = first
	for {
		if err := upstream.SendMsg(m); err != nil {
			if !errors.Is(err, io.EOF) {
				return err
			}
			// petreld ended the call early: its status says why, or
			// its answer came before the data (an image it has).
			return answer(stream, upstream)
		}
		raw := &rawMessage{}
		if err := stream.RecvMsg(raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			// Cancelling the upstream call tells petreld the transfer
			// was interrupted, so it keeps nothing of it.
			return err
		}
		m = raw
	}
	return answer(stream, upstream)
}

// answer relays petreld's answer to an upload, or its refusal.
func answer[Req, Resp any](stream grpc.ClientStreamingServer[Req, Resp], upstream grpc.ClientStreamingClient[Req, Resp]) error {
	resp, err := upstream.CloseAndRecv()
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// relayDownRaw opens a server stream to petreld and relays its messages
// to the caller raw, until it ends: for streams whose messages
// authz.Filter leaves as they are.
func relayDownRaw[Req, T any](stream grpc.ServerStreamingServer[T], req *Req, open func(context.Context, *Req, ...grpc.CallOption) (grpc.ServerStreamingClient[T], error)) error {
	octx, err := out(stream.Context())
	if err != nil {
		return err
	}
	upstream, err := open(octx, req, grpc.ForceCodecV2(codec))
	if err != nil {
		return err
	}
	for {
		m := &rawMessage{}
		if err := upstream.RecvMsg(m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if err := stream.SendMsg(m); err != nil {
			return err
		}
	}
}
