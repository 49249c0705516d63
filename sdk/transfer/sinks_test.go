package transfer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
)

// TestSinks: the checksum of content connections is CRC-32C, whose check
// value is 0xE3069283, and the sinks pass chunks on as they are.
func TestSinks(t *testing.T) {
	crc := NewCRC32C()
	if err := HashSink(crc)([]byte("123456789")); err != nil || crc.Sum32() != 0xe3069283 {
		t.Fatalf("CRC-32C of 123456789: %08x, %v; want e3069283", crc.Sum32(), err)
	}
	h := sha256.New()
	var out bytes.Buffer
	f := NewFanout(HashSink(h), WriterSink(&out))
	if _, err := f.ReadFrom(bytes.NewReader([]byte("petrel"))); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256([]byte("petrel")); out.String() != "petrel" || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("sinks got %q and digest %x", out.String(), h.Sum(nil))
	}
	boom := errors.New("boom")
	if err := WriterSink(failingWriter{boom})([]byte("x")); !errors.Is(err, boom) {
		t.Fatalf("a failing writer's sink: %v", err)
	}
}

// failingWriter fails every write with err.
type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }
