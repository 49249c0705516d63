package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Info is what a data directory's meta.json says about it. Tools that
// read a directory without opening it (petrel state inspect and export)
// use it to find their way around every schema version, old ones
// included, without migrating anything.
type Info struct {
	// Schema is the directory's schema version.
	Schema int
	// CreatedAt is when the directory was first initialised.
	CreatedAt time.Time
	// InstanceID is the directory's instance id (Store.InstanceID);
	// empty for a directory no petreld has opened since instance ids.
	InstanceID string
}

// ReadInfo reads dir's meta.json. It fails with an error wrapping
// fs.ErrNotExist when dir is not a data directory.
func ReadInfo(dir string) (Info, error) {
	s := &Store{dir: filepath.Clean(dir)}
	m, err := s.readMeta()
	if err != nil {
		return Info{}, fmt.Errorf("%s is not a petrel data directory: %w", dir, err)
	}
	if m.Schema < 0 {
		return Info{}, fmt.Errorf("%s: invalid schema version %d in %s", dir, m.Schema, metaFile)
	}
	return Info(m), nil
}

// ImagesDir returns the directory that holds dir's images under the
// given schema version: images/ up to schema 1, images/sha256/ since.
func ImagesDir(dir string, schema int) string {
	if schema < 2 {
		return filepath.Join(dir, imagesDir)
	}
	return filepath.Join(dir, imagesDir, imageAlgoDir)
}

// IsImageName reports whether name is an image file name: a lowercase
// hex SHA-256 digest.
func IsImageName(name string) bool { return validSHA(name) }

// IsCollection reports whether name can be a collection of records, so
// that tools walking a data directory can tell collections from the
// store's own subdirectories and petreld's block directory.
func IsCollection(name string) bool { return checkCollection(name) == nil }

// IsTemporary reports whether name is a file a crash may leave behind and
// the next Open deletes.
func IsTemporary(name string) bool { return strings.HasSuffix(name, tmpSuffix) }

// Well-known entries of a data directory, for tools that copy one.
const (
	// LockFile is the lock's file name; it is never copied.
	LockFile = lockFile
	// MetaFile is meta.json.
	MetaFile = metaFile
	// QuarantineDir holds records moved aside.
	QuarantineDir = quarantineDir
	// BlockDir is petreld's block device directory, beside the store.
	BlockDir = blockDir
	// PluginsDir holds each plugin's state directory (PluginsDir/NAME),
	// such as a metrics sink's buffer: data about this host's plugins and
	// their destinations, not state to move with the VMs.
	PluginsDir = pluginsDir
	// RecordSuffix ends every record's file name.
	RecordSuffix = recordSuffix
)

// LockHolder reports whether a process holds dir's lock and, if the lock
// file says, its pid. It does not create or change anything, so it is
// safe to call on a directory petreld is using.
func LockHolder(dir string) (held bool, pid int, err error) {
	f, err := os.Open(filepath.Join(dir, lockFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("check lock of %s: %w", dir, err)
	}
	defer f.Close()
	if err := flock(f); err != nil {
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return false, 0, fmt.Errorf("check lock of %s: %w", dir, err)
		}
		held = true
	}
	if b, rerr := os.ReadFile(filepath.Join(dir, lockFile)); rerr == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	return held, pid, nil
}

// Lock takes dir's lock without opening the store: nothing is migrated
// or cleaned, so a reader sees the directory exactly as it is while no
// petreld can change it. The returned function releases the lock. It
// fails if dir is not a data directory or the lock is held.
func Lock(dir string) (unlock func() error, err error) {
	if _, err := ReadInfo(dir); err != nil {
		return nil, err
	}
	f, err := acquireLock(filepath.Clean(dir))
	if err != nil {
		return nil, err
	}
	return f.Close, nil
}
