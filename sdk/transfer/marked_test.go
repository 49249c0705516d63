package transfer

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"errors"
	"io"
	"testing"
)

// markedChunk is one message of a marked transfer.
type markedChunk struct {
	data       []byte
	compressed bool
}

// marked sends data through a MarkedChunks, in writes of step bytes, and
// returns the messages it made, copied.
func marked(t testing.TB, data []byte, step int) ([]markedChunk, *MarkedChunks) {
	t.Helper()
	var out []markedChunk
	m := NewMarkedChunks(func(b []byte, compressed bool) error {
		out = append(out, markedChunk{append([]byte(nil), b...), compressed})
		return nil
	})
	for off := 0; off < len(data); off += step {
		if err := m.Write(data[off:min(off+step, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	return out, m
}

// source hands chunks to a MarkedReader, then err (io.EOF when nil).
func source(chunks []markedChunk, err error) ChunkSource {
	return func() ([]byte, bool, error) {
		if len(chunks) == 0 {
			if err == nil {
				err = io.EOF
			}
			return nil, false, err
		}
		c := chunks[0]
		chunks = chunks[1:]
		return c.data, c.compressed, nil
	}
}

// TestMarkedRoundTrip sends content whose chunks are random and
// repetitive in turn, in writes of several sizes: random chunks travel as
// they are (the same bytes, no framing), repetitive ones as gzip members
// that compress/gzip reads, and MarkedReader gives the content back with
// reads of several sizes. Empty content makes no chunk and reads empty.
func TestMarkedRoundTrip(t *testing.T) {
	random := make([]byte, 2*ChunkSize)
	rand.Read(random)
	repetitive := bytes.Repeat([]byte("petrel block device "), 3*ChunkSize/20)
	// Compressed and raw chunks in turn: a raw chunk must wait for the
	// compressed one queued before it.
	var alternate []byte
	alternate = append(alternate, repetitive[:ChunkSize]...)
	alternate = append(alternate, random[:ChunkSize]...)
	alternate = append(alternate, repetitive[:ChunkSize]...)
	alternate = append(alternate, random[ChunkSize:]...)
	alternate = append(alternate, repetitive[:5000]...)
	for _, tc := range []struct {
		data        []byte
		chunks, raw int
	}{{content(t), 6, 3}, {alternate, 5, 2}} {
		testMarkedRoundTrip(t, tc.data, tc.chunks, tc.raw)
	}
	chunks, _ := marked(t, nil, ChunkSize)
	got, err := readAll(NewMarkedReader(source(chunks, nil)), ChunkSize)
	if len(chunks) != 0 || len(got) != 0 || err != nil {
		t.Fatalf("empty content: %d chunks read as %d bytes, %v", len(chunks), len(got), err)
	}
}

// testMarkedRoundTrip is TestMarkedRoundTrip for one content, which
// makes wantChunks chunks, wantRaw of them incompressible.
func testMarkedRoundTrip(t *testing.T, data []byte, wantChunks, wantRaw int) {
	for _, step := range []int{ChunkSize, 3 * ChunkSize, len(data)} {
		chunks, m := marked(t, data, step)
		if m.Chunks != wantChunks || m.Raw != wantRaw || len(chunks) != wantChunks {
			t.Fatalf("writes of %d: %d chunks (%d sent), %d raw; want %d and %d", step, m.Chunks, len(chunks), m.Raw, wantChunks, wantRaw)
		}
		off := 0
		for i, c := range chunks {
			var plain []byte
			if c.compressed {
				zr, err := gzip.NewReader(bytes.NewReader(c.data))
				if err != nil {
					t.Fatal(err)
				}
				if plain, err = io.ReadAll(zr); err != nil {
					t.Fatalf("chunk %d: %v", i, err)
				}
				if len(c.data) >= len(plain) {
					t.Fatalf("chunk %d sent compressed in %d bytes for %d", i, len(c.data), len(plain))
				}
			} else {
				plain = c.data
			}
			if len(plain) > ChunkSize || !bytes.Equal(plain, data[off:off+len(plain)]) {
				t.Fatalf("writes of %d: chunk %d (compressed %v, %d bytes) is not the content at %d", step, i, c.compressed, len(plain), off)
			}
			off += len(plain)
		}
		for _, read := range []int{1000, 64 << 10, ChunkSize, 4 * ChunkSize} {
			r := NewMarkedReader(source(chunks, nil))
			got, err := readAll(r, read)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("reads of %d: %d of %d bytes, %v", read, len(got), len(data), err)
			}
			if r.Chunks != wantChunks || r.Compressed != wantChunks-wantRaw {
				t.Fatalf("reads of %d: %d chunks, %d compressed; want %d and %d", read, r.Chunks, r.Compressed, wantChunks, wantChunks-wantRaw)
			}
		}
	}
}

// TestMarkedReaderRefuses checks that a compressed chunk that is
// corrupted, truncated, empty, not gzip or followed by anything else is
// refused as ErrCorrupt, never read as content, and that the source's
// own errors come through as they are.
func TestMarkedReaderRefuses(t *testing.T) {
	data := content(t)
	good, _ := marked(t, data, ChunkSize)
	last := len(good) - 1
	if !good[last].compressed || good[0].compressed {
		t.Fatal("content does not start with a raw chunk and end with a compressed one")
	}
	member := good[last].data
	cases := map[string][]byte{
		"empty":            nil,
		"not gzip":         []byte("plain text, not a gzip member"),
		"raw chunk marked": good[0].data,
		"cut":              member[:len(member)/2],
		"trailer cut":      member[:len(member)-1],
		"data flip":        flip(member, len(member)/2),
		"crc flip":         flip(member, len(member)-6),
		"trailing garbage": append(append([]byte(nil), member...), "garbage"...),
	}
	for name, bad := range cases {
		chunks := append(append([]markedChunk(nil), good[:last]...), markedChunk{bad, true})
		got, err := readAll(NewMarkedReader(source(chunks, nil)), ChunkSize)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: read %d bytes, error %v; want ErrCorrupt", name, len(got), err)
		}
	}
	boom := errors.New("stream broken")
	if _, err := readAll(NewMarkedReader(source(good[:2], boom)), ChunkSize); !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Errorf("a failing source: %v; want its own error", err)
	}
}

// TestMarkedChunksSendError checks that a failed send, of a raw chunk or
// of a compressed one, stops the sending, reaches the writer and Close,
// and that Close sends what is queued when nothing failed.
func TestMarkedChunksSendError(t *testing.T) {
	random := make([]byte, ChunkSize)
	rand.Read(random)
	repetitive := bytes.Repeat([]byte("petrel "), ChunkSize/7)
	for _, chunk := range [][]byte{random, repetitive} {
		boom := errors.New("send failed")
		calls := 0
		m := NewMarkedChunks(func([]byte, bool) error {
			calls++
			if calls == 2 {
				return boom
			}
			return nil
		})
		var werr error
		for i := 0; i < 20 && werr == nil; i++ {
			werr = m.Write(chunk)
		}
		if err := m.Close(); !errors.Is(err, boom) {
			t.Fatalf("Close: %v, want the send's error", err)
		}
		if werr != nil && !errors.Is(werr, boom) {
			t.Fatalf("Write: %v", werr)
		}
		if calls != 2 {
			t.Fatalf("%d sends, want none after the failed second", calls)
		}
		if err := m.Write(chunk); err == nil {
			t.Fatal("Write after Close accepted")
		}

		sent := 0
		m = NewMarkedChunks(func([]byte, bool) error { sent++; return nil })
		for i := 0; i < 5; i++ {
			if err := m.Write(chunk); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Close(); err != nil || sent != 5 {
			t.Fatalf("Close: %v, %d of 5 chunks sent", err, sent)
		}
	}
}

// BenchmarkMarkedChunksIncompressible is the cost --gzip adds to a chunk
// of random bytes when chunks are marked: the entropy sample alone.
func BenchmarkMarkedChunksIncompressible(b *testing.B) {
	buf := make([]byte, ChunkSize)
	rand.Read(buf)
	m := NewMarkedChunks(func([]byte, bool) error { return nil })
	defer m.Close()
	b.SetBytes(ChunkSize)
	for i := 0; i < b.N; i++ {
		m.Write(buf)
	}
}
