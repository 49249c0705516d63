package transfer

import (
	"hash"
	"hash/crc32"
	"io"
)

// HashSink feeds h, a transfer's checksum; it never fails.
func HashSink(h hash.Hash) Sink {
	return func(b []byte) error {
		h.Write(b)
		return nil
	}
}

// WriterSink writes each chunk to w.
func WriterSink(w io.Writer) Sink {
	return func(b []byte) error {
		_, err := w.Write(b)
		return err
	}
}

// NewCRC32C returns the checksum of a transfer on a content connection
// through petrel-endpoint (BlockChunk.crc32c): CRC-32C (Castagnoli),
// computed by each end of what it read or wrote. TLS protects the bytes
// on the network; what is left to catch is a relay that lost, repeated or
// reordered some, which a CRC does for a small part of SHA-256's cost.
func NewCRC32C() hash.Hash32 { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) }
