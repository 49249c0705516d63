package protocodec

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// frames cuts b into buffers of n bytes (the last one shorter), as gRPC
// hands a received message to its codec, one buffer per HTTP/2 frame.
func frames(b []byte, n int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		s = append(s, mem.SliceBuffer(bytes.Clone(b[:k])))
		b = b[k:]
	}
	return s
}

// views is the bytes of each buffer of s.
func views(s mem.BufferSlice) [][]byte {
	v := make([][]byte, len(s))
	for i, b := range s {
		v[i] = b.ReadOnlyData()
	}
	return v
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestUnmarshalMatchesProtobuf decodes transfer messages of many sizes,
// cut into frames of many sizes, and wants what protobuf decodes from
// the same bytes whole: the large bytes field decoded from the frames,
// every other field as protobuf reads it.
func TestUnmarshalMatchesProtobuf(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 1000, gatherBelow - 10, gatherBelow, 1 << 20, 1<<20 + 3} {
		for _, frame := range []int{1, 7, 16 << 10, 1 << 20, 2 << 20} {
			if frame < 1000 && size > 1<<17 {
				continue // a byte or a few per buffer: slow, and covered by the small sizes
			}
			msgs := []proto.Message{
				&daemonv1.BlockChunk{Name: "alice:disk", Data: randomBytes(r, size), Total: int64(size), Marked: true, ChunkGzip: size%2 == 0},
				&daemonv1.BlockChunk{Data: randomBytes(r, size), Sha256: "ab12"},
				&daemonv1.ImageChunk{Data: randomBytes(r, size), Size: 42, Sha256: "cd34"},
			}
			for _, m := range msgs {
				wire, err := proto.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				got := m.ProtoReflect().New().Interface()
				if err := (Codec{}).Unmarshal(frames(wire, frame), got); err != nil {
					t.Fatalf("%T of %d bytes in frames of %d: %v", m, size, frame, err)
				}
				if !proto.Equal(got, m) {
					t.Fatalf("%T of %d bytes in frames of %d decoded differently", m, size, frame)
				}
			}
		}
	}
}

// TestUnmarshalSplitWireCases decodes, from frames, messages protobuf
// writes in no other order than its own but must read all the same: a
// field repeated (the last one wins, small or large, empty included),
// fields in any order, and a field this version does not know, which is
// kept.
func TestUnmarshalSplitWireCases(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	big, small := randomBytes(r, 200<<10), randomBytes(r, 10)
	field := func(b []byte, num protowire.Number, v []byte) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, v)
	}
	total := func(b []byte, v uint64) []byte {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		return protowire.AppendVarint(b, v)
	}
	unknown := func(b []byte) []byte {
		b = protowire.AppendTag(b, 99, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, 0x0102030405060708)
	}
	cases := map[string][]byte{
		"large then small":   field(field(nil, 3, big), 3, small),
		"small then large":   field(field(nil, 3, small), 3, big),
		"large then empty":   field(field(nil, 3, big), 3, nil),
		"data first":         total(field(field(nil, 3, big), 1, []byte("alice:disk")), 7),
		"total twice":        total(total(field(nil, 3, big), 1), 2),
		"unknown field":      unknown(field(unknown(nil), 3, big)),
		"name after unknown": field(unknown(field(nil, 3, big)), 1, []byte("n")),
	}
	for name, wire := range cases {
		want := &daemonv1.BlockChunk{}
		if err := proto.Unmarshal(wire, want); err != nil {
			t.Fatalf("%s: protobuf: %v", name, err)
		}
		got := &daemonv1.BlockChunk{}
		if err := unmarshalSplit(views(frames(wire, 16<<10)), got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !proto.Equal(got, want) || !bytes.Equal(got.ProtoReflect().GetUnknown(), want.ProtoReflect().GetUnknown()) {
			t.Errorf("%s: decoded %d bytes of data, unknown %x; protobuf %d, unknown %x", name,
				len(got.GetData()), got.ProtoReflect().GetUnknown(), len(want.GetData()), want.ProtoReflect().GetUnknown())
		}
	}
}

// TestUnmarshalInvalid wants an error for what protobuf refuses: a
// message cut short inside its large field, or inside a tag.
func TestUnmarshalInvalid(t *testing.T) {
	wire, err := proto.Marshal(&daemonv1.BlockChunk{Name: "x", Data: bytes.Repeat([]byte{7}, 100<<10)})
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{len(wire) - 1, len(wire) - 50<<10} {
		if err := (Codec{}).Unmarshal(frames(wire[:cut], 16<<10), &daemonv1.BlockChunk{}); err == nil {
			t.Errorf("a message cut to %d of %d bytes was decoded", cut, len(wire))
		}
	}
	bad := append(bytes.Clone(wire), 0x80) // a tag's varint left unfinished
	if err := (Codec{}).Unmarshal(frames(bad, 16<<10), &daemonv1.BlockChunk{}); err == nil {
		t.Error("a message ending inside a tag was decoded")
	}
}

// TestUnmarshalKeepsNothingOfTheFrames wants the decoded data to be a
// copy: gRPC reuses the frames' buffers once Unmarshal returns.
func TestUnmarshalKeepsNothingOfTheFrames(t *testing.T) {
	data := bytes.Repeat([]byte{1}, 300<<10)
	wire, err := proto.Marshal(&daemonv1.BlockChunk{Data: data})
	if err != nil {
		t.Fatal(err)
	}
	in := frames(wire, 16<<10)
	got := &daemonv1.BlockChunk{}
	if err := (Codec{}).Unmarshal(in, got); err != nil {
		t.Fatal(err)
	}
	for _, b := range in {
		clear(b.ReadOnlyData())
	}
	if !bytes.Equal(got.GetData(), data) {
		t.Fatal("the decoded data changed with the frames it came from")
	}
}

// TestMarshalMatchesProtobuf wants protobuf's bytes, small messages and
// large, the large in a buffer of Pool.
func TestMarshalMatchesProtobuf(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, size := range []int{0, 100, 1 << 20, 3<<20 + 1} {
		m := &daemonv1.BlockChunk{Name: "alice:disk", Data: randomBytes(r, size), Total: 9}
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := (Codec{}).Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want) {
			t.Errorf("a message of %d bytes of data is not encoded as protobuf encodes it", size)
		}
		got.Free()
	}
	if _, err := (Codec{}).Marshal("not a message"); err == nil {
		t.Error("a string was marshalled")
	}
}

// TestPool checks the buffers' lengths and capacities, and that Put
// keeps only buffers of a tier's capacity.
func TestPool(t *testing.T) {
	p := &bufferPool{}
	for _, n := range []int{0, 1, 255, 256, 257, 16 << 10, 1<<20 + 5, 1 << maxTier} {
		b := p.Get(n)
		if len(*b) != n || cap(*b) != 1<<tierFor(n) {
			t.Errorf("Get(%d): length %d, capacity %d", n, len(*b), cap(*b))
		}
		p.Put(b)
	}
	if b := p.Get(1<<maxTier + 1); len(*b) != 1<<maxTier+1 {
		t.Errorf("Get beyond the largest tier: length %d", len(*b))
	}
	odd := make([]byte, 1000)
	p.Put(&odd)
	if b := p.Get(1000); cap(*b) != 1024 {
		t.Errorf("a buffer of capacity %d, put back, came out for 1000 bytes", cap(*b))
	}
}

// TestReleaseReuses decodes a chunk, releases its data and wants a later
// decoding to be made in the same memory: a server that releases each
// chunk allocates none. (Pool may drop a buffer, as sync.Pool does, so
// the test tries a few times.)
func TestReleaseReuses(t *testing.T) {
	wire, err := proto.Marshal(&daemonv1.BlockChunk{Data: bytes.Repeat([]byte{9}, 1<<20)})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		m := &daemonv1.BlockChunk{}
		if err := (Codec{}).Unmarshal(frames(wire, 16<<10), m); err != nil {
			t.Fatal(err)
		}
		data := m.GetData()
		Release(data)
		next := &daemonv1.BlockChunk{}
		if err := (Codec{}).Unmarshal(frames(wire, 16<<10), next); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(next.GetData(), wire[len(wire)-1<<20:]) {
			t.Fatal("a chunk decoded into released memory differs from what was sent")
		}
		if &next.GetData()[0] == &data[0] {
			return
		}
	}
	t.Fatal("released data was never reused")
}
