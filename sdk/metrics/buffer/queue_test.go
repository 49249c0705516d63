package buffer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// drops records what a queue reports to OnDrop.
type drops struct {
	mu      sync.Mutex
	reasons []error
}

func (d *drops) add(_ int64, reason error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reasons = append(d.reasons, reason)
}

func (d *drops) count(kind error) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, r := range d.reasons {
		if errors.Is(r, kind) {
			n++
		}
	}
	return n
}

func open(t *testing.T, opts QueueOptions) *Queue {
	t.Helper()
	q, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func batchAt(ns int64) *pluginv1.Batch {
	b := sdktest.SampleBatch(time.Unix(0, ns))
	return b
}

// popAll delivers the whole queue and returns the batch times in order.
func popAll(t *testing.T, q *Queue) []int64 {
	t.Helper()
	var out []int64
	for {
		it, err := q.Peek()
		if err != nil {
			t.Fatalf("Peek: %v", err)
		}
		if it == nil {
			return out
		}
		out = append(out, it.Batch.GetTimeNs())
		if err := q.Remove(it.Seq); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestQueueOrderAndPersistence: batches come out in the order they went
// in, and a queue reopened (a plugin restarted) has the same batches, in
// the same order, and numbers new ones after them.
func TestQueueOrderAndPersistence(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "buffer")
	now := time.Now()
	q, err := Open(QueueOptions{Dir: dir, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var want []int64
	for i := range 12 {
		ns := now.Add(time.Duration(i) * time.Second).UnixNano()
		want = append(want, ns)
		if err := q.Push(batchAt(ns)); err != nil {
			t.Fatal(err)
		}
	}
	st := q.Stats()
	if st.Batches != 12 || st.Bytes != 12*4096 || !st.Oldest.Equal(time.Unix(0, want[0])) {
		t.Fatalf("stats %+v", st)
	}
	// A file of a sample batch fits one 4 KiB block.
	files, _ := filepath.Glob(filepath.Join(dir, "*.batch"))
	fi, _ := os.Stat(files[0])
	t.Logf("a sample batch (2 VMs) takes %d bytes in its file, counted as %d", fi.Size(), blocks(int(fi.Size())))
	// Deliver two, then "crash": the rest survive.
	got := []int64{}
	for range 2 {
		it, _ := q.Peek()
		got = append(got, it.Batch.GetTimeNs())
		q.Remove(it.Seq)
	}
	q.Close()

	q2 := open(t, QueueOptions{Dir: dir, MaxBytes: 1 << 20})
	if q2.Len() != 10 {
		t.Fatalf("reopened queue holds %d batches, want 10", q2.Len())
	}
	extra := now.Add(time.Minute).UnixNano()
	want = append(want, extra)
	if err := q2.Push(batchAt(extra)); err != nil {
		t.Fatal(err)
	}
	got = append(got, popAll(t, q2)...)
	if !equal(got, want) {
		t.Fatalf("order across reopen:\n got %v\nwant %v", got, want)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.batch")); len(left) != 0 {
		t.Fatalf("files left after delivering everything: %v", left)
	}
	// The delivered batch is the one that went in, field for field.
	b := batchAt(extra)
	q2.Push(b)
	it, _ := q2.Peek()
	if it.Batch.GetVms()[0].GetRssBytes() != b.GetVms()[0].GetRssBytes() || it.Batch.GetSink().GetQueuedBytes() != b.GetSink().GetQueuedBytes() {
		t.Fatalf("batch changed on disk: %v", it.Batch)
	}
}

// TestQueueSizeBound: a full queue drops its oldest batches for new ones,
// counts them, and stays within the bound; a batch larger than the whole
// bound is dropped itself.
func TestQueueSizeBound(t *testing.T) {
	for _, dir := range []string{t.TempDir(), ""} {
		var d drops
		q := open(t, QueueOptions{Dir: dir, MaxBytes: 5 * 4096, OnDrop: d.add})
		start := time.Now().UnixNano()
		for i := range 8 {
			if err := q.Push(batchAt(start + int64(i))); err != nil {
				t.Fatal(err)
			}
		}
		st := q.Stats()
		if dir != "" && (st.Batches != 5 || st.Bytes != 5*4096) {
			t.Fatalf("on disk: %+v; want 5 batches in 5 blocks", st)
		}
		if st.Bytes > 5*4096 || st.Dropped != uint64(8-st.Batches) || d.count(ErrFull) != 8-st.Batches {
			t.Fatalf("dir %q: stats %+v, %d full drops", dir, st, d.count(ErrFull))
		}
		got := popAll(t, q)
		if got[len(got)-1] != start+7 || got[0] != start+int64(8-len(got)) {
			t.Fatalf("dir %q: kept %v; want the newest", dir, got)
		}
		big := batchAt(start + 100)
		for len(big.Vms) < 200 {
			big.Vms = append(big.Vms, big.Vms[0])
		}
		before := q.Stats().Dropped
		if err := q.Push(big); err != nil || q.Len() != 0 || q.Stats().Dropped != before+1 {
			t.Fatalf("dir %q: oversized batch: %v, %d queued, %d dropped", dir, err, q.Len(), q.Stats().Dropped)
		}
	}
}

// TestQueueAgeBound: batches older than the age bound are dropped on
// push, on peek and when a queue is reopened.
func TestQueueAgeBound(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	clock := func() time.Time { return now }
	var d drops
	q, err := Open(QueueOptions{Dir: dir, MaxBytes: 1 << 20, MaxAge: time.Hour, Now: clock, OnDrop: d.add})
	if err != nil {
		t.Fatal(err)
	}
	q.Push(batchAt(now.Add(-2 * time.Hour).UnixNano()))
	for i := range 3 {
		q.Push(batchAt(now.Add(time.Duration(i-50) * time.Minute).UnixNano()))
	}
	if q.Len() != 3 || d.count(ErrExpired) != 1 {
		t.Fatalf("%d queued, %d expired; want 3 and 1", q.Len(), d.count(ErrExpired))
	}
	now = now.Add(11 * time.Minute) // the first of the three is 61 minutes old
	it, _ := q.Peek()
	if it.Batch.GetTimeNs() != now.Add(-60*time.Minute).UnixNano() || d.count(ErrExpired) != 2 {
		t.Fatalf("head %v after expiry, %d expired", time.Unix(0, it.Batch.GetTimeNs()), d.count(ErrExpired))
	}
	q.Close()
	now = now.Add(5 * time.Minute)
	q2 := open(t, QueueOptions{Dir: dir, MaxBytes: 1 << 20, MaxAge: time.Hour, Now: clock, OnDrop: d.add})
	if q2.Len() != 0 || d.count(ErrExpired) != 4 {
		t.Fatalf("reopened: %d queued, %d expired; want 0 and 4", q2.Len(), d.count(ErrExpired))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.batch")); len(left) != 0 {
		t.Fatalf("expired files left: %v", left)
	}
}

// TestQueueCorruptFiles: truncated files, flipped bits, an undecodable
// payload and a batch file that vanished are dropped and counted, without
// losing the good batches around them; leftovers of an interrupted write
// are deleted and files that are not the queue's are left alone.
func TestQueueCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(QueueOptions{Dir: dir, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().UnixNano()
	for i := range 6 {
		q.Push(batchAt(base + int64(i)))
	}
	q.Close()
	path := func(seq uint64) string { return filepath.Join(dir, fileName(seq)) }
	// 1: truncated inside the header; 2: one bit flipped in the payload;
	// 4: a valid checksum over bytes that are no Batch.
	raw, _ := os.ReadFile(path(1))
	os.WriteFile(path(1), raw[:10], 0o600)
	raw, _ = os.ReadFile(path(2))
	raw[len(raw)-3] ^= 0x10
	os.WriteFile(path(2), raw, 0o600)
	os.WriteFile(path(4), encodeFile(base+3, []byte{0xff, 0xff, 0xff}), 0o600)
	os.WriteFile(path(7)+tmpSuffix, []byte("half a batch"), 0o600)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600)

	var d drops
	q2 := open(t, QueueOptions{Dir: dir, MaxBytes: 1 << 20, OnDrop: d.add})
	if d.count(ErrCorrupt) != 2 || q2.Len() != 4 {
		t.Fatalf("after open: %d corrupt, %d queued; want 2 and 4", d.count(ErrCorrupt), q2.Len())
	}
	// Damage found only when the batch is read: 5 vanishes.
	os.Remove(path(5))
	got := popAll(t, q2)
	if want := []int64{base + 2, base + 5}; !equal(got, want) {
		t.Fatalf("delivered %v; want %v", got, want)
	}
	if d.count(ErrCorrupt) != 4 || q2.Stats().Dropped != 4 {
		t.Fatalf("%d corrupt drops counted, %d in stats; want 4", d.count(ErrCorrupt), q2.Stats().Dropped)
	}
	if _, err := os.Stat(path(7) + tmpSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover temporary file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "notes.txt")); err != nil {
		t.Fatalf("a file that is not the queue's was touched: %v", err)
	}
	// New batches are numbered after every batch file seen.
	q2.Push(batchAt(base + 10))
	if _, err := os.Stat(path(7)); err != nil {
		t.Fatalf("next batch file: %v", err)
	}
}

// TestQueueExclusive: a second process (here, a second Open) cannot share
// the directory; it can once the first closes.
func TestQueueExclusive(t *testing.T) {
	dir := t.TempDir()
	q := open(t, QueueOptions{Dir: dir, MaxBytes: 1 << 20})
	if _, err := Open(QueueOptions{Dir: dir, MaxBytes: 1 << 20}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open = %v; want in use", err)
	}
	q.Close()
	open(t, QueueOptions{Dir: dir, MaxBytes: 1 << 20})
	if _, err := Open(QueueOptions{Dir: dir}); err == nil {
		t.Fatal("Open without a size bound succeeded")
	}
}

// TestQueueRemoveAfterDrop: a batch dropped for room while it was being
// delivered is not confused with another when its delivery ends.
func TestQueueRemoveAfterDrop(t *testing.T) {
	q := open(t, QueueOptions{Dir: t.TempDir(), MaxBytes: 2 * 4096})
	base := time.Now().UnixNano()
	q.Push(batchAt(base))
	q.Push(batchAt(base + 1))
	head, _ := q.Peek()
	q.Push(batchAt(base + 2)) // drops the head
	if err := q.Remove(head.Seq); err != nil {
		t.Fatal(err)
	}
	if got := popAll(t, q); !equal(got, []int64{base + 1, base + 2}) {
		t.Fatalf("left %v", got)
	}
	q.Push(batchAt(base + 3))
	it, _ := q.Peek()
	if err := q.Drop(it.Seq, errors.New("refused")); err != nil || q.Len() != 0 || q.Stats().Dropped != 2 {
		t.Fatalf("Drop: %v, %d left, %d dropped", err, q.Len(), q.Stats().Dropped)
	}
}
