package transfer

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

// Compressed transfers are a sequence of gzip members, one per chunk,
// which together read as one gzip stream (a multistream, RFC 1952 §2.2):
// what any gzip reader, and earlier Petrel releases, accept. Each member
// is compressed at the fastest level, or stored (deflate without
// compression, framed and checksummed as usual) when a sample of the
// chunk shows it would not shrink: random, encrypted or already
// compressed content then costs one copy and a CRC instead of a
// compressor that finds nothing, so --gzip costs almost nothing over a
// plain transfer. Stored members are framed here directly rather than by
// compress/gzip, whose stored path copies the chunk twice; GzipReader
// reads them back with one copy.

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

// gzipHeader is the header of every stored member: deflate, no flags, no
// modification time, no extra flags, operating system unknown (255), as
// compress/gzip writes it.
var gzipHeader = [10]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}

// maxStoredBlock is the most a deflate stored block holds (RFC 1951
// §3.2.4: its length is 16 bits).
const maxStoredBlock = 1<<16 - 1

// StoredMemberSize is the size of the gzip member AppendStoredMember
// makes of n bytes: header, a 5-byte header per stored block, trailer.
func StoredMemberSize(n int) int {
	blocks := max(1, (n+maxStoredBlock-1)/maxStoredBlock)
	return len(gzipHeader) + 5*blocks + n + 8
}

// AppendStoredMember appends to dst a gzip member holding p in deflate
// stored blocks, with p's CRC-32 and length in its trailer.
func AppendStoredMember(dst, p []byte) []byte {
	dst = append(dst, gzipHeader[:]...)
	crc := crc32.ChecksumIEEE(p)
	size := uint32(len(p))
	for {
		n := min(len(p), maxStoredBlock)
		final := byte(0)
		if n == len(p) {
			final = 1 // BFINAL, BTYPE 00; the rest of the byte is padding
		}
		dst = append(dst, final, byte(n), byte(n>>8), ^byte(n), ^byte(n>>8))
		dst = append(dst, p[:n]...)
		p = p[n:]
		if final == 1 {
			break
		}
	}
	dst = binary.LittleEndian.AppendUint32(dst, crc)
	return binary.LittleEndian.AppendUint32(dst, size)
}

// GzipChunks compresses each chunk into a gzip member of its own and
// hands the member to next. It is not safe for concurrent use; its
// buffers are reused, so next must not keep the member.
type GzipChunks struct {
	next   Sink
	buf    bytes.Buffer
	member []byte
	fast   *gzip.Writer
	// Members counts the members made, Stored those sent stored.
	Members, Stored int
}

// NewGzipChunks compresses chunks for next.
func NewGzipChunks(next Sink) *GzipChunks {
	return &GzipChunks{next: next}
}

// Write compresses one chunk; it is a Sink.
func (g *GzipChunks) Write(p []byte) error {
	g.Members++
	if entropy(p) > storedEntropy {
		g.Stored++
		if cap(g.member) < StoredMemberSize(len(p)) {
			g.member = make([]byte, 0, StoredMemberSize(max(len(p), ChunkSize)))
		}
		g.member = AppendStoredMember(g.member[:0], p)
		return g.next(g.member)
	}
	g.buf.Reset()
	if g.fast == nil {
		g.fast, _ = gzip.NewWriterLevel(&g.buf, gzip.BestSpeed)
	}
	g.fast.Reset(&g.buf)
	if _, err := g.fast.Write(p); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	if err := g.fast.Close(); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
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
