package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/sdktest/ptytest"
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
	ptmx, tty := ptytest.Open(t)
	cmd := exec.Command(filepath.Join(binDir, "petrel"), "--socket", e.socket, "block", "upload", "disk", data)
	cmd.Stderr = tty
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("petrel block upload on a terminal: %v %s", err, out)
	}
	tty.Close()
	if out := ptytest.ReadAll(ptmx); !strings.Contains(out, "uploading disk.img [") || !strings.Contains(out, "100.0%") {
		t.Errorf("petrel block upload on a terminal showed %q, want a progress bar", out)
	}
}
