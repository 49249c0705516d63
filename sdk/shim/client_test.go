package shim

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeShim serves one connection on dir's socket: it answers with the
// given raw lines and hangs up, as a shim dying mid-stream would.
func fakeShim(t *testing.T, dir string, answer ...string) {
	t.Helper()
	ln, err := listenUnix(filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, maxRequest)
		_, _ = c.Read(buf)
		_, _ = c.Write([]byte(strings.Join(answer, "\n") + "\n"))
	}()
	t.Cleanup(func() {
		_ = ln.close()
		<-done
	})
}

func TestConsoleResumesFromFileWhenStreamBreaks(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var lines []Line
	for i, s := range []string{"a", "b", "c", "d"} {
		lines = append(lines, Line{Time: base.Add(time.Duration(i) * time.Millisecond), Text: s})
	}
	data, err := encodeConsole(lines)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(dir, ConsoleFile, data); err != nil {
		t.Fatal(err)
	}
	if err := writeJSONFile(dir, ExitFile, Exit{Code: 0, TenderPID: 42}); err != nil {
		t.Fatal(err)
	}
	first, _ := encodeConsole(lines[:2])
	var raw []string
	for _, l := range strings.Split(strings.TrimSpace(string(first)), "\n") {
		raw = append(raw, `{"line":`+l+`}`)
	}
	fakeShim(t, dir, raw...)

	var got []Line
	err = Dial(dir).Console(context.Background(), time.Time{}, 0, true, func(l Line) error {
		got = append(got, l)
		return nil
	})
	if err != nil {
		t.Fatalf("Console: %v", err)
	}
	wantTexts(t, "stream then file", got, "a", "b", "c", "d")
}

func TestConsoleLostMidStream(t *testing.T) {
	dir := t.TempDir()
	fakeShim(t, dir, `{"line":{"time":"2026-01-02T03:04:05Z","text":"a","truncated":false}}`)
	var got []Line
	err := Dial(dir).Console(context.Background(), time.Time{}, 0, true, func(l Line) error {
		got = append(got, l)
		return nil
	})
	if !errors.Is(err, ErrShimLost) {
		t.Errorf("Console = %v, want ErrShimLost", err)
	}
	wantTexts(t, "delivered before the loss", got, "a")
}

func TestReadExitMissing(t *testing.T) {
	ex, err := ReadExit(t.TempDir())
	if ex != nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadExit on empty dir = %v, %v", ex, err)
	}
}
