package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBlockDevices drives block devices through the CLI: create, upload
// (plain and gzip), download with checksum, the blk guest reading and
// writing one through petreld, refusals while in use, and bad input.
func TestBlockDevices(t *testing.T) {
	blk := guest(t, "blk")
	e := newBuiltinEnv(t)
	e.start()

	data := make([]byte, 3<<20+123)
	rand.Read(data)
	src := filepath.Join(e.dir, "data.img")
	os.WriteFile(src, data, 0o600)
	e.mustPetrel("block", "create", "team:disk", "8", "--data", src)
	for _, gz := range []string{"", "--gzip"} {
		out := filepath.Join(e.dir, "out"+gz+".img")
		args := []string{"block", "download", "team:disk", out}
		if gz != "" {
			args = append(args, gz)
		}
		e.mustPetrel(args...)
		got, _ := os.ReadFile(out)
		if len(got) != 8<<20 || !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, 8<<20-len(data))) {
			t.Fatalf("download%s: content differs (%d bytes)", gz, len(got))
		}
	}
	// The SHA-256 is printed when asked for, and then it is the file's.
	if out := e.mustPetrel("block", "upload", "team:disk", src, "--gzip"); strings.Contains(out, "sha256") {
		t.Fatalf("an upload not asked for the SHA-256 printed one: %q", out)
	}
	sum := sha256.Sum256(data)
	if out := e.mustPetrel("block", "upload", "team:disk", src, "--sha256"); !strings.Contains(out, "(sha256 "+hex.EncodeToString(sum[:])+")") {
		t.Fatalf("petrel block upload --sha256 printed %q, want the file's SHA-256 %x", out, sum)
	}
	list := e.mustPetrel("block", "team")
	if !strings.Contains(list, "team:disk") || !strings.Contains(list, "8M") {
		t.Fatalf("block list:\n%s", list)
	}

	// Bad input changes nothing.
	big := filepath.Join(e.dir, "big.img")
	os.WriteFile(big, make([]byte, 9<<20), 0o600)
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"block", "create", "team:disk2", "0"}, 2},
		{[]string{"block", "create", "../escape", "1"}, 6},
		{[]string{"block", "create", "team:disk", "1"}, 5},
		{[]string{"block", "upload", "team:disk", big}, 6},
		{[]string{"block", "destroy", "team:nope"}, 4},
		{[]string{"create", "team:vm", blk, "--block", "storage:nope"}, 4},
		{[]string{"create", "team:vm", blk, "--block", "storage:disk@1000"}, 6},
		{[]string{"create", "team:vm", blk, "--block", "other:disk"}, 6},
	} {
		if r := e.petrel(c.args...); r.code != c.code {
			t.Errorf("petrel %v: exit %d, want %d (%s)", c.args, r.code, c.code, r.err)
		}
	}
	if r := e.petrel("info", "team:vm"); r.code != 4 {
		t.Fatalf("a refused create left a VM: %s", r.out)
	}
	after := filepath.Join(e.dir, "after.img")
	e.mustPetrel("block", "download", "team:disk", after)
	if got, _ := os.ReadFile(after); !bytes.Equal(got[:len(data)], data) {
		t.Fatal("failed operations changed the device")
	}

	// The blk guest uses the device through petreld; meanwhile it is busy.
	e.mustPetrel("create", "team:vm", blk, "--block", "storage:disk@4096", "--mem", "16")
	waitFor(t, "blk guest to finish", 30*time.Second, func() bool { return e.info("team:vm").State == "exited" })
	if con := e.mustPetrel("console", "team:vm"); !strings.Contains(con, "blk: OK") {
		t.Fatalf("blk guest console:\n%s", con)
	}
	e.mustPetrel("destroy", "team:vm")
	e.mustPetrel("create", "team:vm2", blk, "--block", "storage:disk", "--mem", "16", "--restart-on-fail", "--exit-code", "0")
	if r := e.petrel("block", "destroy", "team:disk"); r.code != 9 {
		t.Fatalf("destroy while in use: exit %d (%s)", r.code, r.err)
	}
	if r := e.petrel("create", "team:vm3", blk, "--block", "storage:disk"); r.code != 9 {
		t.Fatalf("second VM on a busy device: exit %d (%s)", r.code, r.err)
	}
	e.mustPetrel("destroy", "team:vm2")

	// An upload killed halfway leaves the old content and no temporary file.
	before := filepath.Join(e.dir, "before.img")
	e.mustPetrel("block", "download", "team:disk", before)
	fifo := filepath.Join(e.dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	up := exec.Command(filepath.Join(binDir, "petrel"), "--socket", e.socket, "block", "upload", "team:disk", fifo)
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 2<<20))
	waitFor(t, "upload in progress", 10*time.Second, func() bool {
		tmps, _ := filepath.Glob(filepath.Join(e.dataDir, "block", "*.tmp"))
		return len(tmps) == 1
	})
	// Meanwhile the device is busy: a VM cannot take it.
	if r := e.petrel("create", "team:racer", blk, "--block", "storage:disk"); r.code != 9 {
		t.Fatalf("create during an upload: exit %d (%s)", r.code, r.err)
	}
	up.Process.Kill()
	up.Wait()
	w.Close()
	waitFor(t, "interrupted upload cleaned up", 10*time.Second, func() bool {
		tmps, _ := filepath.Glob(filepath.Join(e.dataDir, "block", "*.tmp"))
		return len(tmps) == 0
	})
	e.mustPetrel("block", "download", "team:disk", after)
	old, _ := os.ReadFile(before)
	if got, _ := os.ReadFile(after); !bytes.Equal(got, old) {
		t.Fatal("an interrupted upload changed the device")
	}
	e.mustPetrel("block", "destroy", "team:disk")
	if left, _ := filepath.Glob(filepath.Join(e.dataDir, "block", "*")); len(left) != 0 {
		t.Fatalf("block files left: %v", left)
	}
}
