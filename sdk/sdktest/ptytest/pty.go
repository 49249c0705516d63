//go:build linux

// Package ptytest gives tests a pseudo-terminal, so that output meant only
// for terminals (progress bars, prompts) can be checked as a person at a
// terminal would see it.
package ptytest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Open returns the controller and the terminal side of a new
// pseudo-terminal, both closed when the test ends. It skips the test where
// the host offers no pseudo-terminals (no /dev/ptmx).
func Open(t testing.TB) (ptmx, tty *os.File) {
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
		t.Fatalf("open pty terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return ptmx, tty
}

// ReadAll returns what was written to the terminal side of ptmx until that
// side is closed, or until nothing more arrives for a second.
func ReadAll(ptmx *os.File) string {
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
