package transfer

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"
)

// chunked frames data as GzipChunks does for a transfer.
func chunked(t testing.TB, data []byte) ([]byte, *GzipChunks) {
	t.Helper()
	var wire bytes.Buffer
	g := NewGzipChunks(func(b []byte) error { wire.Write(b); return nil })
	for off := 0; off < len(data); off += ChunkSize {
		if err := g.Write(data[off:min(off+ChunkSize, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Finish(); err != nil {
		t.Fatal(err)
	}
	return wire.Bytes(), g
}

// readAll reads r with reads of at most step bytes.
func readAll(r io.Reader, step int) ([]byte, error) {
	var out []byte
	buf := make([]byte, step)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// TestGzipReaderChunks reads what GzipChunks makes of stored, compressed
// and empty chunks, with reads of many sizes, and a source that yields
// a few bytes at a time.
func TestGzipReaderChunks(t *testing.T) {
	for _, data := range [][]byte{content(t), nil} {
		wire, g := chunked(t, data)
		if len(data) > 0 && (g.Stored != 3 || g.Members != 6) {
			t.Fatalf("%d members, %d stored; want 6 and 3", g.Members, g.Stored)
		}
		for _, step := range []int{1, 1000, 65535, 65536, ChunkSize, 3 * ChunkSize} {
			if step == 1 && len(data) > 0 {
				continue // too slow for megabytes; the small source below covers it
			}
			z := NewGzipReader(bytes.NewReader(wire))
			got, err := readAll(z, step)
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("step %d: %d bytes read, want %d", step, len(got), len(data))
			}
			if z.Members() != g.Members {
				t.Fatalf("step %d: %d members read, %d written", step, z.Members(), g.Members)
			}
		}
		got, err := io.ReadAll(NewGzipReader(&smallReader{r: bytes.NewReader(wire), n: 7}))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("from a source of 7-byte reads: %d bytes, %v", len(got), err)
		}
	}
}

// smallReader returns at most n bytes per read, as a stream of small
// messages would.
type smallReader struct {
	r io.Reader
	n int
}

func (s *smallReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), s.n)]) }

// TestStoredMemberStandardReader checks that compress/gzip — earlier
// Petrel daemons and clients, and any gzip tool — reads stored members
// made here, one after the other, as one stream.
func TestStoredMemberStandardReader(t *testing.T) {
	a := make([]byte, 3*maxStoredBlock+17)
	rand.Read(a)
	var wire []byte
	for _, p := range [][]byte{a, nil, a[:maxStoredBlock], a[:1]} {
		before := len(wire)
		wire = AppendStoredMember(wire, p)
		if len(wire)-before != StoredMemberSize(len(p)) {
			t.Fatalf("member of %d bytes is %d long, StoredMemberSize says %d", len(p), len(wire)-before, StoredMemberSize(len(p)))
		}
	}
	zr, err := gzip.NewReader(bytes.NewReader(wire))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte(nil), a...), a[:maxStoredBlock]...), a[:1]...)
	if !bytes.Equal(got, want) {
		t.Fatalf("compress/gzip read %d bytes, want %d", len(got), len(want))
	}
}

// TestGzipReaderStandardWriters reads what compress/gzip writes at every
// level (as earlier Petrel clients and daemons sent it, one member for
// the whole content), with header fields set, and several members.
func TestGzipReaderStandardWriters(t *testing.T) {
	data := content(t)
	for _, level := range []int{gzip.HuffmanOnly, gzip.NoCompression, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression} {
		var wire bytes.Buffer
		for i := 0; i < 2; i++ {
			zw, _ := gzip.NewWriterLevel(&wire, level)
			zw.Name, zw.Comment, zw.Extra = "disk.img", "a comment", []byte("extra")
			zw.Write(data)
			zw.Close()
		}
		b := wire.Bytes()
		want := append(append([]byte(nil), data...), data...)
		got, err := readAll(NewGzipReader(bytes.NewReader(b)), 100000)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("level %d: %d bytes, %v", level, len(got), err)
		}
	}
}

// TestGzipReaderHeaderCRC reads a member whose header carries its own
// CRC (FHCRC), and refuses it when that CRC is wrong.
func TestGzipReaderHeaderCRC(t *testing.T) {
	hdr := append([]byte(nil), gzipHeader[:]...)
	hdr[3] |= 1 << 1
	sum := crc32.ChecksumIEEE(hdr)
	member := AppendStoredMember(nil, []byte("content"))
	wire := append(binary.LittleEndian.AppendUint16(hdr, uint16(sum)), member[len(gzipHeader):]...)
	if got, err := io.ReadAll(NewGzipReader(bytes.NewReader(wire))); err != nil || string(got) != "content" {
		t.Fatalf("read %q, %v", got, err)
	}
	wire[len(gzipHeader)] ^= 1
	if _, err := io.ReadAll(NewGzipReader(bytes.NewReader(wire))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong header CRC: %v", err)
	}
}

// TestGzipReaderDictionary reads a member whose compressed block refers
// back into the stored block before it: the reader must give flate the
// member's output so far. The member is built by hand, as no writer here
// makes one, but any deflate encoder may.
func TestGzipReaderDictionary(t *testing.T) {
	x := make([]byte, 40000)
	rand.Read(x)
	y := bytes.Repeat(x[len(x)-1000:], 20) // only compressible through x
	var member bytes.Buffer
	member.Write(gzipHeader[:])
	member.Write([]byte{0, byte(len(x)), byte(len(x) >> 8), ^byte(len(x)), ^byte(len(x) >> 8)}) // stored, not final
	member.Write(x)
	fw, _ := flate.NewWriterDict(&member, flate.BestCompression, x)
	fw.Write(y)
	fw.Close()
	all := append(append([]byte(nil), x...), y...)
	member.Write(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(all)), uint32(len(all))))
	if member.Len() > len(x)+len(y)/2 {
		t.Fatalf("the compressed block does not refer back (%d bytes)", member.Len())
	}
	for _, step := range []int{1000, 30000, 1 << 20} {
		got, err := readAll(NewGzipReader(bytes.NewReader(member.Bytes())), step)
		if err != nil || !bytes.Equal(got, all) {
			t.Fatalf("step %d: %d bytes, %v", step, len(got), err)
		}
	}
	// Two such members in one read: each has a dictionary of its own.
	two := append(append([]byte(nil), member.Bytes()...), member.Bytes()...)
	got, err := readAll(NewGzipReader(bytes.NewReader(two)), 1<<20)
	if err != nil || !bytes.Equal(got, append(append([]byte(nil), all...), all...)) {
		t.Fatalf("two members: %d bytes, %v", len(got), err)
	}
}

// TestGzipReaderRefuses checks that corrupted, truncated, empty and
// trailing-garbage streams are refused, as ErrCorrupt, never read as
// content.
func TestGzipReaderRefuses(t *testing.T) {
	data := content(t)
	wire, _ := chunked(t, data)
	first := StoredMemberSize(ChunkSize) // the first member is stored
	cases := map[string][]byte{
		"empty":             nil,
		"not gzip":          []byte("plain text, not a gzip stream at all"),
		"trailing garbage":  append(append([]byte(nil), wire...), "garbage"...),
		"trailing zero":     append(append([]byte(nil), wire...), 0),
		"header cut":        wire[:5],
		"block header cut":  wire[:12],
		"stored data cut":   wire[:first/2],
		"trailer cut":       wire[:first-3],
		"compressed cut":    wire[:len(wire)-StoredMemberSize(777)-100],
		"last trailer cut":  wire[:len(wire)-1],
		"stored data flip":  flip(wire, first/2),
		"stored crc flip":   flip(wire, first-6),
		"stored size flip":  flip(wire, first-2),
		"stored len flip":   flip(wire, len(gzipHeader)+1),
		"stored nlen flip":  flip(wire, len(gzipHeader)+3),
		"compressed flip":   flip(wire, len(wire)-StoredMemberSize(777)-100),
		"reserved flag set": flipBit(wire, 3, 0x80),
		"method not flate":  flipBit(wire, 2, 1),
	}
	for name, in := range cases {
		got, err := readAll(NewGzipReader(bytes.NewReader(in)), ChunkSize)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: read %d bytes, error %v; want ErrCorrupt", name, len(got), err)
		}
	}
	boom := errors.New("source failed")
	if _, err := io.ReadAll(NewGzipReader(io.MultiReader(bytes.NewReader(wire[:first/2]), &failing{boom}))); !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Errorf("a failing source: %v; want its own error", err)
	}
}

func flip(b []byte, i int) []byte { return flipBit(b, i, 0x10) }

func flipBit(b []byte, i int, bit byte) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= bit
	return c
}

type failing struct{ err error }

func (f *failing) Read([]byte) (int, error) { return 0, f.err }

// BenchmarkGzipReaderStored is the receiving side's cost of --gzip on
// incompressible content: stored members read with one copy and a CRC.
func BenchmarkGzipReaderStored(b *testing.B) {
	benchmarkReader(b, func(r io.Reader) (io.Reader, error) { return NewGzipReader(r), nil })
}

// BenchmarkGzipReaderStoredStdlib is the same with compress/gzip, for
// comparison.
func BenchmarkGzipReaderStoredStdlib(b *testing.B) {
	benchmarkReader(b, func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) })
}

func benchmarkReader(b *testing.B, open func(io.Reader) (io.Reader, error)) {
	buf := make([]byte, ChunkSize)
	rand.Read(buf)
	var wire []byte
	for i := 0; i < 16; i++ {
		wire = AppendStoredMember(wire, buf)
	}
	b.SetBytes(16 * ChunkSize)
	for i := 0; i < b.N; i++ {
		r, err := open(bytes.NewReader(wire))
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := io.ReadFull(r, buf); err != nil {
				break
			}
		}
	}
}

// TestGzipChunksSendError checks that a failed send stops the sending,
// reaches the writer (at a later Write or at Close) and that Close stops
// the goroutine whatever happened.
func TestGzipChunksSendError(t *testing.T) {
	boom := errors.New("send failed")
	calls := 0
	g := NewGzipChunks(func([]byte) error {
		calls++
		if calls == 2 {
			return boom
		}
		return nil
	})
	chunk := make([]byte, ChunkSize)
	rand.Read(chunk)
	var werr error
	for i := 0; i < 20 && werr == nil; i++ {
		werr = g.Write(chunk)
	}
	if err := g.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close: %v, want the send's error", err)
	}
	if werr != nil && !errors.Is(werr, boom) {
		t.Fatalf("Write: %v", werr)
	}
	if calls != 2 {
		t.Fatalf("%d sends, want none after the failed second", calls)
	}
	if err := g.Write(chunk); err == nil {
		t.Fatal("Write after Close accepted")
	}

	// Closed without Finish, nothing failed: every queued member is sent.
	sent := 0
	g = NewGzipChunks(func([]byte) error { sent++; return nil })
	for i := 0; i < 5; i++ {
		if err := g.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Close(); err != nil || sent != 5 {
		t.Fatalf("Close: %v, %d of 5 members sent", err, sent)
	}
}
