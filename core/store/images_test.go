package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/transfer"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func imageTemps(t *testing.T, s *Store) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(s.Dir(), "images", "*.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPutImage(t *testing.T) {
	s, dir := openTemp(t)
	content := "a unikernel"
	got, size, err := s.PutImage(strings.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	if got != sha(content) || size != int64(len(content)) {
		t.Fatalf("PutImage = %s, %d", got, size)
	}
	path, err := s.ImagePath(got)
	if err != nil || path != filepath.Join(dir, "images", "sha256", got) {
		t.Fatalf("ImagePath = %q, %v", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("image mode %v, %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != content {
		t.Fatalf("image content %q", b)
	}

	// Storing the same content again keeps the file and leaves no temp.
	before := fi.ModTime()
	got2, _, err := s.PutImage(strings.NewReader(content), 1<<20)
	if err != nil || got2 != got {
		t.Fatalf("second PutImage = %s, %v", got2, err)
	}
	if fi2, _ := os.Stat(path); !fi2.ModTime().Equal(before) {
		t.Error("dedup replaced the existing image")
	}
	if tmps := imageTemps(t, s); len(tmps) != 0 {
		t.Fatalf("temporary files left: %q", tmps)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "images", "sha256"))
	if len(entries) != 1 {
		t.Fatalf("images dir holds %d entries, want 1", len(entries))
	}

	empty, n, err := s.PutImage(strings.NewReader(""), 1)
	if err != nil || n != 0 || empty != sha("") {
		t.Fatalf("empty image = %s, %d, %v", empty, n, err)
	}
}

func TestPutImageLimit(t *testing.T) {
	s, dir := openTemp(t)
	_, _, err := s.PutImage(strings.NewReader("12345"), 4)
	if err == nil || !strings.Contains(err.Error(), "larger than the limit of 4 bytes") {
		t.Fatalf("oversize PutImage = %v", err)
	}
	if tmps := imageTemps(t, s); len(tmps) != 0 {
		t.Fatalf("oversize upload left %q", tmps)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "images", "sha256")); len(entries) != 0 {
		t.Fatalf("oversize upload left %d files", len(entries))
	}
	if _, _, err := s.PutImage(strings.NewReader("x"), 0); err == nil {
		t.Fatal("PutImage with a zero limit succeeded")
	}
	if _, n, err := s.PutImage(strings.NewReader("1234"), 4); err != nil || n != 4 {
		t.Fatalf("PutImage at exactly the limit = %d, %v", n, err)
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("connection reset")
	}
	k := min(len(p), r.n)
	r.n -= k
	return k, nil
}

func TestPutImageReadError(t *testing.T) {
	s, _ := openTemp(t)
	_, _, err := s.PutImage(&failingReader{n: 100000}, 1<<30)
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("PutImage from a failing reader = %v", err)
	}
	if tmps := imageTemps(t, s); len(tmps) != 0 {
		t.Fatalf("failed upload left %q", tmps)
	}
}

// zeros is an endless reader that allocates nothing.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestPutImageStreams(t *testing.T) {
	s, _ := openTemp(t)
	const size = 32 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	digest, n, err := s.PutImage(io.LimitReader(zeros{}, size), size)
	runtime.ReadMemStats(&after)
	if err != nil || n != size {
		t.Fatalf("PutImage = %d, %v", n, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(zeros{}, size)); err != nil {
		t.Fatal(err)
	}
	if want := hex.EncodeToString(h.Sum(nil)); digest != want {
		t.Fatalf("digest %s, want %s", digest, want)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("streaming %d MiB allocated %d KiB", size>>20, allocated>>10)
	// The transfer's chunks (transfer.ChunkSize each, a bounded number
	// of them in flight) are the only buffers that may grow with it.
	if allocated > 8*transfer.ChunkSize+2<<20 {
		t.Fatalf("PutImage allocated %d bytes for a %d byte image; it must stream", allocated, size)
	}
}

func TestImagePath(t *testing.T) {
	s, _ := openTemp(t)
	for _, bad := range []string{"", "../meta.json", strings.Repeat("A", 64), strings.Repeat("g", 64), strings.Repeat("a", 63), strings.Repeat("a", 65)} {
		if _, err := s.ImagePath(bad); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("ImagePath(%q) = %v, want a validation error", bad, err)
		}
	}
	if _, err := s.ImagePath(sha("absent")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ImagePath of an absent image = %v", err)
	}
}

func TestRemoveImagesExcept(t *testing.T) {
	s, dir := openTemp(t)
	var digests []string
	for _, c := range []string{"one", "two", "three"} {
		d, _, err := s.PutImage(strings.NewReader(c), 100)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	upload := filepath.Join(dir, "images", "img-inprogress.tmp")
	if err := os.WriteFile(upload, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "images", "sha256", "README")
	if err := os.WriteFile(other, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	n, err := s.RemoveImagesExcept(map[string]bool{digests[1]: true})
	if err != nil || n != 2 {
		t.Fatalf("RemoveImagesExcept = %d, %v", n, err)
	}
	if _, err := s.ImagePath(digests[1]); err != nil {
		t.Fatalf("kept image: %v", err)
	}
	for _, d := range []string{digests[0], digests[2]} {
		if _, err := s.ImagePath(d); !errors.Is(err, ErrNotFound) {
			t.Errorf("image %s not removed: %v", d, err)
		}
	}
	for _, p := range []string{upload, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("GC removed %s: %v", p, err)
		}
	}
	if n, err := s.RemoveImagesExcept(map[string]bool{digests[1]: true}); err != nil || n != 0 {
		t.Fatalf("second GC = %d, %v", n, err)
	}
	if n, err := s.RemoveImagesExcept(nil); err != nil || n != 1 {
		t.Fatalf("GC with nothing kept = %d, %v", n, err)
	}
}

// TestStageImage: a staged image is invisible to the store (and to image
// collection) until Commit; Discard leaves nothing; ImageSizes lists
// what is committed.
func TestStageImage(t *testing.T) {
	s, _ := openTemp(t)
	st, err := s.StageImage(strings.NewReader("unikernel"), 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImagePath(st.SHA256); !errors.Is(err, ErrNotFound) {
		t.Fatalf("staged image visible before Commit: %v", err)
	}
	if n, err := s.RemoveImagesExcept(nil); err != nil || n != 0 {
		t.Fatalf("collection removed %d staged files: %v", n, err)
	}
	if err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	st.Discard() // after Commit: nothing
	if _, err := s.ImagePath(st.SHA256); err != nil {
		t.Fatalf("committed image: %v", err)
	}
	sizes, err := s.ImageSizes()
	if err != nil || len(sizes) != 1 || sizes[st.SHA256] != int64(len("unikernel")) {
		t.Fatalf("ImageSizes = %v, %v", sizes, err)
	}
	other, err := s.StageImage(strings.NewReader("other"), 100)
	if err != nil {
		t.Fatal(err)
	}
	other.Discard()
	if err := other.Commit(); err == nil {
		t.Error("Commit after Discard succeeded")
	}
	if _, err := s.StageImage(strings.NewReader("too long"), 3); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: %v, want ErrTooLarge", err)
	}
	if left := imageTemps(t, s); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
