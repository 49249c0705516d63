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
)

// PutImage stores the content of r as an image named by its SHA-256 and
// returns the lowercase hex digest and the size. The content is streamed
// to a temporary file while it is hashed, so images are never held in
// memory. Content larger than maxBytes (which must be positive) is refused
// and leaves no file behind. Storing content that is already present
// keeps the existing file. When PutImage returns nil the image is durable.
//
// PutImage does not hold up Close while it reads from r, which may be a
// slow network stream; an image whose upload outlives the Store fails.
func (s *Store) PutImage(r io.Reader, maxBytes int64) (sha string, size int64, err error) {
	if maxBytes <= 0 {
		return "", 0, fmt.Errorf("put image: size limit must be positive, not %d", maxBytes)
	}
	end, err := s.begin()
	if err != nil {
		return "", 0, fmt.Errorf("put image: %w", err)
	}
	end()
	dir := filepath.Join(s.dir, imagesDir)
	f, err := os.CreateTemp(dir, "img-*"+tmpSuffix)
	if err != nil {
		return "", 0, fmt.Errorf("put image: %w", err)
	}
	tmp := f.Name()
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(tmp)
		}
	}()

	limit := maxBytes
	if limit < math.MaxInt64 {
		limit++ // read one byte more than allowed to detect oversize input
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit))
	if err != nil {
		return "", 0, fmt.Errorf("put image: write %s: %w", tmp, err)
	}
	if n > maxBytes {
		return "", 0, fmt.Errorf("put image: image is larger than the limit of %d bytes", maxBytes)
	}
	if err := f.Sync(); err != nil {
		return "", 0, fmt.Errorf("put image: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return "", 0, fmt.Errorf("put image: close %s: %w", tmp, err)
	}
	sha = hex.EncodeToString(h.Sum(nil))

	end, err = s.begin()
	if err != nil {
		return "", 0, fmt.Errorf("put image: %w", err)
	}
	defer end()
	dst := filepath.Join(dir, imageAlgoDir, sha)
	if _, err := os.Stat(dst); err == nil {
		return sha, n, nil
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", 0, fmt.Errorf("put image: rename %s to %s: %w", tmp, dst, err)
	}
	committed = true
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return "", 0, fmt.Errorf("put image: %w", err)
	}
	return sha, n, nil
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
