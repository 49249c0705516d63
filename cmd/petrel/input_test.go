package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestInputFiles: files named on the command line are checked before
// petreld is asked anything, and a missing file or a directory is invalid
// input (exit 6) named as the user gave it.
func TestInputFiles(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "web.hvt")
	if err := os.WriteFile(img, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.img")
	big := filepath.Join(dir, "big.img")
	if err := os.WriteFile(big, nil, 0o644); err != nil || os.Truncate(big, 64<<20+1) != nil {
		t.Fatal("cannot make a sparse file")
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "petreld.sock")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"create", "vm", dir}, exitInvalid, "image " + dir + " is a directory, not a file"},
		{[]string{"create", "vm", missing}, exitInvalid, "image " + missing + ": no such file"},
		{[]string{"create", "vm", img, "--initrd", missing}, exitInvalid, "--initrd " + missing + ": no such file"},
		{[]string{"create", "vm", img, "--initrd", dir}, exitInvalid, "--initrd " + dir + " is a directory"},
		{[]string{"block", "create", "disk", "64", "--data", missing}, exitInvalid, "--data " + missing + ": no such file"},
		{[]string{"block", "create", "disk", "64", "--data", big}, exitInvalid, "--data " + big + " (67108865 bytes) does not fit in 64 MB"},
		{[]string{"block", "upload", "disk", missing}, exitInvalid, "file " + missing + ": no such file"},
		{[]string{"block", "upload", "disk", dir}, exitInvalid, "file " + dir + " is a directory"},
		{[]string{"block", "download", "disk", filepath.Join(missing, "out.img")}, exitInvalid, "directory " + missing + " does not exist"},
		{[]string{"block", "download", "disk", dir}, exitInvalid, "file " + dir + " is a directory"},
		{[]string{"state", "import", missing, "--data-dir", filepath.Join(dir, "data")}, exitInvalid, "archive " + missing + ": no such file"},
		{[]string{"create", "vm", fifo}, exitInvalid, "image " + fifo + " is not a regular file"},
		{[]string{"create", "vm", img}, exitUnreachable, "cannot connect to petreld"},
	} {
		code, _, errText := runPetrel(append([]string{"--socket", sock}, c.args...)...)
		if code != c.code || !strings.Contains(errText, c.want) {
			t.Errorf("petrel %v: exit %d %q, want %d and %q", c.args, code, errText, c.code, c.want)
		}
	}
}
