package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestTransferProgress: image and block transfers draw progress on a
// terminal and none in scripts, whose standard error is a pipe.
func TestTransferProgress(t *testing.T) {
	e := newEnv(t)
	e.start()
	img := e.image("ok.hvt", solo5.TargetHVT)
	data := filepath.Join(e.dir, "disk.img")
	if err := os.WriteFile(data, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"create", "vm", img, "--arg", "run=forever"},
		{"block", "create", "disk", "8", "--data", data},
		{"block", "upload", "disk", data, "--gzip"},
		{"block", "download", "disk", filepath.Join(e.dir, "copy.img")},
	} {
		r := e.petrel(args...)
		if r.code != 0 || r.err != "" {
			t.Errorf("petrel %v in a script: exit %d, standard error %q, want none", args, r.code, r.err)
		}
	}
	// On a terminal, the same transfers show their progress.
	ptmx, tty := openPty(t)
	cmd := exec.Command(filepath.Join(binDir, "petrel"), "--socket", e.socket, "block", "upload", "disk", data)
	cmd.Stderr = tty
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("petrel block upload on a terminal: %v %s", err, out)
	}
	tty.Close()
	if out := readPty(ptmx); !strings.Contains(out, "uploading disk.img [") || !strings.Contains(out, "100.0%") {
		t.Errorf("petrel block upload on a terminal showed %q, want a progress bar", out)
	}
}

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

// readPty reads what was written to a pseudo-terminal until its terminal
// side is closed.
func readPty(ptmx *os.File) string {
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
