package statedump

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/petrel-vmm/petrel/core/store"
)

// ImportOptions adjust Import.
type ImportOptions struct {
	// Progress, if set, is called with the number of archive bytes read
	// so far, which the caller can compare with the archive's size.
	Progress func(done int64)
	// NewIdentity gives the imported directory an instance id of its own.
	// Without it the import keeps the exported directory's: it is the
	// same petreld instance, restored or moved, and owns the taps and the
	// runtime directory of the VMs it recorded. A copy that is to run
	// beside its original on the same host needs an identity of its own.
	NewIdentity bool
}

// Import unpacks the export read from r into the data directory dir,
// which must not exist, be empty, or hold a store with no state in it (as
// petreld leaves on a host where nothing was deployed yet). The archive
// is unpacked and migrated to the current schema in a new directory
// beside dir, and only moved into place once complete, so an interrupted
// or refused import leaves dir as it was.
func Import(r io.Reader, dir string, opts ImportOptions) (Summary, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Summary{}, fmt.Errorf("import: %w", err)
	}
	dir = abs
	replace, err := checkTarget(dir)
	if err != nil {
		return Summary{}, err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return Summary{}, fmt.Errorf("import: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".import-*")
	if err != nil {
		return Summary{}, fmt.Errorf("import: %w", err)
	}
	placed := false
	defer func() {
		if !placed {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o700); err != nil {
		return Summary{}, fmt.Errorf("import: %w", err)
	}
	if opts.Progress != nil {
		var done int64
		r = &countingReader{r: r, fn: func(n int64) { done += n; opts.Progress(done) }}
	}
	_, sum, err := extract(r, tmp)
	if err != nil {
		return sum, fmt.Errorf("import: %w", err)
	}
	if err := syncTree(tmp); err != nil {
		return sum, fmt.Errorf("import: %w", err)
	}
	// Opening the store runs the migrations from the archive's schema.
	open := store.Open
	if opts.NewIdentity {
		open = store.OpenNewInstance
	}
	s, err := open(tmp)
	if err != nil {
		return sum, fmt.Errorf("import: %w", err)
	}
	if err := s.Close(); err != nil {
		return sum, fmt.Errorf("import: %w", err)
	}
	sum.Schema = store.SchemaVersion
	rep, err := InspectDir(tmp, true)
	if err != nil {
		return sum, fmt.Errorf("import: inspect the imported state: %w", err)
	}
	// A damaged image would boot something else than the VM's record
	// names: the archive is refused, not imported with a warning.
	for _, img := range rep.Images {
		if img.Damaged {
			return sum, fmt.Errorf("import: image %s is damaged in the archive", img.SHA256)
		}
	}
	sum.Problems = rep.Problems

	if err := place(tmp, dir, replace); err != nil {
		return sum, fmt.Errorf("import: %w", err)
	}
	placed = true
	return sum, nil
}

// checkTarget makes sure importing into dir loses nothing, and says
// whether an existing (empty) directory must be replaced.
func checkTarget(dir string) (replace bool, err error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("import: %w", err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("import: %s exists and is not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("import: %w", err)
	}
	if len(entries) == 0 {
		return true, nil
	}
	if held, pid, _ := store.LockHolder(dir); held {
		return false, fmt.Errorf("import: %s is in use by petreld (pid %d): stop it first", dir, pid)
	}
	rep, err := InspectDir(dir, false)
	if err != nil {
		return false, fmt.Errorf("import: %s is not empty and not a petrel data directory (%v); import into a new directory", dir, err)
	}
	if n := rep.stateCount(); n > 0 {
		return false, fmt.Errorf("import: %s already holds petreld state (%d VMs, %d policies, %d images, %d block devices); move it aside or import into a new directory", dir,
			len(rep.VMs), len(rep.Policies), len(rep.Images), len(rep.Blocks))
	}
	return true, nil
}

// place moves the finished import to dir. An existing empty directory
// is moved aside first and removed once the import is in place.
func place(tmp, dir string, replace bool) error {
	var aside string
	if replace {
		aside = tmp + ".old"
		if err := os.Rename(dir, aside); err != nil {
			return fmt.Errorf("move %s aside: %w", dir, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if aside != "" {
			if rerr := os.Rename(aside, dir); rerr != nil {
				return fmt.Errorf("move %s into place: %w (and restoring %s from %s failed: %v)", tmp, err, dir, aside, rerr)
			}
		}
		return fmt.Errorf("move %s into place: %w", tmp, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	if aside != "" {
		if err := os.RemoveAll(aside); err != nil {
			return fmt.Errorf("remove the replaced empty directory %s: %w", aside, err)
		}
	}
	return nil
}

// syncTree fsyncs every directory under root, so the entries of the
// files extract has already synced are durable too.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return syncDir(p)
		}
		return nil
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
