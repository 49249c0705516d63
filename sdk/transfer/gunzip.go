package transfer

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// windowSize is deflate's window: how far back a compressed block may
// refer into what came before it in its member.
const windowSize = 32 << 10

// GzipReader reads a gzip stream of any number of members (RFC 1952),
// as compress/gzip's Reader does, verifying every member's CRC-32 and
// length, and refusing a stream that is truncated, corrupted or empty.
// Deflate stored blocks, which GzipChunks sends for incompressible
// chunks, are copied straight from the source into the caller's buffer;
// a member's compressed blocks go through compress/flate, given the
// member's output so far as its dictionary, so members written by any
// gzip writer, mixing both kinds of blocks, read as well.
type GzipReader struct {
	r   *bufio.Reader
	err error

	inMember bool
	members  int
	crc      uint32
	size     uint32

	stored      int  // bytes left in the current stored block
	storedFinal bool // the current stored block ends the member
	fl          io.ReadCloser
	hist        []byte // the member's last output, up to windowSize, for fl
}

// NewGzipReader reads the gzip stream r. It reads r in small pieces for
// headers only; content is read with the caller's buffer sizes.
func NewGzipReader(r io.Reader) *GzipReader {
	return &GzipReader{r: bufio.NewReaderSize(r, 4096)}
}

// Reset makes z read the gzip stream r from its start, as a new
// GzipReader would, keeping z's buffers.
func (z *GzipReader) Reset(r io.Reader) {
	if z.fl != nil {
		z.fl.Close()
	}
	z.r.Reset(r)
	*z = GzipReader{r: z.r, hist: z.hist[:0]}
}

// Members is how many members have been read to their end.
func (z *GzipReader) Members() int { return z.members }

// ErrCorrupt marks what GzipReader refuses: a stream that is not gzip,
// is truncated, or whose content does not match its checksums. The
// source's own errors are returned as they are.
var ErrCorrupt = errors.New("corrupt gzip stream")

// corrupt marks err as the stream's fault.
func corrupt(err error) error { return fmt.Errorf("%w: %w", ErrCorrupt, err) }

// unexpected turns an end of input in the middle of a member into a
// truncation, and a deflate error into corruption.
func unexpected(err error) error {
	var ce flate.CorruptInputError
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return corrupt(io.ErrUnexpectedEOF)
	}
	if errors.As(err, &ce) {
		return corrupt(err)
	}
	return err
}

// Read reads decompressed content. It returns io.EOF only at the end of
// the source, after at least one whole member.
func (z *GzipReader) Read(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	n := 0
	start := 0 // where the current member's output begins in p
	for n < len(p) {
		var err error
		switch {
		case !z.inMember:
			err = z.header()
			if errors.Is(err, io.EOF) && n > 0 {
				// Report the end on the next call, with nothing read.
				return n, nil
			}
			start = n
		case z.fl != nil:
			var k int
			k, err = z.fl.Read(p[n:])
			z.crc = crc32.Update(z.crc, crc32.IEEETable, p[n:n+k])
			z.size += uint32(k)
			n += k
			if errors.Is(err, io.EOF) {
				z.fl.Close()
				z.fl = nil
				err = z.trailer()
			} else if err != nil {
				err = unexpected(err)
			}
		case z.stored > 0:
			k := min(z.stored, len(p)-n)
			k, err = io.ReadFull(z.r, p[n:n+k])
			z.crc = crc32.Update(z.crc, crc32.IEEETable, p[n:n+k])
			z.size += uint32(k)
			z.stored -= k
			n += k
			err = unexpected(err)
			if err == nil && z.stored == 0 && z.storedFinal {
				err = z.trailer()
			}
		default:
			err = z.block(p[start:n])
		}
		if err != nil {
			z.err = err
			return n, err
		}
	}
	if z.inMember && z.fl == nil {
		z.keep(p[start:n])
	}
	return n, nil
}

// keep remembers the end of out, the latest output of the member, as the
// dictionary of a compressed block that may follow.
func (z *GzipReader) keep(out []byte) {
	if len(out) >= windowSize {
		z.hist = append(z.hist[:0], out[len(out)-windowSize:]...)
		return
	}
	if drop := len(z.hist) + len(out) - windowSize; drop > 0 {
		z.hist = append(z.hist[:0], z.hist[drop:]...)
	}
	z.hist = append(z.hist, out...)
}

// header reads a member's header. io.EOF means the source ended cleanly
// between members.
func (z *GzipReader) header() error {
	var h [10]byte
	if _, err := io.ReadFull(z.r, h[:]); err != nil {
		if errors.Is(err, io.EOF) {
			if z.members == 0 {
				return corrupt(errors.New("empty stream"))
			}
			return io.EOF
		}
		return unexpected(err)
	}
	if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 {
		return corrupt(gzip.ErrHeader)
	}
	flags := h[3]
	if flags&0xe0 != 0 {
		return corrupt(gzip.ErrHeader)
	}
	hcrc := crc32.Update(0, crc32.IEEETable, h[:])
	read := func(b []byte) error {
		if _, err := io.ReadFull(z.r, b); err != nil {
			return unexpected(err)
		}
		hcrc = crc32.Update(hcrc, crc32.IEEETable, b)
		return nil
	}
	const fhcrc, fextra, fname, fcomment = 1 << 1, 1 << 2, 1 << 3, 1 << 4
	if flags&fextra != 0 {
		var l [2]byte
		if err := read(l[:]); err != nil {
			return err
		}
		if err := read(make([]byte, binary.LittleEndian.Uint16(l[:]))); err != nil {
			return err
		}
	}
	for _, f := range []byte{fname, fcomment} {
		if flags&f == 0 {
			continue
		}
		for {
			var c [1]byte
			if err := read(c[:]); err != nil {
				return err
			}
			if c[0] == 0 {
				break
			}
		}
	}
	if flags&fhcrc != 0 {
		var c [2]byte
		if _, err := io.ReadFull(z.r, c[:]); err != nil {
			return unexpected(err)
		}
		if binary.LittleEndian.Uint16(c[:]) != uint16(hcrc) {
			return corrupt(gzip.ErrHeader)
		}
	}
	z.inMember, z.crc, z.size, z.hist = true, 0, 0, z.hist[:0]
	return nil
}

// block starts the next deflate block of the member, which begins on a
// byte boundary: the member's first block, or one after a stored block.
// A stored block is read here; any other hands the rest of the member to
// compress/flate. out is what this Read produced so far, part of the
// dictionary.
func (z *GzipReader) block(out []byte) error {
	b, err := z.r.Peek(1)
	if err != nil {
		return unexpected(err)
	}
	if b[0]>>1&3 != 0 {
		z.keep(out)
		z.fl = flate.NewReaderDict(z.r, z.hist)
		return nil
	}
	var h [5]byte
	if _, err := io.ReadFull(z.r, h[:]); err != nil {
		return unexpected(err)
	}
	n := binary.LittleEndian.Uint16(h[1:3])
	if ^n != binary.LittleEndian.Uint16(h[3:5]) {
		return corrupt(errors.New("stored block length and its complement differ"))
	}
	z.stored, z.storedFinal = int(n), h[0]&1 == 1
	if n == 0 && z.storedFinal {
		return z.trailer()
	}
	return nil
}

// trailer reads and checks the member's CRC-32 and length.
func (z *GzipReader) trailer() error {
	var t [8]byte
	if _, err := io.ReadFull(z.r, t[:]); err != nil {
		return unexpected(err)
	}
	if binary.LittleEndian.Uint32(t[:4]) != z.crc || binary.LittleEndian.Uint32(t[4:]) != z.size {
		return corrupt(gzip.ErrChecksum)
	}
	z.inMember = false
	z.members++
	return nil
}
