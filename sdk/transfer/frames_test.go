package transfer

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"testing"
)

// framedContent is content half incompressible and half compressible,
// as frames of marked chunks with their ending frame.
func framedContent(t *testing.T) (content, framed []byte) {
	t.Helper()
	content = make([]byte, 3*ChunkSize+123)
	rand.New(rand.NewSource(1)).Read(content[:len(content)/2])
	var buf bytes.Buffer
	mc := NewMarkedChunks(FrameSink(&buf))
	if err := mc.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := mc.Close(); err != nil {
		t.Fatal(err)
	}
	if mc.Raw == 0 || mc.Raw == mc.Chunks {
		t.Fatalf("%d of %d chunks raw: want some of each", mc.Raw, mc.Chunks)
	}
	if err := EndFrames(&buf); err != nil {
		t.Fatal(err)
	}
	return content, buf.Bytes()
}

// TestFrames: frames carry a marked transfer whole over a byte stream;
// CopyFrames passes them on as they are and reads nothing beyond the
// ending frame; a stream cut before that frame, or a frame header out of
// bounds, is an error.
func TestFrames(t *testing.T) {
	content, framed := framedContent(t)
	got, err := io.ReadAll(NewFramesReader(bytes.NewReader(framed)))
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("read back %d bytes (equal %v), %v", len(got), bytes.Equal(got, content), err)
	}

	var copied bytes.Buffer
	after := bytes.NewReader(append(append([]byte(nil), framed...), "after"...))
	put := func(b []byte) error { copied.Write(b); return nil }
	if err := CopyFrames(put, after, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(copied.Bytes(), framed) || after.Len() != len("after") {
		t.Fatalf("copied %d bytes of %d, left %d unread", copied.Len(), len(framed), after.Len())
	}

	for _, n := range []int{0, 3, 4, 1000, len(framed) - 4} {
		short := framed[:n]
		if err := CopyFrames(func([]byte) error { return nil }, bytes.NewReader(short), make([]byte, 4096)); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("CopyFrames of %d of %d bytes: %v", len(short), len(framed), err)
		}
		if _, err := io.ReadAll(NewFramesReader(bytes.NewReader(short))); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("reading %d of %d bytes: %v", len(short), len(framed), err)
		}
	}
	for _, h := range [][]byte{{0x7f, 0xff, 0xff, 0xff}, {0x80, 0, 0, 0}} {
		if _, err := NewFramesReader(bytes.NewReader(h)).Read(make([]byte, 8)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("frame header %x: %v, want ErrCorrupt", h, err)
		}
	}
}
