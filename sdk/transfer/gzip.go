package transfer

import (
	"encoding/binary"
	"hash/crc32"
	"math"
)

// Compressed transfers between ends that do not both mark chunks (see
// MarkedChunks) are a sequence of gzip members, one per chunk,
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
// hands the member to next, on a goroutine of its own: framing or
// compressing a chunk overlaps sending the previous ones, so that on
// incompressible content --gzip adds little but a CRC beside the send.
// Members are handed to next in order, never two at once; next must not
// keep them (their buffers are reused). Write is not safe for concurrent
// use. Close must be called on every path: it waits for the members
// still queued and stops the goroutine.
type GzipChunks struct {
	memberSender
	// Members counts the members made, Stored those sent stored.
	Members, Stored int
}

// NewGzipChunks compresses chunks for next, and starts the goroutine
// that calls it.
func NewGzipChunks(next Sink) *GzipChunks {
	g := &GzipChunks{}
	g.start(next)
	return g
}

// Write compresses one chunk and queues it for sending; it is a Sink. It
// returns the error of an earlier send, if one failed.
func (g *GzipChunks) Write(p []byte) error {
	m, err := g.buffer()
	if err != nil {
		return err
	}
	g.Members++
	if entropy(p) > storedEntropy {
		g.Stored++
		if cap(m) < StoredMemberSize(len(p)) {
			m = make([]byte, 0, StoredMemberSize(max(len(p), ChunkSize)))
		}
		m = AppendStoredMember(m[:0], p)
	} else if m, err = g.compress(m, p); err != nil {
		g.release(m)
		return err
	}
	g.enqueue(m)
	return nil
}

// Finish makes an empty member when no chunk came, so that empty content
// is still a valid gzip stream, then sends what is queued, like Close.
func (g *GzipChunks) Finish() error {
	if g.Members == 0 {
		if err := g.Write(nil); err != nil {
			return err
		}
	}
	return g.Close()
}

// Close waits until the members queued are sent, stops the sending
// goroutine and returns the first error of next. It may be called more
// than once.
func (g *GzipChunks) Close() error { return g.close() }
