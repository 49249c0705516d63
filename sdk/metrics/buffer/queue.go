// Package buffer keeps the batches a metrics sink's destination cannot
// take now, in order, bounded by size and age, and on disk, so that an
// outage of the destination, or a restart of the plugin, of petreld or
// of the host during one, costs no data: the batches are delivered, oldest
// first, once the destination is back. Only what exceeds the bounds is
// lost, and it is counted.
//
// Queue is the store; Wrap turns any metrics.Sink whose Write delivers
// synchronously into one that buffers, with the settings buffer_mb and
// buffer_max_age, so that third-party sinks get the same behaviour as
// Petrel's own by wrapping theirs in main:
//
//	func main() { plugin.ServeMetrics(buffer.Wrap(newSink(), buffer.Options{})) }
//
// # On disk
//
// A queue lives in a directory of its own (a sink's is
// STATE_DIR/buffer, under the state directory petreld gives each plugin:
// <data_dir>/plugins/NAME). Each batch is one file, NNN.batch, numbered
// in arrival order (20 decimal digits), holding
//
//	magic   8 bytes, "PTRLBQ1\n"
//	crc     4 bytes, CRC-32C (Castagnoli) of everything after it, big-endian
//	time    8 bytes, the batch's collection time in unix nanoseconds, big-endian
//	batch   the protobuf encoding of the petrel.plugin.v1.Batch
//
// and is written to NNN.batch.tmp, fsynced, renamed into place and made
// durable by an fsync of the directory before Push returns. A file that
// is truncated, fails its checksum or does not decode is deleted and
// counted as dropped; leftover .tmp files (a crash while writing) are
// deleted when the queue opens. A lock file (flock) keeps two processes
// from sharing the directory. Sizes are counted in 4 KiB blocks per file,
// the space most filesystems allocate for it, so that the size bound is a
// bound on disk use.
package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Reasons a batch is dropped, passed to QueueOptions.OnDrop (wrapped with
// details) so that a caller can count and report them by kind.
var (
	// ErrFull marks a batch dropped because keeping it would exceed the
	// queue's size bound: the oldest batches go first, so the newest data
	// survives a long outage.
	ErrFull = errors.New("buffer full")
	// ErrExpired marks a batch older than the queue's age bound: data
	// that old is seldom worth replaying, and the bound keeps a queue
	// from delivering yesterday's figures for hours after an outage.
	ErrExpired = errors.New("batch too old")
	// ErrCorrupt marks a file that is truncated, fails its checksum or
	// does not decode, found when the queue opens or reads it.
	ErrCorrupt = errors.New("corrupt batch file")
)

const (
	magic      = "PTRLBQ1\n"
	headerSize = len(magic) + 4 + 8
	fileSuffix = ".batch"
	tmpSuffix  = ".tmp"
	lockName   = "lock"
	// blockSize is the allocation unit sizes are rounded up to.
	blockSize = 4096
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// QueueOptions configure a Queue.
type QueueOptions struct {
	// Dir holds the queue's files; it is created (mode 0700) if missing.
	// Empty keeps batches in memory only: they survive an outage of the
	// destination, not a restart of the process.
	Dir string
	// MaxBytes bounds the queue's size: on disk, each batch's file in
	// whole 4 KiB blocks; in memory, its encoded size. A batch that
	// would take the queue past it makes room by dropping the oldest.
	// It must be positive.
	MaxBytes int64
	// MaxAge bounds how old, by collection time, a queued batch may be
	// before it is dropped. Zero keeps batches however old.
	MaxAge time.Duration
	// OnDrop, if set, is told about each batch dropped (its collection
	// time and why: an error wrapping ErrFull, ErrExpired or ErrCorrupt).
	// It runs with the queue's lock held and must not call the queue.
	OnDrop func(timeNs int64, reason error)
	// Now tells the time, for the age bound; nil means time.Now.
	Now func() time.Time
}

// Queue is a bounded FIFO of batches, on disk unless QueueOptions.Dir is
// empty. It is safe for concurrent use. Only the index (sequence,
// collection time, size) of each batch stays in memory when it is on
// disk, so a full queue costs disk, not the plugin's memory.
type Queue struct {
	opts QueueOptions
	lock *os.File // nil in memory

	mu      sync.Mutex
	entries []entry
	bytes   int64
	next    uint64
	dropped uint64
	closed  bool
}

// entry is one queued batch.
type entry struct {
	seq    uint64
	timeNs int64
	size   int64  // counted against MaxBytes
	data   []byte // the file's contents; only in memory
}

// Item is the batch at the head of a queue, with the sequence number that
// Remove needs to take it out once delivered.
type Item struct {
	Seq   uint64
	Batch *pluginv1.Batch
}

// Open opens the queue in opts.Dir, taking over the batches a previous
// process left there, in order. Corrupt files are deleted and reported to
// OnDrop; so are batches beyond the bounds. It fails when another process
// holds the directory.
func Open(opts QueueOptions) (*Queue, error) {
	if opts.MaxBytes <= 0 {
		return nil, fmt.Errorf("buffer: size bound %d is not positive", opts.MaxBytes)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	q := &Queue{opts: opts, next: 1}
	if opts.Dir == "" {
		return q, nil
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("buffer: create %s: %w", opts.Dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(opts.Dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("buffer: open lock in %s: %w", opts.Dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("buffer: %s is in use by another process: %w", opts.Dir, err)
	}
	q.lock = lock
	if err := q.load(); err != nil {
		q.Close()
		return nil, err
	}
	q.mu.Lock()
	q.enforce(0)
	q.mu.Unlock()
	return q, nil
}

// load indexes the files in the directory, deleting leftovers and corrupt
// files.
func (q *Queue) load() error {
	des, err := os.ReadDir(q.opts.Dir)
	if err != nil {
		return fmt.Errorf("buffer: read %s: %w", q.opts.Dir, err)
	}
	for _, de := range des {
		name := de.Name()
		path := filepath.Join(q.opts.Dir, name)
		if strings.HasSuffix(name, fileSuffix+tmpSuffix) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("buffer: remove leftover %s: %w", path, err)
			}
			continue
		}
		seq, ok := parseName(name)
		if !ok || !de.Type().IsRegular() {
			continue
		}
		q.next = max(q.next, seq+1)
		raw, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("buffer: read %s: %w", path, err)
		}
		timeNs, _, err := decodeFile(raw)
		if err != nil {
			q.discard(path, 0, fmt.Errorf("%s: %w", path, err))
			continue
		}
		q.entries = append(q.entries, entry{seq: seq, timeNs: timeNs, size: blocks(len(raw))})
		q.bytes += blocks(len(raw))
	}
	sort.Slice(q.entries, func(i, j int) bool { return q.entries[i].seq < q.entries[j].seq })
	return nil
}

// Push appends b. To stay within the bounds it first drops expired
// batches and then, oldest first, as many as the new one needs room; a
// batch larger than the whole bound is itself dropped. On disk, the batch
// is durable when Push returns nil.
func (q *Queue) Push(b *pluginv1.Batch) error {
	payload, err := proto.Marshal(b)
	if err != nil {
		return fmt.Errorf("buffer: encode batch: %w", err)
	}
	raw := encodeFile(b.GetTimeNs(), payload)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("buffer: push: queue closed")
	}
	size := int64(len(raw))
	if q.lock != nil {
		size = blocks(len(raw))
	}
	if size > q.opts.MaxBytes {
		q.drop(b.GetTimeNs(), fmt.Errorf("%w: a batch of %d bytes exceeds the whole bound of %d bytes", ErrFull, size, q.opts.MaxBytes))
		return nil
	}
	if q.expired(b.GetTimeNs()) {
		q.drop(b.GetTimeNs(), fmt.Errorf("%w: collected %s ago, the bound is %s", ErrExpired, q.age(b.GetTimeNs()), q.opts.MaxAge))
		return nil
	}
	q.enforce(size)
	e := entry{seq: q.next, timeNs: b.GetTimeNs(), size: size}
	if q.lock == nil {
		e.data = raw
	} else if err := q.write(e.seq, raw); err != nil {
		return err
	}
	q.next++
	q.entries = append(q.entries, e)
	q.bytes += size
	return nil
}

// write stores one file durably.
func (q *Queue) write(seq uint64, raw []byte) error {
	path := filepath.Join(q.opts.Dir, fileName(seq))
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("buffer: create %s: %w", tmp, err)
	}
	_, err = f.Write(raw)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("buffer: write %s: %w", path, err)
	}
	if d, err := os.Open(q.opts.Dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("buffer: sync %s: %w", q.opts.Dir, err)
		}
	}
	return nil
}

// Peek returns the oldest batch, or nil when the queue is empty. Batches
// that have expired or cannot be read are dropped on the way. An error
// means the directory could not be read at all; the queue is unchanged.
func (q *Queue) Peek() (*Item, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.enforce(0)
	for len(q.entries) > 0 {
		e := q.entries[0]
		raw := e.data
		if q.lock != nil {
			var err error
			path := filepath.Join(q.opts.Dir, fileName(e.seq))
			if raw, err = os.ReadFile(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("buffer: read %s: %w", path, err)
			} else if err != nil {
				q.removeHead(fmt.Errorf("%w: %s vanished", ErrCorrupt, path))
				continue
			}
		}
		_, payload, err := decodeFile(raw)
		var b pluginv1.Batch
		if err == nil {
			if perr := proto.Unmarshal(payload, &b); perr != nil {
				err = fmt.Errorf("%w: %v", ErrCorrupt, perr)
			}
		}
		if err != nil {
			q.removeHead(fmt.Errorf("batch %d: %w", e.seq, err))
			continue
		}
		return &Item{Seq: e.seq, Batch: &b}, nil
	}
	return nil, nil
}

// Remove takes the batch with sequence seq out of the queue, after its
// delivery. It does nothing when the batch is gone already (dropped for
// room while it was being delivered).
func (q *Queue) Remove(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, e := range q.entries {
		if e.seq != seq {
			continue
		}
		q.entries = append(q.entries[:i], q.entries[i+1:]...)
		q.bytes -= e.size
		return q.unlink(e.seq)
	}
	return nil
}

// Drop removes the batch with sequence seq and counts it as dropped for
// reason: what a sink does with a batch its destination refuses for good.
func (q *Queue) Drop(seq uint64, reason error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, e := range q.entries {
		if e.seq != seq {
			continue
		}
		q.entries = append(q.entries[:i], q.entries[i+1:]...)
		q.bytes -= e.size
		q.drop(e.timeNs, reason)
		return q.unlink(e.seq)
	}
	return nil
}

// Stats is a queue's content and what it has lost.
type Stats struct {
	// Batches and Bytes are what the queue holds now (Bytes as counted
	// against the size bound).
	Batches int
	Bytes   int64
	// Dropped counts the batches dropped since the queue was opened.
	Dropped uint64
	// Oldest is the collection time of the oldest batch held, zero when
	// the queue is empty.
	Oldest time.Time
	// MaxBytes and MaxAge are the bounds in force.
	MaxBytes int64
	MaxAge   time.Duration
}

// Stats reports the queue's content and bounds.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := Stats{Batches: len(q.entries), Bytes: q.bytes, Dropped: q.dropped, MaxBytes: q.opts.MaxBytes, MaxAge: q.opts.MaxAge}
	if len(q.entries) > 0 {
		s.Oldest = time.Unix(0, q.entries[0].timeNs)
	}
	return s
}

// Len reports how many batches the queue holds.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.entries)
}

// Dir is the queue's directory, empty in memory.
func (q *Queue) Dir() string { return q.opts.Dir }

// SetBounds changes the size and age bounds, dropping what no longer
// fits at once. A non-positive maxBytes is ignored.
func (q *Queue) SetBounds(maxBytes int64, maxAge time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if maxBytes > 0 {
		q.opts.MaxBytes = maxBytes
	}
	q.opts.MaxAge = maxAge
	q.enforce(0)
}

// Close releases the directory; the batches stay in it for the next Open.
// A queue in memory loses its batches. Close is idempotent.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	q.entries, q.bytes = nil, 0
	if q.lock == nil {
		return nil
	}
	err := q.lock.Close()
	q.lock = nil
	if err != nil {
		return fmt.Errorf("buffer: release %s: %w", q.opts.Dir, err)
	}
	return nil
}

// enforce drops expired batches, then the oldest until room more bytes
// fit. Called with mu held.
func (q *Queue) enforce(room int64) {
	for len(q.entries) > 0 && q.expired(q.entries[0].timeNs) {
		e := q.entries[0]
		q.removeHead(fmt.Errorf("%w: collected %s ago, the bound is %s", ErrExpired, q.age(e.timeNs), q.opts.MaxAge))
	}
	for len(q.entries) > 0 && q.bytes+room > q.opts.MaxBytes {
		q.removeHead(fmt.Errorf("%w: %d batches take %d bytes, the bound is %d", ErrFull, len(q.entries), q.bytes, q.opts.MaxBytes))
	}
}

// removeHead drops the oldest batch for reason. Called with mu held.
func (q *Queue) removeHead(reason error) {
	e := q.entries[0]
	q.entries = q.entries[1:]
	q.bytes -= e.size
	q.drop(e.timeNs, reason)
	// A file that cannot be removed is found again, and dropped again,
	// by the next Open: nothing is delivered twice meanwhile.
	q.unlink(e.seq)
}

// discard deletes a file that never made it into the index.
func (q *Queue) discard(path string, timeNs int64, reason error) {
	os.Remove(path)
	q.drop(timeNs, reason)
}

// drop counts a dropped batch. Called with mu held.
func (q *Queue) drop(timeNs int64, reason error) {
	q.dropped++
	if q.opts.OnDrop != nil {
		q.opts.OnDrop(timeNs, reason)
	}
}

// unlink deletes seq's file. Called with mu held.
func (q *Queue) unlink(seq uint64) error {
	if q.lock == nil {
		return nil
	}
	path := filepath.Join(q.opts.Dir, fileName(seq))
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("buffer: remove %s: %w", path, err)
	}
	return nil
}

func (q *Queue) expired(timeNs int64) bool {
	return q.opts.MaxAge > 0 && q.age(timeNs) > q.opts.MaxAge
}

func (q *Queue) age(timeNs int64) time.Duration {
	return q.opts.Now().Sub(time.Unix(0, timeNs)).Round(time.Millisecond)
}

func fileName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, fileSuffix) }

// parseName returns the sequence number of a batch file's name.
func parseName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, fileSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil
}

// encodeFile lays out a batch file.
func encodeFile(timeNs int64, payload []byte) []byte {
	raw := make([]byte, headerSize+len(payload))
	copy(raw, magic)
	binary.BigEndian.PutUint64(raw[len(magic)+4:], uint64(timeNs))
	copy(raw[headerSize:], payload)
	binary.BigEndian.PutUint32(raw[len(magic):], crc32.Checksum(raw[len(magic)+4:], castagnoli))
	return raw
}

// decodeFile checks a batch file and returns its collection time and
// payload.
func decodeFile(raw []byte) (int64, []byte, error) {
	if len(raw) < headerSize || !bytes.Equal(raw[:len(magic)], []byte(magic)) {
		return 0, nil, fmt.Errorf("%w: %d bytes without the header", ErrCorrupt, len(raw))
	}
	if got, want := crc32.Checksum(raw[len(magic)+4:], castagnoli), binary.BigEndian.Uint32(raw[len(magic):]); got != want {
		return 0, nil, fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	return int64(binary.BigEndian.Uint64(raw[len(magic)+4:])), raw[headerSize:], nil
}

// blocks rounds a file size up to whole allocation blocks.
func blocks(n int) int64 { return (int64(n) + blockSize - 1) / blockSize * blockSize }
