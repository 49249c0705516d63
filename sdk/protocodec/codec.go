// Package protocodec is gRPC's protobuf codec, made cheaper for the
// megabyte-sized messages of image and block transfers. It encodes and
// decodes exactly as gRPC's own codec does (the same bytes on the wire,
// the same messages out), and differs in what it costs:
//
//   - Messages are marshalled into buffers of Pool, which are not
//     cleared before use: gRPC's default pool clears each one (and for a
//     message over 1 MiB, a new one every time), one more pass over every
//     byte sent.
//   - A message that arrived in several buffers (gRPC reads one per
//     HTTP/2 frame of 16 KiB) is decoded from them where they are. gRPC's
//     codec first copies them into one contiguous buffer, which it also
//     clears, and protobuf then copies the bytes fields out of it; here
//     each bytes field is copied once, from the frames into the message,
//     into a buffer of Pool that the receiver may give back with Release
//     once it has used the data.
//
// Both ends of a transfer use it: the remote client's connection
// (sdk/client.DialTLS), petrel-endpoint, and petreld's servers.
package protocodec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Name is the codec's name, protobuf's: peers see no difference.
const Name = "proto"

// gatherBelow is the size under which a message that arrived in several
// buffers is gathered into one before decoding, as gRPC does: small
// messages have little to copy, and protobuf decodes them faster whole.
const gatherBelow = 64 << 10

// Codec is the codec; its zero value is ready to use.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is Name.
func (Codec) Name() string { return Name }

// Marshal encodes v, a protobuf message, into one buffer: from Pool when
// the message is large enough for gRPC to pool it.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("protocodec: cannot marshal %T, not a protobuf message", v)
	}
	// UseCachedSize reuses what Size has just computed; the message must
	// not change in between, which gRPC requires of a message being sent.
	size := proto.Size(m)
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := Pool.Get(size)
	out, err := opts.MarshalAppend((*buf)[:0], m)
	if err != nil {
		Pool.Put(buf)
		return nil, err
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, Pool)}, nil
}

// Unmarshal decodes data into v, a protobuf message.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m := messageOf(v)
	if m == nil {
		return fmt.Errorf("protocodec: cannot unmarshal into %T, not a protobuf message", v)
	}
	if len(data) > 1 && data.Len() >= gatherBelow && hasSplitFields(m.ProtoReflect().Descriptor()) {
		bufs := make([][]byte, len(data))
		for i, b := range data {
			bufs[i] = b.ReadOnlyData()
		}
		err := unmarshalSplit(bufs, m)
		if !errors.Is(err, errFallBack) {
			return err
		}
	}
	buf := data.MaterializeToBuffer(Pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// messageOf is v as a protobuf message (of either API), or nil.
func messageOf(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV2:
		return v
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	}
	return nil
}

// splitField tells whether fd is decoded from the buffers where they
// are: a singular bytes field outside any oneof, which the message holds
// as one slice set whole, the last occurrence winning. Required fields
// (proto2) are left to protobuf, which checks them.
func splitField(fd protoreflect.FieldDescriptor) bool {
	return fd != nil && fd.Kind() == protoreflect.BytesKind && fd.Cardinality() == protoreflect.Optional &&
		fd.ContainingOneof() == nil && !fd.IsExtension()
}

// hasSplitFields tells whether a message of type md has a field that
// splitField accepts.
func hasSplitFields(md protoreflect.MessageDescriptor) bool {
	fields := md.Fields()
	for i := range fields.Len() {
		if splitField(fields.Get(i)) {
			return true
		}
	}
	return false
}

// errFallBack is unmarshalSplit's way of saying that the message holds
// something it leaves to protobuf whole (a group, or wire data it cannot
// make sense of, for protobuf to report).
var errFallBack = errors.New("protocodec: decode whole")

// unmarshalSplit decodes the message held in bufs, in order, into m:
// the fields splitField accepts are copied from the buffers, each into a
// slice of its own; every other field is gathered, as it is on the wire,
// into a small buffer that protobuf decodes.
func unmarshalSplit(bufs [][]byte, m proto.Message) error {
	r := reader{bufs: bufs}
	fields := m.ProtoReflect().Descriptor().Fields()
	var rest []byte
	var split map[protoreflect.FieldDescriptor][][]byte
	for !r.empty() {
		start := len(rest)
		var err error
		if rest, err = r.appendVarint(rest); err != nil {
			return err
		}
		num, typ, n := protowire.ConsumeTag(rest[start:])
		if n < 0 {
			return errFallBack
		}
		switch typ {
		case protowire.VarintType:
			rest, err = r.appendVarint(rest)
		case protowire.Fixed32Type:
			rest, err = r.appendN(rest, 4)
		case protowire.Fixed64Type:
			rest, err = r.appendN(rest, 8)
		case protowire.BytesType:
			lenAt := len(rest)
			if rest, err = r.appendVarint(rest); err != nil {
				return err
			}
			size, n := protowire.ConsumeVarint(rest[lenAt:])
			if n < 0 || size > uint64(r.left()) {
				return errFallBack
			}
			if fd := fields.ByNumber(num); splitField(fd) {
				rest = rest[:start]
				if split == nil {
					split = make(map[protoreflect.FieldDescriptor][][]byte)
				}
				split[fd] = r.take(int(size))
				continue
			}
			rest, err = r.appendN(rest, int(size))
		default:
			return errFallBack
		}
		if err != nil {
			return err
		}
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	msg := m.ProtoReflect()
	for fd, parts := range split {
		b := join(parts)
		switch {
		case len(b) > 0:
			msg.Set(fd, protoreflect.ValueOfBytes(b))
		case fd.HasPresence():
			msg.Set(fd, protoreflect.ValueOfBytes([]byte{}))
		default:
			msg.Clear(fd)
		}
	}
	return nil
}

// reader reads a message held in several buffers, in order.
type reader struct {
	bufs [][]byte
	off  int // into bufs[0]
}

func (r *reader) empty() bool { return len(r.next()) == 0 }

// left is the number of bytes not read yet.
func (r *reader) left() int {
	n := -r.off
	for _, b := range r.bufs {
		n += len(b)
	}
	return n
}

// next is the unread part of the current buffer, skipping those read to
// their end.
func (r *reader) next() []byte {
	for len(r.bufs) > 0 && r.off == len(r.bufs[0]) {
		r.bufs, r.off = r.bufs[1:], 0
	}
	if len(r.bufs) == 0 {
		return nil
	}
	return r.bufs[0][r.off:]
}

// appendVarint appends the next varint, as it is on the wire, to b.
func (r *reader) appendVarint(b []byte) ([]byte, error) {
	for range binary.MaxVarintLen64 {
		cur := r.next()
		if len(cur) == 0 {
			return b, errFallBack
		}
		b = append(b, cur[0])
		r.off++
		if cur[0] < 0x80 {
			return b, nil
		}
	}
	return b, errFallBack
}

// appendN appends the next n bytes to b.
func (r *reader) appendN(b []byte, n int) ([]byte, error) {
	for n > 0 {
		cur := r.next()
		if len(cur) == 0 {
			return b, errFallBack
		}
		k := min(n, len(cur))
		b = append(b, cur[:k]...)
		r.off += k
		n -= k
	}
	return b, nil
}

// take returns the next n bytes, which the caller has checked are there,
// as slices of the buffers.
func (r *reader) take(n int) [][]byte {
	var parts [][]byte
	for n > 0 {
		cur := r.next()
		k := min(n, len(cur))
		parts = append(parts, cur[:k])
		r.off += k
		n -= k
	}
	return parts
}

// join copies parts into one slice: a buffer that Release gave back when
// Pool holds one of that size, or else new memory (which, unlike a new
// buffer of Pool's, is not cleared first).
func join(parts [][]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	var b *[]byte
	if n >= gatherBelow {
		b = pool.kept(n)
	}
	if b == nil {
		return bytes.Join(parts, nil)
	}
	out := (*b)[:0]
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Release gives b, the value of a bytes field that Unmarshal decoded,
// back to Pool, for the next message to be decoded into: a server that
// copies each chunk's data elsewhere and releases it then allocates
// nothing per chunk, and its garbage collector has that much less to do.
// Nothing may use b, or any slice of its array, afterwards; a slice that
// is not released is simply collected. Slices too small to be worth
// keeping are left alone.
func Release(b []byte) {
	if cap(b) >= gatherBelow {
		b = b[:0]
		Pool.Put(&b)
	}
}
