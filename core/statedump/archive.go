// Package statedump exports, imports and inspects petreld's data
// directory: the VM records, delegated policies, images and (on request)
// block devices that make up a host's state. It is Petrel's counterpart
// of Albatross's inspect-dump, and what `petrel state` runs.
//
// An export is a gzip-compressed tar archive: first
// petrel-state/manifest.json (the archive format, the store's schema
// version, where and when it was made), then every file of the data
// directory under petrel-state/data/, laid out as that schema lays them
// out. Exports are never converted: an archive from an older petreld keeps
// its schema, and Import migrates it exactly as petreld migrates an old
// data directory, so one set of migrations serves both.
package statedump

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/petrel-vmm/petrel/core/store"
)

// FormatVersion is the archive layout version Export writes and Import
// reads; the store's schema version is recorded separately.
const FormatVersion = 1

const (
	manifestEntry = "petrel-state/manifest.json"
	dataPrefix    = "petrel-state/data/"
	maxManifest   = 1 << 20
)

// Manifest describes an export.
type Manifest struct {
	// Format is the archive's FormatVersion.
	Format int `json:"format"`
	// Schema is the state store schema of the exported files.
	Schema int `json:"schema"`
	// ExportedAt is when the export started.
	ExportedAt time.Time `json:"exported_at"`
	// Source is the exported data directory.
	Source string `json:"source"`
	// Hostname is the exporting host's name.
	Hostname string `json:"hostname,omitempty"`
	// Blocks says whether block device contents are included.
	Blocks bool `json:"blocks"`
	// Live says the export was taken while petreld was running, so
	// records changed during it may be at either value.
	Live bool `json:"live,omitempty"`
}

// ExportOptions adjust Export.
type ExportOptions struct {
	// Blocks includes the block devices' contents (a device's full size,
	// compressed; sparse regions are not preserved).
	Blocks bool
	// Live exports while petreld holds the directory instead of refusing.
	// Every record is read whole, but the export is not one instant's
	// state: a change made during it may be missing.
	Live bool
	// Progress, if set, is called with the number of bytes read so far
	// and the total to read.
	Progress func(done, total int64)
}

// Summary says what an export or import moved.
type Summary struct {
	// Schema is the schema of the exported files, or the schema the
	// imported directory has after migration.
	Schema int
	// From is, on import, the schema the archive was written with.
	From int
	// Files and Bytes count the data files moved.
	Files int
	Bytes int64
	// Skipped lists files that were not exported (not regular files, or
	// gone during a live export).
	Skipped []string
	// Problems lists what an inspection of the imported state found
	// wrong; the import itself succeeded.
	Problems []string
}

// exportFile is one file of the data directory to export.
type exportFile struct {
	rel  string
	size int64
}

// Export writes the data directory dir to w. Unless opts.Live is set it
// takes the directory's lock for the duration, so petreld cannot change
// (or start on) the directory while it is read.
func Export(dir string, w io.Writer, opts ExportOptions) (Summary, error) {
	dir = filepath.Clean(dir)
	info, err := store.ReadInfo(dir)
	if err != nil {
		return Summary{}, fmt.Errorf("export: %w", err)
	}
	if !opts.Live {
		unlock, err := store.Lock(dir)
		if errors.Is(err, store.ErrInUse) {
			return Summary{}, fmt.Errorf("export: %w: stop it first, or pass --live to export while it runs", err)
		}
		if err != nil {
			return Summary{}, fmt.Errorf("export: %w", err)
		}
		defer unlock()
	}
	sum := Summary{Schema: info.Schema}
	files, total, skipped, err := listExport(dir, opts.Blocks)
	if err != nil {
		return sum, err
	}
	sum.Skipped = skipped

	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	host, _ := os.Hostname()
	m := Manifest{Format: FormatVersion, Schema: info.Schema, ExportedAt: time.Now().UTC().Truncate(time.Second),
		Source: dir, Hostname: host, Blocks: opts.Blocks, Live: opts.Live}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return sum, fmt.Errorf("export: encode manifest: %w", err)
	}
	mb = append(mb, '\n')
	if err := tw.WriteHeader(&tar.Header{Name: manifestEntry, Mode: 0o600, Size: int64(len(mb)), ModTime: m.ExportedAt, Typeflag: tar.TypeReg}); err != nil {
		return sum, fmt.Errorf("export: %w", err)
	}
	if _, err := tw.Write(mb); err != nil {
		return sum, fmt.Errorf("export: %w", err)
	}
	var done int64
	for _, f := range files {
		n, err := exportOne(tw, dir, f, opts.Live, func(k int64) {
			done += k
			if opts.Progress != nil {
				opts.Progress(done, total)
			}
		})
		if errors.Is(err, fs.ErrNotExist) && opts.Live {
			sum.Skipped = append(sum.Skipped, f.rel+" (removed during the export)")
			continue
		}
		if err != nil {
			return sum, fmt.Errorf("export %s: %w", f.rel, err)
		}
		sum.Files++
		sum.Bytes += n
	}
	if err := tw.Close(); err != nil {
		return sum, fmt.Errorf("export: %w", err)
	}
	if err := gz.Close(); err != nil {
		return sum, fmt.Errorf("export: %w", err)
	}
	return sum, nil
}

// listExport lists the files to export, in a stable order, with their
// total size: everything but the lock, temporary files, the plugins'
// state directories (metrics waiting for their destination belong to
// this host's sinks) and (unless asked for) block devices.
func listExport(dir string, blocks bool) (files []exportFile, total int64, skipped []string, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != dir {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case rel == ".":
			return nil
		case d.IsDir():
			if (rel == store.BlockDir && !blocks) || rel == store.PluginsDir {
				return filepath.SkipDir
			}
			return nil
		case rel == store.LockFile, store.IsTemporary(d.Name()):
			return nil
		case !d.Type().IsRegular():
			skipped = append(skipped, rel+" (not a regular file)")
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		files = append(files, exportFile{rel: rel, size: fi.Size()})
		total += fi.Size()
		return nil
	})
	if err != nil {
		return nil, 0, nil, fmt.Errorf("export: list %s: %w", dir, err)
	}
	return files, total, skipped, nil
}

// exportOne copies one file into the archive. The size comes from the
// open file, so a record replaced during a live export is copied whole
// at one of its values.
func exportOne(tw *tar.Writer, dir string, f exportFile, live bool, progress func(int64)) (int64, error) {
	fd, err := os.Open(filepath.Join(dir, filepath.FromSlash(f.rel)))
	if err != nil {
		return 0, err
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return 0, err
	}
	h := &tar.Header{Name: dataPrefix + f.rel, Mode: 0o600, Size: fi.Size(), ModTime: fi.ModTime(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(h); err != nil {
		return 0, err
	}
	n, err := io.Copy(tw, &countingReader{r: io.LimitReader(fd, fi.Size()), fn: progress})
	if err != nil {
		return n, err
	}
	if n != fi.Size() {
		if live {
			return n, fmt.Errorf("file shrank from %d to %d bytes while it was exported", fi.Size(), n)
		}
		return n, fmt.Errorf("short read: %d of %d bytes", n, fi.Size())
	}
	return n, nil
}

// countingReader reports every read's size.
type countingReader struct {
	r  io.Reader
	fn func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.fn(int64(n))
	}
	return n, err
}

// extract unpacks an archive into dst, an existing empty directory, and
// returns its manifest. It accepts only regular files and directories
// under petrel-state/data/ and refuses archives from a newer format or
// schema; image contents are checked by InspectDir afterwards.
func extract(r io.Reader, dst string) (Manifest, Summary, error) {
	var m Manifest
	var sum Summary
	gz, err := gzip.NewReader(r)
	if err != nil {
		return m, sum, fmt.Errorf("not a petrel state export (gzip: %w)", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	h, err := tr.Next()
	if err != nil {
		return m, sum, fmt.Errorf("not a petrel state export (tar: %w)", err)
	}
	if h.Name != manifestEntry {
		return m, sum, fmt.Errorf("not a petrel state export: first entry is %q, not %s", h.Name, manifestEntry)
	}
	mb, err := io.ReadAll(io.LimitReader(tr, maxManifest))
	if err != nil {
		return m, sum, fmt.Errorf("read manifest: %w", err)
	}
	if err := json.Unmarshal(mb, &m); err != nil {
		return m, sum, fmt.Errorf("manifest: %w", err)
	}
	switch {
	case m.Format != FormatVersion:
		return m, sum, fmt.Errorf("archive format %d is not supported (this petrel reads format %d)", m.Format, FormatVersion)
	case m.Schema > store.SchemaVersion:
		return m, sum, fmt.Errorf("archive holds schema version %d, newer than the %d this petrel supports; use a newer petrel", m.Schema, store.SchemaVersion)
	case m.Schema < 1:
		return m, sum, fmt.Errorf("manifest: invalid schema version %d", m.Schema)
	}
	sum.From = m.Schema
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, sum, fmt.Errorf("read archive: %w", err)
		}
		rel, err := entryPath(h.Name)
		if err != nil {
			return m, sum, err
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return m, sum, fmt.Errorf("extract %s: %w", rel, err)
			}
		case tar.TypeReg:
			if h.Size < 0 {
				return m, sum, fmt.Errorf("archive entry %s: negative size", h.Name)
			}
			if err := writeEntry(target, tr, h.Size); err != nil {
				return m, sum, fmt.Errorf("extract %s: %w", rel, err)
			}
			sum.Files++
			sum.Bytes += h.Size
		default:
			return m, sum, fmt.Errorf("archive entry %s: type %q is not a regular file or directory", h.Name, h.Typeflag)
		}
	}
	info, err := store.ReadInfo(dst)
	if err != nil {
		return m, sum, fmt.Errorf("archive has no usable %s: %w", store.MetaFile, err)
	}
	if info.Schema != m.Schema {
		return m, sum, fmt.Errorf("archive is inconsistent: manifest says schema %d, %s says %d", m.Schema, store.MetaFile, info.Schema)
	}
	return m, sum, nil
}

// entryPath validates an archive entry name and returns it relative to
// the data directory.
func entryPath(name string) (string, error) {
	rel, ok := strings.CutPrefix(name, dataPrefix)
	rel = strings.TrimSuffix(rel, "/")
	if !ok || rel == "" || path.Clean(rel) != rel || !filepath.IsLocal(filepath.FromSlash(rel)) {
		return "", fmt.Errorf("archive entry %q is outside %s", name, dataPrefix)
	}
	if rel == store.LockFile {
		return "", fmt.Errorf("archive entry %q: a lock file is never exported", name)
	}
	return rel, nil
}

// writeEntry writes size bytes from r to a new file at target and makes
// it durable.
func writeEntry(target string, r io.Reader, size int64) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return errors.New("the archive holds this file twice")
		}
		return err
	}
	n, err := copySparse(f, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("archive ends after %d of %d bytes", n, size)
	}
	if err == nil {
		err = f.Truncate(size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copySparse copies r to f, seeking over blocks of zeros instead of
// writing them, so block devices (sparse when exported) stay sparse; the
// caller truncates f to its full size afterwards.
func copySparse(f *os.File, r io.Reader) (int64, error) {
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := io.ReadFull(r, buf)
		if k > 0 {
			chunk := buf[:k]
			if allZero(chunk) {
				if _, serr := f.Seek(int64(k), io.SeekCurrent); serr != nil {
					return n, serr
				}
			} else if _, werr := f.Write(chunk); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
