package transfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frames carry a marked transfer over a byte stream (a content
// connection, a pipe) rather than in messages: each chunk is a frame, a
// 4-byte big-endian header holding the chunk's length, with the top bit
// set when the chunk is a gzip member, and then the chunk. A header of
// zero ends the transfer: the end is explicit, so a stream cut between
// two frames is told from a finished one.

// frameCompressed marks a compressed chunk in a frame header.
const frameCompressed = 1 << 31

// MaxFrame bounds a frame's chunk: a chunk of ChunkSize, or its gzip
// member, which is at most a few bytes larger when it is stored.
const MaxFrame = 2 * ChunkSize

// FrameSink returns a MarkedSink that writes each chunk to w as a frame.
func FrameSink(w io.Writer) MarkedSink {
	return func(b []byte, compressed bool) error {
		if len(b) == 0 {
			return nil
		}
		var h [4]byte
		n := uint32(len(b))
		if compressed {
			n |= frameCompressed
		}
		binary.BigEndian.PutUint32(h[:], n)
		if _, err := w.Write(h[:]); err != nil {
			return err
		}
		_, err := w.Write(b)
		return err
	}
}

// EndFrames writes the frame that ends a transfer.
func EndFrames(w io.Writer) error {
	_, err := w.Write(make([]byte, 4))
	return err
}

// readFrame fills b from r, which is inside a transfer's frames: r
// ending before b is full, even before its first byte, is
// io.ErrUnexpectedEOF, since only the ending frame ends them.
func readFrame(r io.Reader, b []byte) error {
	_, err := io.ReadFull(r, b)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readHeader reads a frame header into h and returns the length and
// mark it holds. A stream that ends before the ending frame is
// io.ErrUnexpectedEOF.
func readHeader(r io.Reader, h []byte) (int, bool, error) {
	if err := readFrame(r, h[:4]); err != nil {
		return 0, false, err
	}
	v := binary.BigEndian.Uint32(h[:4])
	n, compressed := int(v&^frameCompressed), v&frameCompressed != 0
	if n > MaxFrame || (n == 0 && compressed) {
		return 0, false, fmt.Errorf("%w: a frame of %d bytes", ErrCorrupt, n)
	}
	return n, compressed, nil
}

// NewFramesReader reads the content of a marked transfer in frames from
// r, as a MarkedReader: a raw chunk goes from r straight into the
// caller's buffer, without a copy of its own; a compressed one is read
// whole, then through a GzipReader. It returns io.EOF at the ending
// frame, and io.ErrUnexpectedEOF when r ends before it.
func NewFramesReader(r io.Reader) *MarkedReader {
	m := &MarkedReader{frames: r}
	var h [4]byte
	var buf []byte
	m.next = func() ([]byte, bool, error) {
		n, compressed, err := readHeader(r, h[:])
		if err != nil {
			return nil, false, err
		}
		if n == 0 {
			return nil, false, io.EOF
		}
		if !compressed {
			m.rawLeft = n
			return nil, false, nil
		}
		if cap(buf) < n {
			buf = make([]byte, MaxFrame)
		}
		buf = buf[:n]
		if err := readFrame(r, buf); err != nil {
			return nil, false, err
		}
		return buf, true, nil
	}
	return m
}

// CopyFrames copies the frames of one transfer from r to put, as they
// are, through the ending frame, reading through buf (more than 4
// bytes); it never reads beyond the ending frame. It returns
// io.ErrUnexpectedEOF when r ends before that frame, and put's error as
// it is.
func CopyFrames(put func([]byte) error, r io.Reader, buf []byte) error {
	for {
		n, _, err := readHeader(r, buf)
		if err != nil {
			return err
		}
		if n == 0 {
			return put(buf[:4])
		}
		// The header goes out with the chunk's first bytes.
		have := 4
		for n > 0 {
			m := min(len(buf)-have, n)
			if err := readFrame(r, buf[have:have+m]); err != nil {
				return err
			}
			if err := put(buf[:have+m]); err != nil {
				return err
			}
			n -= m
			have = 0
		}
	}
}
