package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/core/statedump"
	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/core/vmrecord"
)

func runPetrel(args ...string) (code int, stdout, stderr string) {
	var out, errw bytes.Buffer
	code = run(args, &out, &errw)
	return code, out.String(), errw.String()
}

func TestStateCommands(t *testing.T) {
	src := filepath.Join(t.TempDir(), "data")
	s, err := store.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	sha, _, err := s.PutImage(strings.NewReader("a unikernel"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(vmrecord.Collection, "web", vmrecord.Record{Name: "web", Backend: "hvt", ImageSHA256: sha, ImageName: "web.hvt", MemoryMB: 32, State: vmrecord.StateRunning}); err != nil {
		t.Fatal(err)
	}

	code, out, _ := runPetrel("state", "inspect", "--data-dir", src)
	if code != exitOK || !strings.Contains(out, "web") || !strings.Contains(out, "in use by petreld") || !strings.Contains(out, "No problems found") {
		t.Fatalf("inspect = %d:\n%s", code, out)
	}
	archive := filepath.Join(t.TempDir(), "host.tar.gz")
	code, _, errOut := runPetrel("state", "export", "--data-dir", src, "-o", archive)
	if code != exitError || !strings.Contains(errOut, "--live") {
		t.Fatalf("export while in use = %d: %s", code, errOut)
	}
	if _, err := os.Stat(archive); !os.IsNotExist(err) {
		t.Fatalf("failed export left %s: %v", archive, err)
	}
	s.Close()

	if code, _, errOut := runPetrel("state", "export", "--data-dir", src); code != exitUsage || !strings.Contains(errOut, "-o FILE") {
		t.Fatalf("export without -o = %d: %s", code, errOut)
	}
	code, _, errOut = runPetrel("state", "export", "--data-dir", src, "-o", archive)
	if code != exitOK || !strings.Contains(errOut, "exported 3 files") {
		t.Fatalf("export = %d: %s", code, errOut)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v, %v", fi, err)
	}
	code, out, _ = runPetrel("state", "inspect", "--json", archive)
	var rep statedump.Report
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || rep.Export == nil || len(rep.VMs) != 1 || rep.VMs[0].ImageSHA256 != sha {
		t.Fatalf("inspect --json of the archive = %d:\n%s", code, out)
	}

	dst := filepath.Join(t.TempDir(), "restored")
	code, out, errOut = runPetrel("state", "import", archive, "--data-dir", dst)
	if code != exitOK || !strings.Contains(out, "imported 3 files") {
		t.Fatalf("import = %d: %s%s", code, out, errOut)
	}
	if code, _, errOut := runPetrel("state", "import", archive, "--data-dir", dst); code != exitError || !strings.Contains(errOut, "already holds petreld state") {
		t.Fatalf("second import = %d: %s", code, errOut)
	}
	if code, _, errOut := runPetrel("--destination", "host.example.org", "state", "inspect", "--data-dir", dst); code != exitUsage || !strings.Contains(errOut, "cannot run remotely") {
		t.Fatalf("remote state inspect = %d: %s", code, errOut)
	}
	if code, _, _ := runPetrel("state", "import"); code != exitUsage {
		t.Fatalf("import without an archive = %d", code)
	}

	// A missing image is a problem: inspect says so and exits 1.
	if err := os.Remove(filepath.Join(store.ImagesDir(dst, store.SchemaVersion), sha)); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runPetrel("state", "inspect", "--data-dir", dst)
	if code != exitError || !strings.Contains(out, "image "+sha+" is missing") || !strings.Contains(out, "(missing)") {
		t.Fatalf("inspect with a missing image = %d:\n%s", code, out)
	}
}

// TestStateExportInterrupted cancels an export as SIGINT would: it fails
// through its error path and leaves neither the archive nor a temporary
// file.
func TestStateExportInterrupted(t *testing.T) {
	src := filepath.Join(t.TempDir(), "data")
	s, err := store.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutImage(strings.NewReader("a unikernel"), 1<<20); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := t.TempDir()
	_, err = writeAtomic(filepath.Join(out, "host.tar.gz"), func(w io.Writer) (statedump.Summary, error) {
		return statedump.Export(src, interruptibleWriter{ctx, w}, statedump.ExportOptions{})
	})
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("interrupted export = %v", err)
	}
	if left, _ := os.ReadDir(out); len(left) != 0 {
		t.Fatalf("interrupted export left %v", left)
	}
	if _, err := statedump.Import(interruptibleReader{ctx, strings.NewReader("x")}, filepath.Join(out, "data"), statedump.ImportOptions{}); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("interrupted import = %v", err)
	}
	if left, _ := os.ReadDir(out); len(left) != 0 {
		t.Fatalf("interrupted import left %v", left)
	}
}

// TestStateFollowsTheDaemon: without --data-dir, state inspect and export
// read the data directory the running petreld says it uses, and say so.
func TestStateFollowsTheDaemon(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "elsewhere")
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(vmrecord.Collection, "web", vmrecord.Record{Name: "web", Backend: "hvt", ImageSHA256: strings.Repeat("0", 64), MemoryMB: 32, State: vmrecord.StateExited}); err != nil {
		t.Fatal(err)
	}
	sock := startStub(t, &stubDaemon{dataDir: dir})
	_, out, errText := runPetrel("--socket", sock, "state", "inspect")
	if !strings.Contains(out, "data directory "+dir) || !strings.Contains(out, "web") {
		t.Errorf("state inspect did not read the daemon's data directory %s:\n%s", dir, out)
	}
	if !strings.Contains(errText, "reading "+dir+", the data directory of the petreld at "+sock) {
		t.Errorf("state inspect does not say whose data directory it reads: %q", errText)
	}
	// While petreld holds the directory, an export without --live is
	// refused, naming the daemon's directory.
	code, _, errText := runPetrel("--socket", sock, "state", "export", "-o", filepath.Join(t.TempDir(), "x.tar.gz"))
	if code == exitOK || !strings.Contains(errText, dir) {
		t.Errorf("state export of a held directory: exit %d %q, want a refusal naming %s", code, errText, dir)
	}
	s.Close()
	// --data-dir still wins.
	other := filepath.Join(t.TempDir(), "other")
	if _, out, _ := runPetrel("--socket", sock, "state", "inspect", "--data-dir", other); strings.Contains(out, dir) {
		t.Errorf("state inspect --data-dir %s read the daemon's directory:\n%s", other, out)
	}
}
