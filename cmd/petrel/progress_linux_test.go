package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPty returns the controller and the terminal of a new
// pseudo-terminal.
func openPty(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return ptmx, tty
}

// TestProgressOnTerminalsOnly: transfers draw a progress bar on a
// terminal, ending its line when they end or fail, and nothing at all
// where standard error is a file or a pipe, as in scripts.
func TestProgressOnTerminalsOnly(t *testing.T) {
	var buf bytes.Buffer
	if p := (&app{errw: &buf}).progressBar("uploading web.hvt"); p != nil {
		t.Error("a progress bar for a standard error that is not a terminal")
	}
	f, err := os.Create(t.TempDir() + "/stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if p := (&app{errw: f}).progressBar("uploading web.hvt"); p != nil {
		t.Error("a progress bar for a standard error that is a file")
	}

	ptmx, tty := openPty(t)
	a := &app{errw: tty}
	p := a.progressBar("uploading web.hvt")
	if p == nil {
		t.Fatal("no progress bar on a terminal")
	}
	p(0, 4<<20)
	time.Sleep(progressInterval)
	p(1<<20, 4<<20)
	if !a.midLine {
		t.Error("an unfinished bar is not recorded as such")
	}
	p(4<<20, 4<<20)
	if a.midLine {
		t.Error("a finished bar is recorded as unfinished")
	}
	fail := a.progressBar("downloading disk")
	time.Sleep(progressInterval)
	fail(1<<20, 4<<20)
	a.endProgress()
	tty.Close()
	out := readAll(t, ptmx)
	for _, want := range []string{"\ruploading web.hvt [       ", " 25.0%", "\ruploading web.hvt [==============================] 100.0%", "\r\n",
		"\rdownloading disk [=======                       ]  25.0%"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output %q lacks %q", out, want)
		}
	}
	if !strings.HasSuffix(out, "\r\n") {
		t.Errorf("the failed transfer's line is not ended: %q", out)
	}
}

// readAll reads what the terminal side wrote, until it is closed.
func readAll(t *testing.T, ptmx *os.File) string {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	for {
		ptmx.SetReadDeadline(time.Now().Add(time.Second))
		n, err := ptmx.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return string(out)
		}
	}
}
