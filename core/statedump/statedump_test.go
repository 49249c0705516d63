package statedump

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/core/vmrecord"
)

// newState makes a data directory with two VMs, a policy, two images
// and a sparse block device, and returns it closed.
func newState(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	shaA, _, err := s.PutImage(strings.NewReader("unikernel A"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	shaB, _, err := s.PutImage(strings.NewReader("unikernel B"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, r := range []vmrecord.Record{
		{Name: "web", Backend: "hvt", ImageSHA256: shaA, ImageName: "web.hvt", MemoryMB: 32, State: vmrecord.StateRunning, CreatedAt: created},
		{Name: "team:db", Backend: "hvt", ImageSHA256: shaB, MemoryMB: 64, State: vmrecord.StateExited, CreatedAt: created,
			Restart: vmrecord.RestartPolicy{OnFailure: true, ExitCodes: []int32{3}},
			Blocks:  []vmrecord.BlockParam{{Name: "storage", Device: "team:disk"}}},
	} {
		p, err := name.Parse(r.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(vmrecord.Collection, p.FileKey(), r); err != nil {
			t.Fatal(err)
		}
	}
	team, _ := name.Parse("team")
	blockMB := 64
	if err := s.Put(policy.Collection, team.FileKey(), policy.Entry{Path: team, Policy: policy.Policy{VMs: 2, MemoryMB: 128, CPUs: []int{0}, BlockMB: &blockMB}}); err != nil {
		t.Fatal(err)
	}
	bdir := filepath.Join(dir, store.BlockDir)
	if err := os.Mkdir(bdir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(bdir, "team:disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("superblock"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(8 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return dir
}

func export(t *testing.T, dir string, opts ExportOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Export(dir, &buf, opts); err != nil {
		t.Fatalf("Export: %v", err)
	}
	return buf.Bytes()
}

// comparable strips what legitimately differs between two inspections
// of the same state.
func comparable(r *Report) Report {
	c := *r
	c.Source, c.InUse, c.HolderPID, c.Export = "", false, 0, nil
	for i := range c.Blocks {
		c.Blocks[i].AllocatedBytes = 0
	}
	return c
}

func TestExportImportRoundTrip(t *testing.T) {
	src := newState(t)
	// A metrics sink's buffer belongs to this host's sinks: inspection
	// ignores it and exports leave it out (the file counts below).
	buffered := filepath.Join(src, store.PluginsDir, "influx", "buffer")
	if err := os.MkdirAll(buffered, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(buffered, "00000000000000000001.batch"), []byte("PTRLBQ1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := InspectDir(src, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(before.VMs) != 2 || len(before.Policies) != 1 || len(before.Images) != 2 || len(before.Blocks) != 1 || len(before.Problems) != 0 {
		t.Fatalf("source state: %+v", before)
	}
	var progressed int64
	var buf bytes.Buffer
	sum, err := Export(src, &buf, ExportOptions{Blocks: true, Progress: func(done, total int64) { progressed = done }})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Files != 7 || progressed != sum.Bytes || sum.Schema != store.SchemaVersion {
		t.Fatalf("export summary %+v, progress %d", sum, progressed)
	}
	if _, err := os.Stat(filepath.Join(src, store.LockFile)); err != nil {
		t.Fatalf("export did not take the lock: %v", err)
	}

	dst := filepath.Join(t.TempDir(), "var", "lib", "petrel")
	isum, err := Import(bytes.NewReader(buf.Bytes()), dst, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if isum.Files != 7 || isum.From != store.SchemaVersion || isum.Schema != store.SchemaVersion || len(isum.Problems) != 0 {
		t.Fatalf("import summary %+v", isum)
	}
	after, err := InspectDir(dst, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(comparable(before), comparable(after)) || after.InstanceID == "" {
		t.Fatalf("imported state differs:\n%+v\nwant\n%+v", comparable(after), comparable(before))
	}
	// A copy to run beside its original gets an identity of its own.
	twin := filepath.Join(t.TempDir(), "twin")
	if _, err := Import(bytes.NewReader(buf.Bytes()), twin, ImportOptions{NewIdentity: true}); err != nil {
		t.Fatal(err)
	}
	if rep, err := InspectDir(twin, false); err != nil || rep.InstanceID == "" || rep.InstanceID == before.InstanceID || len(rep.VMs) != len(before.VMs) {
		t.Fatalf("import with a new identity: %+v, %v (exported instance %s)", rep, err, before.InstanceID)
	}
	if after.Blocks[0].AllocatedBytes >= after.Blocks[0].SizeBytes/2 {
		t.Errorf("imported block device is not sparse: %d of %d bytes allocated", after.Blocks[0].AllocatedBytes, after.Blocks[0].SizeBytes)
	}
	b, _ := os.ReadFile(filepath.Join(dst, store.BlockDir, "team:disk.img"))
	if len(b) != 8<<20 || string(b[1<<20:1<<20+10]) != "superblock" {
		t.Fatalf("block device content lost (%d bytes)", len(b))
	}
	// The imported directory is a working store.
	s, err := store.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImagePath(after.VMs[0].ImageSHA256); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".*")); len(left) != 0 {
		t.Fatalf("import left %q", left)
	}

	// Without --blocks the devices are not exported.
	plain := export(t, src, ExportOptions{})
	rep, err := InspectArchive(bytes.NewReader(plain), "plain")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Export == nil || rep.Export.Blocks || len(rep.Blocks) != 0 || len(rep.VMs) != 2 {
		t.Fatalf("export without blocks: %+v", rep)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "block device team:disk is missing") {
		t.Fatalf("problems of an export without blocks: %q", rep.Problems)
	}
}

// TestImportMigratesSchema1 exports the data directory a schema 1
// petreld wrote and imports it: the result has today's schema and loses
// nothing.
func TestImportMigratesSchema1(t *testing.T) {
	src := copyFixture(t, filepath.Join("..", "store", "testdata", "schema1"))
	// The store's fixture holds the store only; its VM's block device
	// lives beside it.
	if err := os.MkdirAll(filepath.Join(src, store.BlockDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, store.BlockDir, "team:disk.img"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := InspectDir(src, true)
	if err != nil {
		t.Fatal(err)
	}
	if before.Schema != 1 || len(before.VMs) == 0 || len(before.Images) == 0 || len(before.Problems) != 0 {
		t.Fatalf("schema 1 fixture: %+v", before)
	}
	archive := export(t, src, ExportOptions{Blocks: true})
	rep, err := InspectArchive(bytes.NewReader(archive), "v1")
	if err != nil || rep.Schema != 1 || rep.Export.Schema != 1 {
		t.Fatalf("export of schema 1 = %+v, %v", rep, err)
	}
	dst := filepath.Join(t.TempDir(), "data")
	sum, err := Import(bytes.NewReader(archive), dst, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.From != 1 || sum.Schema != store.SchemaVersion {
		t.Fatalf("import summary %+v", sum)
	}
	after, err := InspectDir(dst, true)
	if err != nil {
		t.Fatal(err)
	}
	if after.Schema != store.SchemaVersion {
		t.Fatalf("imported schema %d", after.Schema)
	}
	b, a := comparable(before), comparable(after)
	b.Schema = a.Schema
	// A directory from before instance ids gets one when it is imported.
	if before.InstanceID != "" || a.InstanceID == "" {
		t.Fatalf("instance id before %q, after %q", before.InstanceID, a.InstanceID)
	}
	b.InstanceID = a.InstanceID
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("migrated state differs:\n%+v\nwant\n%+v", a, b)
	}
}

func copyFixture(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "data")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestExportWhileInUse(t *testing.T) {
	src := newState(t)
	s, err := store.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Export(src, &bytes.Buffer{}, ExportOptions{})
	if !errors.Is(err, store.ErrInUse) || !strings.Contains(err.Error(), "--live") {
		t.Fatalf("Export of a directory in use = %v", err)
	}
	archive := export(t, src, ExportOptions{Live: true})
	rep, err := InspectArchive(bytes.NewReader(archive), "live")
	if err != nil || !rep.Export.Live || len(rep.VMs) != 2 {
		t.Fatalf("live export = %+v, %v", rep, err)
	}
	dir, err := InspectDir(src, true)
	if err != nil || !dir.InUse || dir.HolderPID != os.Getpid() {
		t.Fatalf("inspect of a directory in use = %+v, %v", dir, err)
	}
	if _, err := Import(bytes.NewReader(archive), src, ImportOptions{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("import over a directory in use = %v", err)
	}
}

func TestImportIntoEmptyStore(t *testing.T) {
	archive := export(t, newState(t), ExportOptions{})
	dst := filepath.Join(t.TempDir(), "data")
	s, err := store.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Import(bytes.NewReader(archive), dst, ImportOptions{}); err != nil {
		t.Fatalf("import over an empty store: %v", err)
	}
	if rep, err := InspectDir(dst, true); err != nil || len(rep.VMs) != 2 {
		t.Fatalf("after import: %+v, %v", rep, err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Import(bytes.NewReader(archive), empty, ImportOptions{}); err != nil {
		t.Fatalf("import into an empty directory: %v", err)
	}
}

type entry struct {
	name     string
	typeflag byte
	body     string
}

func buildArchive(t *testing.T, entries []entry, truncate int) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typeflag, Mode: 0o600, Size: int64(len(e.body))}
		if e.typeflag == tar.TypeSymlink {
			h.Linkname, h.Size = "/etc/passwd", 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	gz.Close()
	b := buf.Bytes()
	if truncate > 0 {
		b = b[:len(b)-truncate]
	}
	return b
}

func manifest(format, schema int) string {
	b, _ := json.Marshal(Manifest{Format: format, Schema: schema})
	return string(b)
}

func TestImportRefusesBadArchives(t *testing.T) {
	meta := entry{name: dataPrefix + "meta.json", typeflag: tar.TypeReg, body: `{"schema":2,"created_at":"2026-01-01T00:00:00Z"}`}
	good := entry{name: manifestEntry, typeflag: tar.TypeReg, body: manifest(FormatVersion, 2)}
	img := "1111111111111111111111111111111111111111111111111111111111111111"
	big := bytes.Repeat([]byte("x"), 1<<16)
	cases := []struct {
		what    string
		archive []byte
		want    string
	}{
		{"not gzip", []byte("hello"), "not a petrel state export"},
		{"no manifest", buildArchive(t, []entry{meta}, 0), "first entry"},
		{"newer format", buildArchive(t, []entry{{name: manifestEntry, typeflag: tar.TypeReg, body: manifest(FormatVersion+1, 2)}, meta}, 0), "format"},
		{"newer schema", buildArchive(t, []entry{{name: manifestEntry, typeflag: tar.TypeReg, body: manifest(FormatVersion, store.SchemaVersion+1)}, meta}, 0), "newer than"},
		{"escaping path", buildArchive(t, []entry{good, meta, {name: dataPrefix + "../../evil", typeflag: tar.TypeReg, body: "x"}}, 0), "outside"},
		{"absolute path", buildArchive(t, []entry{good, meta, {name: "/etc/evil", typeflag: tar.TypeReg, body: "x"}}, 0), "outside"},
		{"symlink", buildArchive(t, []entry{good, meta, {name: dataPrefix + "vms/x.json", typeflag: tar.TypeSymlink}}, 0), "not a regular file"},
		{"lock file", buildArchive(t, []entry{good, meta, {name: dataPrefix + "lock", typeflag: tar.TypeReg, body: "1"}}, 0), "lock"},
		{"duplicate", buildArchive(t, []entry{good, meta, meta}, 0), "twice"},
		{"no meta", buildArchive(t, []entry{good}, 0), "meta.json"},
		{"schema mismatch", buildArchive(t, []entry{{name: manifestEntry, typeflag: tar.TypeReg, body: manifest(FormatVersion, 1)}, meta}, 0), "inconsistent"},
		{"damaged image", buildArchive(t, []entry{good, meta, {name: dataPrefix + "images/sha256/" + img, typeflag: tar.TypeReg, body: "not it"}}, 0), "damaged"},
		{"truncated", buildArchive(t, []entry{good, meta, {name: dataPrefix + "vms/big.json", typeflag: tar.TypeReg, body: string(big)}}, 100), ""},
	}
	for _, c := range cases {
		t.Run(c.what, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "data")
			_, err := Import(bytes.NewReader(c.archive), dst, ImportOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Import = %v, want an error containing %q", err, c.want)
			}
			if left, _ := os.ReadDir(parent); len(left) != 0 {
				t.Fatalf("refused import left %v", left)
			}
			if _, err := os.Stat("/etc/evil"); err == nil {
				t.Fatal("import wrote outside its directory")
			}
		})
	}
}

func TestImportRefusesExistingState(t *testing.T) {
	archive := export(t, newState(t), ExportOptions{})
	dst := newState(t)
	before, _ := InspectDir(dst, true)
	_, err := Import(bytes.NewReader(archive), dst, ImportOptions{})
	if err == nil || !strings.Contains(err.Error(), "already holds petreld state") {
		t.Fatalf("import over existing state = %v", err)
	}
	after, _ := InspectDir(dst, true)
	if !reflect.DeepEqual(comparable(before), comparable(after)) {
		t.Fatal("refused import changed the existing state")
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Import(bytes.NewReader(archive), file, ImportOptions{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("import onto a file = %v", err)
	}
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "notes.txt"), nil, 0o600)
	if _, err := Import(bytes.NewReader(archive), foreign, ImportOptions{}); err == nil || !strings.Contains(err.Error(), "not a petrel data directory") {
		t.Fatalf("import into a foreign directory = %v", err)
	}
}

func TestInspectFindsProblems(t *testing.T) {
	dir := newState(t)
	rep, _ := InspectDir(dir, true)
	web := rep.VMs[1]
	if web.Name != "web" || !web.ImagePresent {
		t.Fatalf("VMs: %+v", rep.VMs)
	}
	// Damage a record, remove the block device, corrupt one image and
	// remove the other.
	os.WriteFile(filepath.Join(dir, vmrecord.Collection, "broken.json"), []byte(`{"name":`), 0o600)
	os.Remove(filepath.Join(dir, store.BlockDir, "team:disk.img"))
	imgs := store.ImagesDir(dir, store.SchemaVersion)
	os.WriteFile(filepath.Join(imgs, rep.VMs[0].ImageSHA256), []byte("tampered"), 0o600)
	os.Remove(filepath.Join(imgs, web.ImageSHA256))
	os.MkdirAll(filepath.Join(dir, store.QuarantineDir, "vms"), 0o700)
	os.WriteFile(filepath.Join(dir, store.QuarantineDir, "vms", "old.json"), []byte("x"), 0o600)

	rep, err := InspectDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"record vms/broken is damaged", "is damaged: its content has digest", "VM web: image", "VM team:db: block device team:disk is missing"}
	all := strings.Join(rep.Problems, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("problems lack %q:\n%s", w, all)
		}
	}
	if len(rep.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(rep.Problems), len(want), all)
	}
	if rep.VMs[1].ImagePresent || !reflect.DeepEqual(rep.Quarantined, []string{"vms/old"}) {
		t.Errorf("report: %+v", rep)
	}
	if _, err := InspectDir(t.TempDir(), true); err == nil || !strings.Contains(err.Error(), "not a petrel data directory") {
		t.Errorf("inspect of an empty directory = %v", err)
	}
}

// TestLostVMRoundTrip: a lost VM (no exit code) is inspected, exported
// and imported as lost, still without an exit code, and raises no
// problem.
func TestLostVMRoundTrip(t *testing.T) {
	src := newState(t)
	s, err := store.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	before, err := InspectDir(src, false)
	if err != nil {
		t.Fatal(err)
	}
	lost := vmrecord.Record{Name: "gone", Backend: "hvt", ImageSHA256: before.VMs[0].ImageSHA256, MemoryMB: 32,
		State: vmrecord.StateLost, Message: "exit status unknown", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if err := s.Put(vmrecord.Collection, "gone", lost); err != nil {
		t.Fatal(err)
	}
	s.Close()
	dst := filepath.Join(t.TempDir(), "data")
	if _, err := Import(bytes.NewReader(export(t, src, ExportOptions{})), dst, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	after, err := InspectDir(dst, false)
	if err != nil {
		t.Fatal(err)
	}
	var got *VM
	for i := range after.VMs {
		if after.VMs[i].Name == "gone" {
			got = &after.VMs[i]
		}
	}
	if got == nil || got.State != vmrecord.StateLost || got.HasExit || got.ExitCode != 0 || !got.ImagePresent {
		t.Fatalf("lost VM after export and import: %+v", got)
	}
	for _, p := range after.Problems {
		if strings.Contains(p, "gone") {
			t.Fatalf("a lost VM is reported as a problem: %q", p)
		}
	}
	raw, _ := json.Marshal(got)
	if strings.Contains(string(raw), "exit_code") {
		t.Fatalf("a lost VM's JSON has an exit code: %s", raw)
	}
}
