package transfer

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// content is a mix of random (incompressible) and repetitive chunks of
// odd sizes, so that chunk boundaries and both gzip framings are met.
func content(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	r := make([]byte, 3*ChunkSize+12345)
	rand.Read(r)
	b.Write(r)
	b.Write(bytes.Repeat([]byte("petrel block device "), 150000))
	b.Write(r[:777])
	return b.Bytes()
}

func TestFanoutOrderAndHash(t *testing.T) {
	data := content(t)
	var got bytes.Buffer
	h := sha256.New()
	f := NewFanout(func(b []byte) error { h.Write(b); return nil }, func(b []byte) error { got.Write(b); return nil })
	if n, err := f.ReadFrom(bytes.NewReader(data)); err != nil || n != int64(len(data)) {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	if _, err := f.Write(data[:1000]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), data...), data[:1000]...)
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatal("the sink saw other bytes, or out of order")
	}
	if sum := sha256.Sum256(want); !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatal("hash differs")
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("write after close accepted")
	}
}

func TestFanoutSinkErrorStops(t *testing.T) {
	boom := errors.New("boom")
	calls := 0
	f := NewFanout(func([]byte) error { calls++; return boom }, func([]byte) error { return nil })
	_, err := f.ReadFrom(io.LimitReader(rand.Reader, 100*ChunkSize))
	if !errors.Is(err, boom) {
		t.Fatalf("ReadFrom: %v, want boom", err)
	}
	if err := f.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close: %v", err)
	}
	if calls != 1 {
		t.Fatalf("the failed sink was called %d times", calls)
	}
}

func TestFanoutAbort(t *testing.T) {
	f := NewFanout(func([]byte) error { return nil })
	f.Write(make([]byte, 3*ChunkSize))
	f.Abort(nil)
	if f.Close() == nil {
		t.Fatal("an aborted fanout reports no error")
	}
}

func TestGzipChunksRoundTrip(t *testing.T) {
	for _, data := range [][]byte{content(t), nil} {
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
		zr, err := gzip.NewReader(&wire)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("round trip of %d bytes gave %d", len(data), len(got))
		}
		if len(data) > 0 && (g.Stored != 3 || g.Members != 6) {
			t.Fatalf("%d members, %d stored; want 6 and 3 (the random ones)", g.Members, g.Stored)
		}
	}
}

func TestFileSink(t *testing.T) {
	data := content(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := NewFileSink(f)
	for off := 0; off < len(data); off += ChunkSize {
		if err := s.Write(data[off:min(off+ChunkSize, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, data) || s.Written() != int64(len(data)) {
		t.Fatal("file content differs")
	}
}

// BenchmarkGzipChunksIncompressible is the cost --gzip adds to a chunk of
// random bytes: an entropy sample, then a stored member.
func BenchmarkGzipChunksIncompressible(b *testing.B) {
	buf := make([]byte, ChunkSize)
	rand.Read(buf)
	g := NewGzipChunks(func([]byte) error { return nil })
	b.SetBytes(ChunkSize)
	for i := 0; i < b.N; i++ {
		g.Write(buf)
	}
}

// BenchmarkSHA256 is the rate of one core hashing: a transfer hashes its
// content on both ends, so on a two-core host two such passes share the
// cores with everything else the transfer does.
func BenchmarkSHA256(b *testing.B) {
	buf := make([]byte, ChunkSize)
	rand.Read(buf)
	h := sha256.New()
	b.SetBytes(ChunkSize)
	for i := 0; i < b.N; i++ {
		h.Write(buf)
	}
}
