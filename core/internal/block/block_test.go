package block

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestCreateListDestroy(t *testing.T) {
	m, err := Open(filepath.Join(t.TempDir(), "block"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(m.Dir()); fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", fi.Mode())
	}
	d, err := m.Create("a:b:disk", 4)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(d.Path)
	if fi.Size() != 4*MB || fi.Mode().Perm() != 0o600 || filepath.Base(d.Path) != "a:b:disk.img" {
		t.Fatalf("device file %s: %v %v", d.Path, fi.Size(), fi.Mode())
	}
	if _, err := m.Create("a:b:disk", 4); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	m.Create("a:other", 1)
	m.Create("c:disk", 1)
	under, _ := m.List("a")
	if len(under) != 2 || under[0].Name != "a:b:disk" {
		t.Fatalf("list a: %+v", under)
	}
	if total, _ := m.TotalMB("a"); total != 5 {
		t.Fatalf("total %d", total)
	}
	for _, bad := range []struct {
		n    string
		size int64
	}{{"a:b:disk2", 0}, {"a:b:disk2", -1}, {"../etc", 1}, {"a/b", 1}, {":", 1}, {"x", 1 << 40}, {"x", MaxSizeMB}} {
		if _, err := m.Create(bad.n, bad.size); !errors.Is(err, ErrInvalid) {
			t.Errorf("Create(%q, %d) = %v, want ErrInvalid", bad.n, bad.size, err)
		}
	}
	os.WriteFile(filepath.Join(m.Dir(), "stray"), nil, 0o600)
	if o, _ := m.Orphans(); len(o) != 1 || filepath.Base(o[0]) != "stray" {
		t.Fatalf("orphans %v", o)
	}
	if err := m.Destroy("a:b:disk"); err != nil {
		t.Fatal(err)
	}
	if err := m.Destroy("a:b:disk"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("destroy twice: %v", err)
	}
	if _, err := os.Stat(filepath.Join(m.Dir(), "stray")); err != nil {
		t.Fatal("orphan file was deleted")
	}
}

func TestUploadDownloadAtomic(t *testing.T) {
	m, _ := Open(t.TempDir())
	m.Create("disk", 1)
	data := bytes.Repeat([]byte("petrel"), 1000)
	u, err := m.BeginUpload("disk", true)
	if err != nil {
		t.Fatal(err)
	}
	u.Write(data)
	if _, err := m.BeginUpload("disk", true); !errors.Is(err, ErrBusy) {
		t.Fatalf("concurrent upload: %v", err)
	}
	if _, err := m.Acquire("disk", "vm"); !errors.Is(err, ErrBusy) {
		t.Fatalf("acquire during upload: %v", err)
	}
	if _, err := u.Commit(sum(data)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	digest, n, err := m.Download("disk", &out)
	if err != nil || n != MB || !bytes.Equal(out.Bytes()[:len(data)], data) {
		t.Fatalf("download: %v %d", err, n)
	}
	if digest != sum(out.Bytes()) {
		t.Fatal("download digest wrong")
	}

	// A wrong checksum and an aborted upload leave the old content.
	u, _ = m.BeginUpload("disk", true)
	u.Write([]byte("garbage"))
	if _, err := u.Commit(sum([]byte("other"))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad checksum: %v", err)
	}
	u, _ = m.BeginUpload("disk", true)
	u.Write([]byte("half"))
	u.Abort()
	out.Reset()
	m.Download("disk", &out)
	if !bytes.Equal(out.Bytes()[:len(data)], data) {
		t.Fatal("content changed by a failed upload")
	}
	tmps, _ := filepath.Glob(filepath.Join(m.Dir(), "*.tmp"))
	if len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}

	// Unhashed: stored without a digest, and no digest can be checked.
	u, _ = m.BeginUpload("disk", false)
	u.Write([]byte("unhashed"))
	if got, err := u.Commit(""); err != nil || got != "" {
		t.Fatalf("unhashed upload: %q %v", got, err)
	}
	out.Reset()
	m.Download("disk", &out)
	if !bytes.HasPrefix(out.Bytes(), []byte("unhashed\x00")) {
		t.Fatal("unhashed upload not stored")
	}
	u, _ = m.BeginUpload("disk", false)
	u.Write([]byte("other"))
	if _, err := u.Commit(sum([]byte("other"))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("checking an unhashed upload: %v", err)
	}
	out.Reset()
	m.Download("disk", &out)
	if !bytes.HasPrefix(out.Bytes(), []byte("unhashed\x00")) {
		t.Fatal("an upload that could not be checked changed the device")
	}

	// Too large.
	u, _ = m.BeginUpload("disk", true)
	if _, err := u.Write(make([]byte, MB+1)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized upload: %v", err)
	}
	u.Abort()
}

func TestOneUserAtATime(t *testing.T) {
	m, _ := Open(t.TempDir())
	m.Create("disk", 1)
	if _, err := m.Acquire("disk", "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Acquire("disk", "vm2"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second VM: %v", err)
	}
	for name, op := range map[string]func() error{
		"upload":   func() error { _, err := m.BeginUpload("disk", true); return err },
		"download": func() error { _, _, err := m.Download("disk", &bytes.Buffer{}); return err },
		"destroy":  func() error { return m.Destroy("disk") },
	} {
		if err := op(); !errors.Is(err, ErrBusy) {
			t.Errorf("%s while in use: %v", name, err)
		}
	}
	m.Release("disk", "vm1")
	if _, err := m.Acquire("disk", "vm2"); err != nil {
		t.Fatal(err)
	}
}
