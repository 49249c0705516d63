package transfer

import (
	"bytes"
	"errors"
	"io"
)

// Marked transfers carry each chunk in a message of its own, marked as
// compressed or not: a compressible chunk travels as a gzip member, an
// incompressible one as it is. Unlike the gzip stream GzipChunks makes,
// where every chunk must be a gzip member and even a stored one costs a
// copy and a CRC-32 on each end, an incompressible chunk then costs
// exactly what it costs in a plain transfer. Both ends must agree on it
// beforehand: a reader that expects one gzip stream refuses raw chunks.
// The transfer's SHA-256, computed by both ends, covers raw chunks as it
// covers compressed ones.

// MarkedSink consumes the chunks of a marked transfer in order: data is
// a gzip member when compressed is true, the chunk itself otherwise. It
// must not keep data after it returns.
type MarkedSink func(data []byte, compressed bool) error

// MarkedChunks compresses each chunk that would shrink into a gzip member
// and hands it to next on a goroutine of its own, so that compressing a
// chunk overlaps sending the previous ones; a chunk that would not
// shrink (by an entropy sample, or because its member came out no
// smaller) is handed to next as it is, on the caller's goroutine, once
// the members before it are sent. Chunks reach next in order, never two
// at once. Write is not safe for concurrent use. Close must be called on
// every path: it waits for the members still queued and stops the
// goroutine.
type MarkedChunks struct {
	memberSender
	// Chunks counts the chunks handed to next, Raw those sent as they are.
	Chunks, Raw int
	next        MarkedSink
}

// NewMarkedChunks marks chunks for next, and starts the goroutine that
// sends the compressed ones.
func NewMarkedChunks(next MarkedSink) *MarkedChunks {
	m := &MarkedChunks{next: next}
	m.start(func(b []byte) error { return next(b, true) })
	return m
}

// Write marks p, in pieces of at most ChunkSize, and sends or queues
// them; it is a Sink. It returns the error of an earlier send, if one
// failed.
func (m *MarkedChunks) Write(p []byte) error {
	if m.closed {
		return errClosed
	}
	for {
		n := min(len(p), ChunkSize)
		if err := m.chunk(p[:n]); err != nil {
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
}

// chunk sends or queues one chunk.
func (m *MarkedChunks) chunk(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	b, err := m.buffer()
	if err != nil {
		return err
	}
	if entropy(p) <= storedEntropy {
		if b, err = m.compress(b, p); err != nil {
			m.release(b)
			return err
		}
		if len(b) < len(p) {
			m.Chunks++
			m.enqueue(b)
			return nil
		}
	}
	m.release(b)
	// The chunk goes as it is, without a copy: after the members queued
	// before it, and before Write returns and its buffer is reused.
	m.pending.Wait()
	if err := m.first(); err != nil {
		return err
	}
	m.Chunks++
	m.Raw++
	if err := m.next(p, false); err != nil {
		m.fail(err)
		return err
	}
	return nil
}

// Close waits until the members queued are sent, stops the sending
// goroutine and returns the first error of next. It may be called more
// than once.
func (m *MarkedChunks) Close() error { return m.close() }

// ChunkSource returns the next chunk of a marked transfer, as it
// arrived: its data, and whether the data is gzip-compressed. It returns
// io.EOF after the last chunk. The data need stay valid only until the
// next call.
type ChunkSource func() (data []byte, compressed bool, err error)

// MarkedReader reads the content of a marked transfer: raw chunks are
// copied out as they are, compressed ones read through a GzipReader,
// which checks every member's CRC-32 and length and refuses a chunk that
// is truncated, corrupted, empty or followed by anything but another
// member (ErrCorrupt). The source's errors are returned as they are.
type MarkedReader struct {
	next ChunkSource
	raw  []byte       // what is left of a raw chunk
	src  bytes.Reader // a compressed chunk's data
	gz   *GzipReader  // reads src, while inGz
	inGz bool
	err  error
	// frames is the stream a framed transfer's raw chunks are read from
	// (NewFramesReader), rawLeft what is left of the current one there.
	frames  io.Reader
	rawLeft int
	// Chunks counts the chunks received, Compressed those compressed.
	Chunks, Compressed int
}

// NewMarkedReader reads the marked transfer that next returns the chunks
// of.
func NewMarkedReader(next ChunkSource) *MarkedReader {
	return &MarkedReader{next: next}
}

// Read reads content; io.EOF follows the last chunk.
func (r *MarkedReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for r.err == nil {
		switch {
		case len(r.raw) > 0:
			n := copy(p, r.raw)
			r.raw = r.raw[n:]
			return n, nil
		case r.rawLeft > 0:
			n, err := r.frames.Read(p[:min(len(p), r.rawLeft)])
			r.rawLeft -= n
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				r.err = err
			}
			return n, err
		case r.inGz:
			n, err := r.gz.Read(p)
			if err == io.EOF {
				r.inGz = false
				err = nil
			}
			if err != nil {
				r.err = err
			}
			if n > 0 || err != nil {
				return n, err
			}
		default:
			data, compressed, err := r.next()
			if err != nil {
				r.err = err
				break
			}
			r.Chunks++
			if !compressed {
				r.raw = data // nil from a framed stream: rawLeft is set
				continue
			}
			r.Compressed++
			r.src.Reset(data)
			if r.gz == nil {
				r.gz = NewGzipReader(&r.src)
			} else {
				r.gz.Reset(&r.src)
			}
			r.inGz = true
		}
	}
	return 0, r.err
}
