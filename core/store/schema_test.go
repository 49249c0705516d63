package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixtureDir is the data directory petreld of schema version v wrote,
// kept in testdata so that every later schema is tested against it.
func fixtureDir(v int) string { return filepath.Join("testdata", fmt.Sprintf("schema%d", v)) }

// copyTree copies a fixture into a fresh directory with the modes
// petreld gives its files (git does not keep them).
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "data")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// fixtureContent reads what a fixture holds, independently of its
// layout: every record as collection/key → bytes, and the digests of
// every image file (wherever that schema kept them).
func fixtureContent(t *testing.T, dir string) (records map[string][]byte, images map[string]bool) {
	t.Helper()
	records, images = map[string][]byte{}, map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch {
		case parts[0] == imagesDir:
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != d.Name() {
				t.Fatalf("fixture image %s does not match its name", rel)
			}
			images[d.Name()] = true
		case len(parts) == 2 && strings.HasSuffix(parts[1], recordSuffix):
			records[parts[0]+"/"+strings.TrimSuffix(parts[1], recordSuffix)] = b
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return records, images
}

// TestMigrateEveryEarlierSchema opens a copy of each earlier schema's
// fixture with today's Open and checks that the migrated directory has
// the current schema, every record unchanged and every image reachable,
// and that opening it again changes nothing.
func TestMigrateEveryEarlierSchema(t *testing.T) {
	if SchemaVersion < 2 {
		t.Fatalf("SchemaVersion %d: no earlier schema exists, so this test has nothing to check", SchemaVersion)
	}
	for v := 1; v < SchemaVersion; v++ {
		t.Run(fmt.Sprintf("schema%d", v), func(t *testing.T) {
			src := fixtureDir(v)
			info, err := ReadInfo(src)
			if err != nil {
				t.Fatalf("every earlier schema needs a fixture written by that petreld in %s: %v", src, err)
			}
			if info.Schema != v {
				t.Fatalf("fixture %s has schema %d", src, info.Schema)
			}
			records, images := fixtureContent(t, src)
			if len(records) == 0 || len(images) == 0 {
				t.Fatalf("fixture %s holds %d records and %d images; it should exercise both", src, len(records), len(images))
			}
			dir := copyTree(t, src)
			for round := 0; round < 2; round++ {
				s, err := Open(dir)
				if err != nil {
					t.Fatalf("Open (round %d): %v", round, err)
				}
				checkMigrated(t, s, info, records, images)
				s.Close()
			}
		})
	}
}

func checkMigrated(t *testing.T, s *Store, was Info, records map[string][]byte, images map[string]bool) {
	t.Helper()
	got, err := ReadInfo(s.Dir())
	if err != nil || got.Schema != SchemaVersion || !got.CreatedAt.Equal(was.CreatedAt) {
		t.Fatalf("after migration meta = %+v, %v; want schema %d, created %v", got, err, SchemaVersion, was.CreatedAt)
	}
	for ck, want := range records {
		c, k, _ := strings.Cut(ck, "/")
		var raw []byte
		if err := s.Walk(c, func(key string, r json.RawMessage) error {
			if key == k {
				raw = r
			}
			return nil
		}); err != nil {
			t.Fatalf("walk %s: %v", c, err)
		}
		if !bytes.Equal(bytes.TrimSpace(raw), bytes.TrimSpace(want)) {
			t.Errorf("record %s changed by migration:\n%s\nwant\n%s", ck, raw, want)
		}
	}
	for sha := range images {
		p, err := s.ImagePath(sha)
		if err != nil {
			t.Errorf("image %s after migration: %v", sha, err)
			continue
		}
		b, _ := os.ReadFile(p)
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != sha {
			t.Errorf("image %s content changed", sha)
		}
	}
	// Nothing that looks like an image may be left where an earlier
	// schema kept it, or a later garbage collection would miss it.
	entries, _ := os.ReadDir(filepath.Join(s.Dir(), imagesDir))
	for _, e := range entries {
		if validSHA(e.Name()) {
			t.Errorf("image %s left in the schema 1 place", e.Name())
		}
	}
	n, err := s.RemoveImagesExcept(images)
	if err != nil || n != 0 {
		t.Errorf("GC after migration removed %d images (%v), want none", n, err)
	}
}

// TestImageMigrationResumes runs the schema 1 → 2 image move over a
// directory a crash left half migrated, with one image already moved and
// one present in both places.
func TestImageMigrationResumes(t *testing.T) {
	dir := copyTree(t, fixtureDir(1))
	_, images := fixtureContent(t, dir)
	var shas []string
	for sha := range images {
		shas = append(shas, sha)
	}
	if len(shas) < 3 {
		t.Fatalf("fixture has %d images, want at least 3", len(shas))
	}
	algo := filepath.Join(dir, imagesDir, imageAlgoDir)
	if err := os.Mkdir(algo, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, imagesDir, shas[0]), filepath.Join(algo, shas[0])); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, imagesDir, shas[1]))
	if err := os.WriteFile(filepath.Join(algo, shas[1]), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := migrateImagesToAlgoDir(dir); err != nil {
		t.Fatal(err)
	}
	for _, sha := range shas {
		if _, err := os.Stat(filepath.Join(algo, sha)); err != nil {
			t.Errorf("image %s not in place: %v", sha, err)
		}
		if _, err := os.Stat(filepath.Join(dir, imagesDir, sha)); !os.IsNotExist(err) {
			t.Errorf("image %s still in the old place: %v", sha, err)
		}
	}
	if err := migrateImagesToAlgoDir(dir); err != nil {
		t.Fatalf("second run: %v", err)
	}
}

// TestMigrationFailureKeepsSchema makes the image move fail (something
// that is not a directory stands where images/sha256 goes) and checks
// that the directory keeps schema 1, so the next Open retries.
func TestMigrationFailureKeepsSchema(t *testing.T) {
	dir := copyTree(t, fixtureDir(1))
	blocker := filepath.Join(dir, imagesDir, imageAlgoDir)
	if err := os.WriteFile(blocker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Fatalf("Open with images/sha256 a file = %v", err)
	}
	if info, _ := ReadInfo(dir); info.Schema != 1 {
		t.Fatalf("failed migration left schema %d", info.Schema)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after the cause is gone: %v", err)
	}
	s.Close()
	if info, _ := ReadInfo(dir); info.Schema != SchemaVersion {
		t.Fatalf("retried migration left schema %d", info.Schema)
	}
}
