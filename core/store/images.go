package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/petrel-vmm/petrel/sdk/transfer"
)

// ErrTooLarge is wrapped by the error of StageImage (and PutImage) when
// the content exceeds the size limit given, so callers can tell a refusal
// from a failure and say which limit it was.
var ErrTooLarge = errors.New("image too large")

// PutImage stores the content of r as an image named by its SHA-256 and
// returns the lowercase hex digest and the size: StageImage, then Commit.
// Content larger than maxBytes (which must be positive) is refused and
// leaves no file behind. Storing content that is already present keeps
// the existing file. When PutImage returns nil the image is durable.
func (s *Store) PutImage(r io.Reader, maxBytes int64) (sha string, size int64, err error) {
	st, err := s.StageImage(r, maxBytes)
	if err != nil {
		return "", 0, err
	}
	if err := st.Commit(); err != nil {
		return "", 0, err
	}
	return st.SHA256, st.Size, nil
}

// StagedImage is an image whose content has been received and hashed but
// that is not in the store yet: the caller decides, knowing its digest
// and size, whether to Commit it or Discard it. Exactly one of the two
// must be called.
type StagedImage struct {
	// SHA256 is the lowercase hex digest of the content, Size its length.
	SHA256 string
	Size   int64

	s    *Store
	tmp  string
	done bool
}

// StageImage streams the content of r to a temporary file in the image
// directory while hashing it, so images are never held in memory.
// Content larger than maxBytes (which must be positive) is refused with
// an error wrapping ErrTooLarge, and leaves no file behind; reading stops
// one byte past the limit, so no more than maxBytes+1 bytes are ever
// written. Temporary files are not images: RemoveImagesExcept leaves them
// alone.
//
// StageImage does not hold up Close while it reads from r, which may be
// a slow network stream.
func (s *Store) StageImage(r io.Reader, maxBytes int64) (*StagedImage, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("put image: size limit must be positive, not %d", maxBytes)
	}
	end, err := s.begin()
	if err != nil {
		return nil, fmt.Errorf("put image: %w", err)
	}
	end()
	dir := filepath.Join(s.dir, imagesDir)
	f, err := os.CreateTemp(dir, "img-*"+tmpSuffix)
	if err != nil {
		return nil, fmt.Errorf("put image: %w", err)
	}
	tmp := f.Name()
	kept := false
	defer func() {
		if !kept {
			f.Close()
			os.Remove(tmp)
		}
	}()

	limit := maxBytes
	if limit < math.MaxInt64 {
		limit++ // read one byte more than allowed to detect oversize input
	}
	// Hashing and writing (with write-back started as the content
	// arrives) run on goroutines of their own while r is read.
	h := sha256.New()
	fan := transfer.NewFanout(transfer.HashSink(h), transfer.NewFileSink(f).Write)
	n, err := fan.ReadFrom(io.LimitReader(r, limit))
	if err != nil {
		fan.Abort(err)
		return nil, fmt.Errorf("put image: write %s: %w", tmp, err)
	}
	if err := fan.Close(); err != nil {
		return nil, fmt.Errorf("put image: write %s: %w", tmp, err)
	}
	if n > maxBytes {
		return nil, fmt.Errorf("put image: %w: larger than the limit of %d bytes", ErrTooLarge, maxBytes)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("put image: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("put image: close %s: %w", tmp, err)
	}
	kept = true
	return &StagedImage{SHA256: hex.EncodeToString(h.Sum(nil)), Size: n, s: s, tmp: tmp}, nil
}

// Commit moves the staged content into the store under its digest (an
// image already present is kept, and the staged copy dropped). When it
// returns nil the image is durable.
func (st *StagedImage) Commit() error {
	if st.done {
		return errors.New("put image: already committed or discarded")
	}
	st.done = true
	end, err := st.s.begin()
	if err != nil {
		os.Remove(st.tmp)
		return fmt.Errorf("put image: %w", err)
	}
	defer end()
	dst := filepath.Join(st.s.dir, imagesDir, imageAlgoDir, st.SHA256)
	if _, err := os.Stat(dst); err == nil {
		os.Remove(st.tmp)
		return nil
	}
	if err := os.Rename(st.tmp, dst); err != nil {
		os.Remove(st.tmp)
		return fmt.Errorf("put image: rename %s to %s: %w", st.tmp, dst, err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("put image: %w", err)
	}
	return nil
}

// Discard removes the staged content. It may be called after Commit, to
// clean up on every path, and then does nothing.
func (st *StagedImage) Discard() {
	if !st.done {
		st.done = true
		os.Remove(st.tmp)
	}
}

// ImageSizes returns the size in bytes of every image in the store, by
// digest: what the image store holds, for the host-wide limit on it.
func (s *Store) ImageSizes() (map[string]int64, error) {
	end, err := s.begin()
	if err != nil {
		return nil, fmt.Errorf("image sizes: %w", err)
	}
	defer end()
	dir := filepath.Join(s.dir, imagesDir, imageAlgoDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("image sizes: %w", err)
	}
	out := make(map[string]int64, len(entries))
	for _, e := range entries {
		if !validSHA(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("image sizes: %w", err)
		}
		out[e.Name()] = fi.Size()
	}
	return out, nil
}

// ImagePath returns the path of the image with the given SHA-256 hex
// digest, for handing to a tender. It fails with an error wrapping
// ErrNotFound if the image is absent, and rejects anything that is not a
// 64-digit lowercase hex string, so a digest from a request can never
// name a file outside the image directory.
func (s *Store) ImagePath(sha string) (string, error) {
	if !validSHA(sha) {
		return "", fmt.Errorf("image %.80q: not a lowercase hex SHA-256 digest", sha)
	}
	end, err := s.begin()
	if err != nil {
		return "", fmt.Errorf("image %s: %w", sha, err)
	}
	defer end()
	path := filepath.Join(s.dir, imagesDir, imageAlgoDir, sha)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("image %s: %w", sha, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("image %s: %w", sha, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("image %s: %s is not a regular file", sha, path)
	}
	return path, nil
}

// RemoveImagesExcept deletes every image whose digest is not in keep and
// returns how many it removed. Files that are not images (including
// uploads in progress) are left alone. The caller must make sure no image
// is stored and referenced concurrently, or the new image may be removed
// before its reference is recorded.
func (s *Store) RemoveImagesExcept(keep map[string]bool) (removed int, err error) {
	end, err := s.begin()
	if err != nil {
		return 0, fmt.Errorf("remove images: %w", err)
	}
	defer end()
	dir := filepath.Join(s.dir, imagesDir, imageAlgoDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("remove images: %w", err)
	}
	defer func() {
		if removed > 0 {
			if serr := syncDir(dir); serr != nil && err == nil {
				err = fmt.Errorf("remove images: %w", serr)
			}
		}
	}()
	for _, e := range entries {
		name := e.Name()
		if !validSHA(name) || keep[name] || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("remove images: %w", err)
		}
		removed++
	}
	return removed, nil
}

func validSHA(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return (r < '0' || r > '9') && (r < 'a' || r > 'f')
	}) < 0
}
