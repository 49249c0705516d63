package transfer

import (
	"fmt"
	"os"
)

// writebackEvery is how many bytes a FileSink writes between two requests
// to start writing them back to disk.
const writebackEvery = 8 << 20

// FileSink writes a stream to a file and starts writing it back to disk
// every few megabytes, where the system allows (Linux: sync_file_range),
// so that the fsync that makes the file durable at the end waits only for
// the last megabytes instead of the whole content: the disk works while
// the rest of the stream still arrives. It never replaces that fsync.
type FileSink struct {
	f       *os.File
	off     int64
	flushed int64
}

// NewFileSink writes to f from its current offset, which must be 0.
func NewFileSink(f *os.File) *FileSink { return &FileSink{f: f} }

// Write writes p; it is a Sink.
func (s *FileSink) Write(p []byte) error {
	n, err := s.f.Write(p)
	s.off += int64(n)
	if err != nil {
		return fmt.Errorf("write %s: %w", s.f.Name(), err)
	}
	if s.off-s.flushed >= writebackEvery {
		// Only a hint: an error here shows again in the final fsync.
		startWriteback(s.f, s.flushed, s.off-s.flushed)
		s.flushed = s.off
	}
	return nil
}

// Written is how many bytes were written.
func (s *FileSink) Written() int64 { return s.off }
