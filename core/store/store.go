// Package store is petreld's crash-safe state store on a local
// filesystem. Every call that returns nil has reached stable storage, so an
// acknowledged change survives kill -9 (and power loss, on filesystems that
// honour fsync) at any instant, and a crash at any instant leaves each
// record either at its old or at its new value, never torn.
//
// The store uses plain files rather than a database so that an operator
// can inspect and repair state with ordinary tools, and so that petreld
// has no storage dependency beyond the kernel.
//
// # Schema versions
//
// Schema 1 kept images directly in DIR/images/<sha256hex>. Schema 2 moved
// them to DIR/images/sha256/; Open migrates a schema 1 directory in place.
// Every earlier schema has a fixture under testdata/ that the tests
// migrate.
//
// # On-disk layout
//
//	DIR/                      0700, created by Open
//	DIR/meta.json             {"schema":2,"created_at":"2006-01-02T15:04:05Z"}
//	DIR/lock                  flock(2)ed by the open Store; holds its pid
//	DIR/<collection>/<key>.json
//	                          one JSON document per key, 0600
//	DIR/images/sha256/<hex>   unikernel images, named by the SHA-256 of
//	                          their content, 0600; the directory names
//	                          the digest algorithm so that another one can
//	                          sit beside it, and uploads in progress
//	                          (DIR/images/*.tmp) never share a directory
//	                          with finished images
//	DIR/quarantine/<collection>/<key>.json
//	                          records moved aside because they could not be
//	                          used; a later quarantine of the same key
//	                          replaces the earlier copy
//	*.tmp                     files being written; a crash can leave them
//	                          behind and the next Open deletes them
//
// Every write goes to a temporary file in the destination directory, which
// is fsynced, renamed over the destination and followed by an fsync of
// the directory, so the rename itself is durable before the call returns.
//
// Collection names match [a-z0-9_-]+ (at most 64 bytes) and must not be
// "images", "quarantine", "lock", "block" or "plugins" (petreld's block
// devices live in DIR/block, and its plugins' state directories in
// DIR/plugins/NAME, beside the store). Keys are arbitrary file names: not
// empty, not "." or "..", no '/' or NUL, at most MaxKeyLength bytes.
// name.Path.FileKey produces suitable keys for VM and policy names.
package store

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SchemaVersion is the on-disk layout version this code reads and writes.
// It is bumped, with a Migration from the previous version, whenever the
// layout or a record format changes incompatibly.
const SchemaVersion = 2

// MaxKeyLength is the longest key accepted. It is the Linux file name
// limit (255 bytes) minus the ".json" suffix, so any name.Path file key up
// to that length can be stored.
const MaxKeyLength = 250

const (
	metaFile      = "meta.json"
	lockFile      = "lock"
	imagesDir     = "images"
	imageAlgoDir  = "sha256"
	blockDir      = "block"
	pluginsDir    = "plugins"
	quarantineDir = "quarantine"
	recordSuffix  = ".json"
	tmpSuffix     = ".tmp"
	shards        = 64
)

var (
	// ErrNotFound is wrapped by errors for records and images that do not
	// exist, so callers can tell absence from failure with errors.Is.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt is wrapped by errors for records whose file is not valid
	// JSON, so callers can decide to quarantine them.
	ErrCorrupt = errors.New("corrupt record")
	// ErrClosed is returned by operations on a Store after Close, instead
	// of touching a directory that another daemon may now own.
	ErrClosed = errors.New("store is closed")
	// ErrInUse is wrapped by the error of Open (and Lock) when another
	// process holds the data directory.
	ErrInUse = errors.New("in use by another petreld")
)

var collectionRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// Migration upgrades a data directory from schema version From to
// From+1. Open runs the migrations it needs in order, with the lock held,
// and records each completed step in meta.json, so a crash during a
// migration re-runs only that step on the next Open: Apply must therefore
// be idempotent.
type Migration struct {
	From  int
	Apply func(dir string) error
}

// migrations are the built-in upgrades Open applies, one per earlier
// schema version.
var migrations = []Migration{
	{From: 1, Apply: migrateImagesToAlgoDir},
}

// migrateImagesToAlgoDir moves schema 1's images/<sha256hex> files to
// images/sha256/<sha256hex>. Each move is a rename, so an image is always
// in one place or the other; re-running after a crash finishes the moves
// that remain, and an image found in both places (a crash between a
// rename and the directory sync cannot cause that, but a hand-made copy
// can) keeps the copy already in the new place.
func migrateImagesToAlgoDir(dir string) error {
	old := filepath.Join(dir, imagesDir)
	entries, err := os.ReadDir(old)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("move images: %w", err)
	}
	dst := filepath.Join(old, imageAlgoDir)
	if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("move images: %w", err)
	}
	if err := syncDir(old); err != nil {
		return fmt.Errorf("move images: %w", err)
	}
	moved := false
	for _, e := range entries {
		name := e.Name()
		if !validSHA(name) || !e.Type().IsRegular() {
			continue
		}
		from, to := filepath.Join(old, name), filepath.Join(dst, name)
		if _, err := os.Stat(to); err == nil {
			if err := os.Remove(from); err != nil {
				return fmt.Errorf("move images: %w", err)
			}
			continue
		}
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("move images: %w", err)
		}
		moved = true
	}
	if moved {
		if err := syncDir(dst); err != nil {
			return fmt.Errorf("move images: %w", err)
		}
		if err := syncDir(old); err != nil {
			return fmt.Errorf("move images: %w", err)
		}
	}
	return nil
}

// Options adjust OpenWith. The zero value gives the same behaviour as
// Open except that no migrations are available.
type Options struct {
	// Migrations replaces the built-in list; tests use it to exercise
	// upgrades that no released schema needs yet.
	Migrations []Migration
	// NewInstanceID gives the directory a new instance id, making it
	// another instance than the one it was copied from.
	NewInstanceID bool
}

// Store is an open data directory. Its methods are safe for concurrent
// use: writes to the same key are serialized, writes to different keys
// may proceed in parallel.
type Store struct {
	dir  string
	lock *os.File
	// instanceID is the directory's instance id (see InstanceID).
	instanceID string

	// life is held for reading by operations and for writing by Close, so
	// Close waits for in-flight writes and later calls see closed.
	life   sync.RWMutex
	closed bool

	keyLocks [shards]sync.Mutex

	collMu sync.Mutex
	colls  map[string]bool // collection directories known to exist durably
}

type meta struct {
	Schema    int       `json:"schema"`
	CreatedAt time.Time `json:"created_at"`
	// InstanceID is written at the first Open by a petreld that knows it.
	InstanceID string `json:"instance_id,omitempty"`
}

// Open opens or creates the data directory dir with the built-in
// migrations. It fails if another process (or another Store in this
// process) has dir open, if dir was written by a newer petreld, or if dir
// exists, has no meta.json and holds files that are not part of a store,
// so a mistyped path is not taken over.
func Open(dir string) (*Store, error) {
	return OpenWith(dir, Options{Migrations: migrations})
}

// OpenNewInstance is Open for a copy of a data directory that is to run
// beside its original on the same host: the copy gets an instance id of
// its own, so that neither takes the other's taps and runtime directory
// for its own.
func OpenNewInstance(dir string) (*Store, error) {
	return OpenWith(dir, Options{Migrations: migrations, NewInstanceID: true})
}

// OpenWith is Open with explicit options.
func OpenWith(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open store: empty data directory path")
	}
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	lf, err := acquireLock(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, lock: lf, colls: map[string]bool{}}
	if err := s.init(opts); err != nil {
		lf.Close()
		return nil, err
	}
	return s, nil
}

func acquireLock(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := flock(f); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf(" (held by pid %d)", pid)
			}
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("open store: data directory %s is %w%s", dir, ErrInUse, holder)
		}
		return nil, fmt.Errorf("open store: lock %s: %w", path, err)
	}
	// The pid is informational only: the flock is what excludes others.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// init validates or creates meta.json, removes debris from a crash, runs
// migrations and creates the fixed subdirectories. Temporary files are
// only removed once the directory is known to be a store.
func (s *Store) init(opts Options) error {
	m, err := s.readMeta()
	fresh := errors.Is(err, fs.ErrNotExist)
	switch {
	case fresh:
		if err := s.checkFresh(); err != nil {
			return err
		}
		m = meta{Schema: SchemaVersion, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	case err != nil:
		return err
	case m.Schema > SchemaVersion:
		return fmt.Errorf("open store: %s has schema version %d, newer than the %d this petreld supports; upgrade petreld or use another data directory", s.dir, m.Schema, SchemaVersion)
	case m.Schema < 0:
		return fmt.Errorf("open store: %s: invalid schema version %d in %s", s.dir, m.Schema, metaFile)
	}
	if err := s.removeTemps(); err != nil {
		return err
	}
	if fresh {
		if err := s.writeMeta(m); err != nil {
			return err
		}
	}
	for m.Schema < SchemaVersion {
		mig := findMigration(opts.Migrations, m.Schema)
		if mig == nil {
			return fmt.Errorf("open store: %s has schema version %d and no migration to %d is available", s.dir, m.Schema, m.Schema+1)
		}
		if err := mig.Apply(s.dir); err != nil {
			return fmt.Errorf("open store: migrate %s from schema %d to %d: %w", s.dir, m.Schema, m.Schema+1, err)
		}
		m.Schema++
		if err := s.writeMeta(m); err != nil {
			return err
		}
	}
	if m.InstanceID == "" || opts.NewInstanceID {
		// A new directory, one from before instance ids, or a copy.
		if m.InstanceID, err = newInstanceID(); err != nil {
			return err
		}
		if err := s.writeMeta(m); err != nil {
			return err
		}
	}
	s.instanceID = m.InstanceID
	for _, d := range []string{imagesDir, filepath.Join(imagesDir, imageAlgoDir), quarantineDir} {
		if err := s.ensureDir(filepath.Join(s.dir, d)); err != nil {
			return err
		}
	}
	return nil
}

// newInstanceID returns a random instance id: 16 lower-case hex digits.
func newInstanceID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("open store: instance id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// InstanceID identifies the petreld instance this data directory is: a
// random id made at the first Open and kept in meta.json from then on,
// across restarts and upgrades, and carried by exports into the
// directories they are imported to (an import is the same instance,
// moved or restored). petreld marks the host-wide resources it makes with
// it, such as taps and its run directory, so that instances with other
// data directories on the same host leave them alone.
func (s *Store) InstanceID() string { return s.instanceID }

func findMigration(list []Migration, from int) *Migration {
	for i := range list {
		if list[i].From == from && list[i].Apply != nil {
			return &list[i]
		}
	}
	return nil
}

func (s *Store) readMeta() (meta, error) {
	path := filepath.Join(s.dir, metaFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return meta{}, fmt.Errorf("open store: %w", err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return meta{}, fmt.Errorf("open store: %s: %w", path, err)
	}
	return m, nil
}

func (s *Store) writeMeta(m meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("open store: encode %s: %w", metaFile, err)
	}
	if err := writeFileAtomic(s.dir, metaFile, append(b, '\n')); err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	return nil
}

// checkFresh refuses to initialise a directory that already holds
// unrelated files: only the entries a store itself creates before writing
// meta.json may be present.
func (s *Store) checkFresh() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	for _, e := range entries {
		switch n := e.Name(); {
		case n == lockFile, n == imagesDir, n == quarantineDir:
			continue
		case strings.HasPrefix(n, "put-") && strings.HasSuffix(n, tmpSuffix):
			continue // a crash while writing the first meta.json
		}
		return fmt.Errorf("open store: %s has no %s but contains %q; refusing to use a directory that is not a petrel data directory", s.dir, metaFile, e.Name())
	}
	return nil
}

// removeTemps deletes *.tmp files left by a crash in the data directory
// and its immediate subdirectories (collections, images) and in the
// quarantine's collection directories. It runs with the lock held, so no
// writer can own them.
func (s *Store) removeTemps() error {
	dirs := []string{s.dir}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(s.dir, e.Name()))
		}
	}
	if qs, err := os.ReadDir(filepath.Join(s.dir, quarantineDir)); err == nil {
		for _, e := range qs {
			if e.IsDir() {
				dirs = append(dirs, filepath.Join(s.dir, quarantineDir, e.Name()))
			}
		}
	}
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			return fmt.Errorf("open store: clean %s: %w", d, err)
		}
		removed := false
		for _, e := range entries {
			if e.Type().IsRegular() && strings.HasSuffix(e.Name(), tmpSuffix) {
				if err := os.Remove(filepath.Join(d, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("open store: remove stale temporary file: %w", err)
				}
				removed = true
			}
		}
		if removed {
			if err := syncDir(d); err != nil {
				return fmt.Errorf("open store: %w", err)
			}
		}
	}
	return nil
}

// Close releases the data directory lock after waiting for in-flight
// operations. Later calls return ErrClosed; Close is idempotent.
func (s *Store) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.lock.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.dir, err)
	}
	return nil
}

// Dir returns the data directory, for log messages and for tools that
// inspect it.
func (s *Store) Dir() string { return s.dir }

// begin marks the start of an operation; the returned function ends it.
func (s *Store) begin() (func(), error) {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return nil, ErrClosed
	}
	return s.life.RUnlock, nil
}

func (s *Store) keyLock(collection, key string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(collection))
	h.Write([]byte{'/'})
	h.Write([]byte(key))
	return &s.keyLocks[h.Sum32()%shards]
}

func checkCollection(c string) error {
	if !collectionRE.MatchString(c) {
		return fmt.Errorf("invalid collection name %q: want 1-64 characters from [a-z0-9_-]", c)
	}
	switch c {
	case imagesDir, quarantineDir, lockFile, blockDir, pluginsDir:
		return fmt.Errorf("invalid collection name %q: reserved", c)
	}
	return nil
}

func checkKey(k string) error {
	switch {
	case k == "":
		return errors.New("invalid key: empty")
	case k == "." || k == "..":
		return fmt.Errorf("invalid key %q: special directory name", k)
	case len(k) > MaxKeyLength:
		return fmt.Errorf("invalid key %.40q...: %d bytes long, the limit is %d", k, len(k), MaxKeyLength)
	case strings.ContainsAny(k, "/\x00"):
		return fmt.Errorf("invalid key %q: contains '/' or NUL", k)
	}
	return nil
}

func (s *Store) recordPath(collection, key string) (string, error) {
	if err := checkCollection(collection); err != nil {
		return "", err
	}
	if err := checkKey(key); err != nil {
		return "", fmt.Errorf("collection %s: %w", collection, err)
	}
	return filepath.Join(s.dir, collection, key+recordSuffix), nil
}

// ensureDir creates dir (one level) if needed and makes its entry in the
// parent durable, so records written into it cannot vanish with it.
func (s *Store) ensureDir(dir string) error {
	s.collMu.Lock()
	defer s.collMu.Unlock()
	if s.colls[dir] {
		return nil
	}
	err := os.Mkdir(dir, 0o700)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	s.colls[dir] = true
	return nil
}

// Put stores v, encoded as JSON, under key in collection, replacing any
// previous value. When Put returns nil the new value is durable.
func (s *Store) Put(collection, key string, v any) error {
	path, err := s.recordPath(collection, key)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("put %s/%s: encode: %w", collection, key, err)
	}
	end, err := s.begin()
	if err != nil {
		return fmt.Errorf("put %s/%s: %w", collection, key, err)
	}
	defer end()
	dir := filepath.Dir(path)
	if err := s.ensureDir(dir); err != nil {
		return fmt.Errorf("put %s/%s: %w", collection, key, err)
	}
	l := s.keyLock(collection, key)
	l.Lock()
	defer l.Unlock()
	if err := writeFileAtomic(dir, filepath.Base(path), append(b, '\n')); err != nil {
		return fmt.Errorf("put %s/%s: %w", collection, key, err)
	}
	return nil
}

// Get decodes the record under key in collection into v. A missing record
// yields an error wrapping ErrNotFound, a file that is not valid JSON one
// wrapping ErrCorrupt.
func (s *Store) Get(collection, key string, v any) error {
	path, err := s.recordPath(collection, key)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	end, err := s.begin()
	if err != nil {
		return fmt.Errorf("get %s/%s: %w", collection, key, err)
	}
	b, err := readRecord(path)
	end()
	if err != nil {
		return fmt.Errorf("get %s/%s: %w", collection, key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("get %s/%s: decode %s: %w", collection, key, path, err)
	}
	return nil
}

// readRecord reads a record file and checks that it is valid JSON.
func readRecord(path string) (json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("%s: %w: not valid JSON", path, ErrCorrupt)
	}
	return b, nil
}

// Delete removes the record under key in collection. Deleting a missing
// record is not an error, so retries after a crash are harmless. When
// Delete returns nil the removal is durable.
func (s *Store) Delete(collection, key string) error {
	path, err := s.recordPath(collection, key)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	end, err := s.begin()
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", collection, key, err)
	}
	defer end()
	l := s.keyLock(collection, key)
	l.Lock()
	defer l.Unlock()
	err = os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", collection, key, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("delete %s/%s: %w", collection, key, err)
	}
	return nil
}

// List returns the keys in collection, sorted. A collection that was never
// written to is empty, not an error.
func (s *Store) List(collection string) ([]string, error) {
	if err := checkCollection(collection); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	end, err := s.begin()
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	defer end()
	entries, err := os.ReadDir(filepath.Join(s.dir, collection))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", collection, err)
	}
	var keys []string
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, recordSuffix) {
			continue
		}
		key := strings.TrimSuffix(name, recordSuffix)
		if checkKey(key) == nil {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// Walk calls fn for each record in collection in key order. It stops at
// the first error from fn, and at the first record that is not valid JSON
// with an error wrapping ErrCorrupt that names the file. Records deleted
// while Walk runs are skipped. fn may call other Store methods.
func (s *Store) Walk(collection string, fn func(key string, raw json.RawMessage) error) error {
	_, err := s.walk(collection, fn, false)
	return err
}

// WalkQuarantine is Walk for start-up: instead of stopping at a corrupt
// record it moves the file to the quarantine directory and continues, so
// one damaged file cannot keep the daemon from starting. It returns the
// paths of the quarantined files so they can be reported to the operator.
func (s *Store) WalkQuarantine(collection string, fn func(key string, raw json.RawMessage) error) (quarantined []string, err error) {
	return s.walk(collection, fn, true)
}

func (s *Store) walk(collection string, fn func(string, json.RawMessage) error, quarantine bool) ([]string, error) {
	keys, err := s.List(collection)
	if err != nil {
		return nil, fmt.Errorf("walk: %w", err)
	}
	var moved []string
	for _, key := range keys {
		end, err := s.begin()
		if err != nil {
			return moved, fmt.Errorf("walk %s: %w", collection, err)
		}
		raw, err := readRecord(filepath.Join(s.dir, collection, key+recordSuffix))
		end()
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case errors.Is(err, ErrCorrupt) && quarantine:
			dst, qerr := s.Quarantine(collection, key)
			if qerr != nil {
				return moved, fmt.Errorf("walk %s: %w (quarantine failed: %w)", collection, err, qerr)
			}
			if dst != "" {
				moved = append(moved, dst)
			}
			continue
		case err != nil:
			return moved, fmt.Errorf("walk %s: %w", collection, err)
		}
		if err := fn(key, raw); err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// Quarantine moves the record under key in collection to
// DIR/quarantine/<collection>/ and returns its new path, or "" if the
// record does not exist. The daemon uses it for records that parse as
// JSON but cannot be used, keeping the evidence without acting on it.
func (s *Store) Quarantine(collection, key string) (string, error) {
	path, err := s.recordPath(collection, key)
	if err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	end, err := s.begin()
	if err != nil {
		return "", fmt.Errorf("quarantine %s/%s: %w", collection, key, err)
	}
	defer end()
	qdir := filepath.Join(s.dir, quarantineDir, collection)
	if err := s.ensureDir(qdir); err != nil {
		return "", fmt.Errorf("quarantine %s/%s: %w", collection, key, err)
	}
	l := s.keyLock(collection, key)
	l.Lock()
	defer l.Unlock()
	dst := filepath.Join(qdir, filepath.Base(path))
	err = os.Rename(path, dst)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("quarantine %s/%s: %w", collection, key, err)
	}
	if err := syncDir(qdir); err != nil {
		return "", fmt.Errorf("quarantine %s/%s: %w", collection, key, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return "", fmt.Errorf("quarantine %s/%s: %w", collection, key, err)
	}
	return dst, nil
}

// writeFileAtomic replaces dir/name with data so that a crash leaves
// either the old or the new content: write a temporary file in the same
// directory, fsync it, rename it over the target, fsync the directory.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "put-*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	dst := filepath.Join(dir, name)
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, dst, err)
	}
	committed = true
	return syncDir(dir)
}

// syncDir fsyncs a directory so that entries created, renamed or removed
// in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
