package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

type rec struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestOpenLayout(t *testing.T) {
	s, dir := openTemp(t)
	if s.Dir() != dir {
		t.Fatalf("Dir() = %q, want %q", s.Dir(), dir)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode %v, %v", fi.Mode(), err)
	}
	for _, d := range []string{"images", "images/sha256", "quarantine"} {
		if fi, err := os.Stat(filepath.Join(dir, d)); err != nil || !fi.IsDir() {
			t.Errorf("subdirectory %s: %v", d, err)
		}
	}
	var m map[string]any
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("meta.json: %v", err)
	}
	if m["schema"] != float64(SchemaVersion) || m["created_at"] == nil {
		t.Fatalf("meta.json = %s", b)
	}
	pid, _ := os.ReadFile(filepath.Join(dir, "lock"))
	if strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q", pid)
	}
}

func TestPutGetDeleteList(t *testing.T) {
	s, dir := openTemp(t)
	if keys, err := s.List("vms"); err != nil || len(keys) != 0 {
		t.Fatalf("List of an unused collection = %q, %v", keys, err)
	}
	var r rec
	if err := s.Get("vms", "a:vm", &r); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing key = %v, want ErrNotFound", err)
	}
	for i, k := range []string{"b", "a:vm", "a", "a-b", ".hidden", "%2e"} {
		if err := s.Put("vms", k, rec{Name: k, Count: i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put("vms", "a", rec{Name: "a", Count: 42}); err != nil {
		t.Fatal(err)
	}
	if err := s.Get("vms", "a", &r); err != nil || r != (rec{"a", 42}) {
		t.Fatalf("Get = %+v, %v", r, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "vms", "a.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("record file mode %v, %v", fi.Mode(), err)
	}
	keys, err := s.List("vms")
	if want := []string{"%2e", ".hidden", "a", "a-b", "a:vm", "b"}; err != nil || !slices.Equal(keys, want) {
		t.Fatalf("List = %q, %v; want %q", keys, err, want)
	}
	if err := s.Delete("vms", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("vms", "a"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	if err := s.Delete("never-used", "x"); err != nil {
		t.Fatalf("deleting from a missing collection: %v", err)
	}
	if err := s.Get("vms", "a", &r); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete = %v", err)
	}
	if keys, _ := s.List("vms"); slices.Contains(keys, "a") {
		t.Fatalf("List after Delete = %q", keys)
	}
	if err := s.Put("vms", "bad", make(chan int)); err == nil {
		t.Fatal("Put of an unencodable value succeeded")
	}
	if err := s.Put("policies", "x", json.RawMessage(`{"raw":true}`)); err != nil {
		t.Fatal(err)
	}
	var raw map[string]bool
	if err := s.Get("policies", "x", &raw); err != nil || !raw["raw"] {
		t.Fatalf("Get raw = %v, %v", raw, err)
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("vms", "x", rec{"x", 7}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var r rec
	if err := s.Get("vms", "x", &r); err != nil || r.Count != 7 {
		t.Fatalf("after reopen: %+v, %v", r, err)
	}
}

func TestInvalidNames(t *testing.T) {
	s, _ := openTemp(t)
	long := strings.Repeat("k", MaxKeyLength)
	if err := s.Put("vms", long, rec{}); err != nil {
		t.Fatalf("key of MaxKeyLength: %v", err)
	}
	for _, k := range []string{"", ".", "..", "a/b", "/", "a\x00b", long + "k"} {
		if err := s.Put("vms", k, rec{}); err == nil {
			t.Errorf("Put key %q succeeded", k)
		}
		if err := s.Get("vms", k, &rec{}); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Get key %q = %v, want a validation error", k, err)
		}
		if err := s.Delete("vms", k); err == nil {
			t.Errorf("Delete key %q succeeded", k)
		}
	}
	for _, c := range []string{"", "VMs", "a/b", "..", "a.b", "images", "quarantine", "lock", strings.Repeat("c", 65)} {
		if err := s.Put(c, "k", rec{}); err == nil {
			t.Errorf("Put collection %q succeeded", c)
		}
		if _, err := s.List(c); err == nil {
			t.Errorf("List collection %q succeeded", c)
		}
	}
}

func TestClosed(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Put("vms", "a", rec{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v", err)
	}
	if err := s.Get("vms", "a", &rec{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v", err)
	}
	if _, err := s.List("vms"); !errors.Is(err, ErrClosed) {
		t.Errorf("List after Close = %v", err)
	}
	if _, _, err := s.PutImage(strings.NewReader("x"), 10); !errors.Is(err, ErrClosed) {
		t.Errorf("PutImage after Close = %v", err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	s, _ := openTemp(t)
	const workers, rounds = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*2)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("vm%d", w)
			for i := 1; i <= rounds; i++ {
				if err := s.Put("vms", key, rec{key, i}); err != nil {
					errs <- err
					return
				}
				// All workers also hammer one shared key.
				if err := s.Put("vms", "shared", rec{key, i}); err != nil {
					errs <- err
					return
				}
				var r rec
				if err := s.Get("vms", key, &r); err != nil || r.Count != i {
					errs <- fmt.Errorf("worker %d read %+v, %v after writing %d", w, r, err, i)
					return
				}
				if _, err := s.List("vms"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	keys, err := s.List("vms")
	if err != nil || len(keys) != workers+1 {
		t.Fatalf("List = %q, %v", keys, err)
	}
	var shared rec
	if err := s.Get("vms", "shared", &shared); err != nil || shared.Count != rounds {
		t.Fatalf("shared = %+v, %v", shared, err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(s.Dir(), "vms", "*.tmp"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left: %q", leftovers)
	}
}

func TestStaleTempsRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("vms", "a", rec{"a", 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutImage(strings.NewReader("image"), 100); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// What a crash between writing and renaming leaves behind: a complete
	// temporary file with a newer value and a half-written one.
	stale := map[string]string{
		filepath.Join(dir, "vms", "put-1.tmp"):        `{"name":"a","count":2}`,
		filepath.Join(dir, "vms", "put-2.tmp"):        `{"name":"a","co`,
		filepath.Join(dir, "images", "img-3.tmp"):     "partial image",
		filepath.Join(dir, "put-4.tmp"):               `{"schema":1`,
		filepath.Join(dir, "quarantine", "put-5.tmp"): "",
	}
	for p, content := range stale {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keep := filepath.Join(dir, "vms", "notes.txt")
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for p := range stale {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("stale %s survived Open: %v", p, err)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("Open removed a non-temporary file: %v", err)
	}
	var r rec
	if err := s.Get("vms", "a", &r); err != nil || r.Count != 1 {
		t.Fatalf("old value after crash = %+v, %v", r, err)
	}
	if keys, _ := s.List("vms"); !slices.Equal(keys, []string{"a"}) {
		t.Fatalf("List = %q", keys)
	}
}

func TestCorruptRecordAndQuarantine(t *testing.T) {
	s, dir := openTemp(t)
	for _, k := range []string{"a", "b", "c", "d"} {
		if err := s.Put("vms", k, rec{k, 1}); err != nil {
			t.Fatal(err)
		}
	}
	bad := filepath.Join(dir, "vms", "b.json")
	if err := os.WriteFile(bad, []byte(`{"name":"b",`), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := s.Get("vms", "b", &rec{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Get of corrupt record = %v", err)
	}

	var seen []string
	err := s.Walk("vms", func(key string, raw json.RawMessage) error {
		seen = append(seen, key)
		return nil
	})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Walk over corrupt record = %v, want ErrCorrupt naming %s", err, bad)
	}
	if !slices.Equal(seen, []string{"a"}) {
		t.Fatalf("Walk visited %q before the corrupt record", seen)
	}

	stop := errors.New("stop")
	if err := s.Walk("vms", func(string, json.RawMessage) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Walk did not return fn's error: %v", err)
	}

	seen = nil
	moved, err := s.WalkQuarantine("vms", func(key string, raw json.RawMessage) error {
		var r rec
		if err := json.Unmarshal(raw, &r); err != nil || r.Name != key {
			return fmt.Errorf("record %s: %+v, %v", key, r, err)
		}
		seen = append(seen, key)
		if key == "c" {
			// fn may use the store, e.g. to quarantine a record that is
			// valid JSON but unusable.
			if _, err := s.Quarantine("vms", "d"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "quarantine", "vms", "b.json")
	if !slices.Equal(moved, []string{want}) {
		t.Fatalf("quarantined %q, want %q", moved, want)
	}
	if !slices.Equal(seen, []string{"a", "c"}) {
		t.Fatalf("WalkQuarantine visited %q", seen)
	}
	if b, err := os.ReadFile(want); err != nil || string(b) != `{"name":"b",` {
		t.Fatalf("quarantined content %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "quarantine", "vms", "d.json")); err != nil {
		t.Fatalf("Quarantine(d): %v", err)
	}
	if keys, _ := s.List("vms"); !slices.Equal(keys, []string{"a", "c"}) {
		t.Fatalf("List after quarantine = %q", keys)
	}
	if p, err := s.Quarantine("vms", "missing"); err != nil || p != "" {
		t.Fatalf("Quarantine of a missing key = %q, %v", p, err)
	}
	if err := s.Walk("vms", func(string, json.RawMessage) error { return nil }); err != nil {
		t.Fatalf("Walk after quarantine: %v", err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	newer := fmt.Sprintf(`{"schema":%d,"created_at":"2024-01-01T00:00:00Z"}`, SchemaVersion+1)
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), []byte(newer), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "x.tmp")
	if err := os.WriteFile(tmp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if want := fmt.Sprintf("schema version %d, newer than the %d", SchemaVersion+1, SchemaVersion); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open of a newer schema = %v", err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("Open touched a newer store: %v", err)
	}
	// The lock must have been released.
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), []byte(fmt.Sprintf(`{"schema":%d}`, SchemaVersion)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after a refused Open: %v", err)
	}
	s.Close()
}

func TestCorruptMeta(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), []byte(`{"schema":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "meta.json") {
		t.Fatalf("Open with corrupt meta.json = %v", err)
	}
}

func TestForeignDirectoryRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "precious.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "user.tmp"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), "precious.txt") {
		t.Fatalf("Open of a foreign directory = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "user.tmp")); err != nil {
		t.Fatalf("Open removed a file from a foreign directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "meta.json")); !os.IsNotExist(err) {
		t.Fatalf("Open wrote meta.json into a foreign directory: %v", err)
	}
}

func TestMigration(t *testing.T) {
	dir := t.TempDir()
	// A fake schema 0 kept VMs in one file; schema 1 has one file per VM.
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), []byte(`{"schema":0,"created_at":"2020-01-01T00:00:00Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vms-v0.json"), []byte(`{"a":{"name":"a","count":3}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	calls := 0
	v0to1 := Migration{From: 0, Apply: func(d string) error {
		calls++
		old := filepath.Join(d, "vms-v0.json")
		b, err := os.ReadFile(old)
		if err != nil {
			return err
		}
		var all map[string]json.RawMessage
		if err := json.Unmarshal(b, &all); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(d, "vms"), 0o700); err != nil {
			return err
		}
		for k, v := range all {
			if err := os.WriteFile(filepath.Join(d, "vms", k+".json"), v, 0o600); err != nil {
				return err
			}
		}
		return os.Remove(old)
	}}

	all := append([]Migration{v0to1}, migrations...)
	if _, err := OpenWith(dir, Options{}); err == nil || !strings.Contains(err.Error(), "no migration") {
		t.Fatalf("Open without a migration = %v", err)
	}
	failing := Migration{From: 0, Apply: func(string) error { return errors.New("disk on fire") }}
	if _, err := OpenWith(dir, Options{Migrations: []Migration{failing}}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("Open with a failing migration = %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "meta.json")); !strings.Contains(string(b), `"schema":0`) {
		t.Fatalf("failed migration changed meta.json: %s", b)
	}

	s, err := OpenWith(dir, Options{Migrations: all})
	if err != nil {
		t.Fatal(err)
	}
	var r rec
	if err := s.Get("vms", "a", &r); err != nil || r.Count != 3 {
		t.Fatalf("migrated record = %+v, %v", r, err)
	}
	s.Close()
	b, _ := os.ReadFile(filepath.Join(dir, "meta.json"))
	var m meta
	if err := json.Unmarshal(b, &m); err != nil || m.Schema != SchemaVersion || m.CreatedAt.Year() != 2020 {
		t.Fatalf("meta after migration = %s, %v", b, err)
	}
	s, err = OpenWith(dir, Options{Migrations: all})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if calls != 1 {
		t.Fatalf("migration ran %d times, want 1", calls)
	}
}

func TestLockExclusive(t *testing.T) {
	s, dir := openTemp(t)
	_, err := Open(dir)
	if err == nil {
		t.Fatal("second Open of the same directory succeeded")
	}
	if want := fmt.Sprintf("in use by another petreld (held by pid %d)", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("second Open = %v, want it to contain %q", err, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

func BenchmarkPut(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "data"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; b.Loop(); i++ {
		if err := s.Put("vms", "bench", rec{"bench", i}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "data"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Put("vms", "bench", rec{"bench", 1}); err != nil {
		b.Fatal(err)
	}
	var r rec
	for b.Loop() {
		if err := s.Get("vms", "bench", &r); err != nil {
			b.Fatal(err)
		}
	}
}

// TestInstanceID: a data directory gets a random instance id at its first
// Open and keeps it; a directory from before instance ids gets one, and
// its other metadata stays.
func TestInstanceID(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	id := s.InstanceID()
	s.Close()
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("instance id %q is not 16 hex digits", id)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again := s.InstanceID(); again != id {
		t.Fatalf("instance id changed across Open: %s, then %s", id, again)
	}
	s.Close()
	if info, err := ReadInfo(dir); err != nil || info.InstanceID != id {
		t.Fatalf("ReadInfo = %+v, %v; want instance id %s", info, err, id)
	}
	other := t.TempDir()
	s, err = Open(other)
	if err != nil {
		t.Fatal(err)
	}
	if s.InstanceID() == id {
		t.Fatal("two data directories have the same instance id")
	}
	s.Close()

	old := t.TempDir()
	if err := os.WriteFile(filepath.Join(old, "meta.json"), []byte(`{"schema":2,"created_at":"2020-01-02T03:04:05Z"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(old)
	if err != nil {
		t.Fatal(err)
	}
	id = s.InstanceID()
	s.Close()
	info, err := ReadInfo(old)
	if err != nil || id == "" || info.InstanceID != id || info.CreatedAt.Year() != 2020 || info.Schema != SchemaVersion {
		t.Fatalf("a directory from before instance ids: %+v, %v (id %q)", info, err, id)
	}
}
