package transfer

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"math"
)

// Compressed transfers are a sequence of gzip members, one per chunk,
// which together read as one gzip stream (a multistream, RFC 1952 §2.2):
// what any gzip reader, and earlier Petrel releases, accept. Each member
// is compressed at the fastest level, or stored (deflate without
// compression, framed and checksummed as usual) when a sample of the
// chunk shows it would not shrink: random, encrypted or already
// compressed content then costs a copy and a CRC instead of a compressor
// that finds nothing, so --gzip is never much slower than a plain
// transfer.

// storedEntropy is the order-0 entropy, in bits per byte, above which a
// chunk is sent stored. Deflate at its fastest level gains little above
// it; random bytes measure just under 8.
const storedEntropy = 7.5

// sampleSize is how many bytes, taken in four slices spread over the
// chunk, the entropy estimate reads.
const sampleSize = 16 << 10

// entropy estimates the order-0 entropy of b, in bits per byte, from a
// sample.
func entropy(b []byte) float64 {
	var counts [256]int
	n := 0
	count := func(p []byte) {
		for _, c := range p {
			counts[c]++
		}
		n += len(p)
	}
	if len(b) <= sampleSize {
		count(b)
	} else {
		step := len(b) / 4
		for i := 0; i < 4; i++ {
			count(b[i*step : i*step+sampleSize/4])
		}
	}
	if n == 0 {
		return 0
	}
	var h float64
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / float64(n)
			h -= p * math.Log2(p)
		}
	}
	return h
}

// GzipChunks compresses each chunk into a gzip member of its own and
// hands the member to next. It is not safe for concurrent use; its
// buffers are reused, so next must not keep the member.
type GzipChunks struct {
	next   Sink
	buf    bytes.Buffer
	fast   *gzip.Writer
	stored *gzip.Writer
	// Members counts the members made, Stored those sent stored.
	Members, Stored int
}

// NewGzipChunks compresses chunks for next.
func NewGzipChunks(next Sink) *GzipChunks {
	return &GzipChunks{next: next}
}

// Write compresses one chunk; it is a Sink.
func (g *GzipChunks) Write(p []byte) error {
	g.buf.Reset()
	var zw *gzip.Writer
	if entropy(p) > storedEntropy {
		if g.stored == nil {
			g.stored, _ = gzip.NewWriterLevel(&g.buf, gzip.NoCompression)
		}
		zw = g.stored
		g.Stored++
	} else {
		if g.fast == nil {
			g.fast, _ = gzip.NewWriterLevel(&g.buf, gzip.BestSpeed)
		}
		zw = g.fast
	}
	zw.Reset(&g.buf)
	if _, err := zw.Write(p); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	g.Members++
	return g.next(g.buf.Bytes())
}

// Finish makes an empty member when no chunk came, so that empty content
// is still a valid gzip stream.
func (g *GzipChunks) Finish() error {
	if g.Members > 0 {
		return nil
	}
	return g.Write(nil)
}
