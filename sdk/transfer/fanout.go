// Package transfer holds the streaming machinery shared by both ends of
// Petrel's bulk transfers (block device uploads and downloads, image
// uploads): a fan-out that lets reading, hashing, writing and sending a
// stream run on separate cores, a file sink that starts writing back to
// disk while the stream still arrives, and a gzip framing that sends
// incompressible chunks stored.
//
// A transfer of a few hundred megabytes is bounded by CPU on small hosts:
// SHA-256 of the content on each side, a copy into and out of the kernel
// on each side, and compression when asked for. Done one after the other
// on one goroutine, as a plain io.Copy through a hashing io.MultiWriter
// does, they use one core; here each runs on a goroutine of its own,
// chunk by chunk, with a bounded number of chunks in flight.
package transfer

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// ChunkSize is the size of the chunks a Fanout hands to its sinks: one
// gRPC message of a transfer.
const ChunkSize = 1 << 20

// depth is how many chunks a Fanout holds at most (in its sinks' queues
// and being worked on): memory per transfer is depth × ChunkSize.
const depth = 8

// StreamBufferSize is the read and write buffer of the gRPC connections
// that carry transfers, on both ends. gRPC cuts a message into 16 KB
// HTTP/2 frames and, with its default 32 KB buffers, makes a system call
// for every two of them: 32 writes on one side and 32 reads on the other
// for each chunk. A quarter of a chunk makes that 4 of each. gRPC
// returns the write buffer to a pool between writes, so an idle
// connection holds only its read buffer.
const StreamBufferSize = 256 << 10

// Sink consumes the chunks of a stream in order. It must not keep the
// chunk after it returns; an error stops the transfer.
type Sink func([]byte) error

// chunk is one buffer handed to every sink; the last sink to finish with
// it returns it to the pool (when it came from there) and its slot.
type chunk struct {
	b      []byte
	pooled bool
	refs   atomic.Int32
}

// ChunkReader is a source that hands over whole buffers it never touches
// again, such as the content of a received message, which has just been
// allocated for it: a Fanout passes them to its sinks as they are,
// without copying them into buffers of its own.
type ChunkReader interface {
	// ReadChunk returns the next piece of the stream, which the caller
	// keeps, or io.EOF at its end.
	ReadChunk() ([]byte, error)
}

// Fanout is an io.Writer (and io.ReaderFrom) that copies what it is
// given into pooled chunks and hands every chunk, in order, to each of
// its sinks, each sink running on a goroutine of its own. Writes return
// as soon as the data is copied, so the caller reads or receives the next
// chunk while the sinks work on the previous ones; they block only when
// depth chunks are in flight. The first error of a sink is returned by
// the next Write and by Close.
//
// The goroutines belong to the Fanout: Close (which must be called on
// every path, also after an error) stops them and waits for them.
type Fanout struct {
	sinks  []Sink
	queues []chan *chunk
	free   chan []byte
	slots  chan struct{} // one per chunk in flight
	wg     sync.WaitGroup

	errOnce sync.Once
	err     error
	failed  chan struct{} // closed when a sink fails

	closed bool
	n      int64
}

// NewFanout starts one goroutine per sink.
func NewFanout(sinks ...Sink) *Fanout {
	f := &Fanout{sinks: sinks, free: make(chan []byte, depth), slots: make(chan struct{}, depth), failed: make(chan struct{})}
	for _, s := range sinks {
		q := make(chan *chunk, depth)
		f.queues = append(f.queues, q)
		f.wg.Add(1)
		go f.run(s, q)
	}
	return f
}

// run feeds one sink until its queue is closed; after a failure (of any
// sink) it only releases chunks, so the queue always drains.
func (f *Fanout) run(s Sink, q <-chan *chunk) {
	defer f.wg.Done()
	for c := range q {
		select {
		case <-f.failed:
		default:
			if err := s(c.b); err != nil {
				f.fail(err)
			}
		}
		if c.refs.Add(-1) == 0 {
			f.release(c)
		}
	}
}

// release frees a chunk's slot, and its buffer for reuse if it is the
// Fanout's own.
func (f *Fanout) release(c *chunk) {
	if c.pooled {
		f.free <- c.b[:cap(c.b)]
	}
	<-f.slots
}

func (f *Fanout) fail(err error) {
	f.errOnce.Do(func() {
		f.err = err
		close(f.failed)
	})
}

// Err is the first error of a sink, or nil.
func (f *Fanout) Err() error {
	select {
	case <-f.failed:
		return f.err
	default:
		return nil
	}
}

// acquire waits for a slot for one more chunk in flight.
func (f *Fanout) acquire() error {
	select {
	case f.slots <- struct{}{}:
		return nil
	case <-f.failed:
		return f.err
	}
}

// buffer returns a pooled buffer, or a new one: there are never more than
// depth, as each is taken with a slot.
func (f *Fanout) buffer() []byte {
	select {
	case b := <-f.free:
		return b
	default:
		return make([]byte, ChunkSize)
	}
}

// dispatch hands a filled buffer, taken with a slot, to every sink. The
// queues never block for long: every sink goroutine keeps draining its
// queue until Close.
func (f *Fanout) dispatch(b []byte, pooled bool) {
	c := &chunk{b: b, pooled: pooled}
	c.refs.Store(int32(len(f.queues)))
	for _, q := range f.queues {
		q <- c
	}
	f.n += int64(len(b))
}

// errClosed is returned by writes after Close.
var errClosed = errors.New("transfer: write after close")

// Write copies p into chunks for the sinks. It does not keep p.
func (f *Fanout) Write(p []byte) (int, error) {
	if f.closed {
		return 0, errClosed
	}
	written := 0
	for len(p) > 0 {
		if err := f.Err(); err != nil {
			return written, err
		}
		if err := f.acquire(); err != nil {
			return written, err
		}
		b := f.buffer()
		n := copy(b, p)
		f.dispatch(b[:n], true)
		p, written = p[n:], written+n
	}
	return written, nil
}

// ReadFrom reads r to its end straight into chunks for the sinks (no
// intermediate copy) and returns how many bytes it read. A ChunkReader's
// chunks of up to ChunkSize are handed on as they are. It stops at the
// first error of a sink and returns it.
func (f *Fanout) ReadFrom(r io.Reader) (int64, error) {
	if f.closed {
		return 0, errClosed
	}
	cr, chunks := r.(ChunkReader)
	var total int64
	for {
		if err := f.Err(); err != nil {
			return total, err
		}
		if chunks {
			b, err := cr.ReadChunk()
			if len(b) > ChunkSize {
				// Larger than the Fanout bounds its memory with: copied.
				n, werr := f.Write(b)
				total += int64(n)
				if werr != nil {
					return total, werr
				}
			} else if len(b) > 0 {
				if aerr := f.acquire(); aerr != nil {
					return total, aerr
				}
				f.dispatch(b, false)
				total += int64(len(b))
			}
			if errors.Is(err, io.EOF) {
				return total, f.Err()
			}
			if err != nil {
				return total, err
			}
			continue
		}
		if err := f.acquire(); err != nil {
			return total, err
		}
		b := f.buffer()
		n, rerr := io.ReadFull(r, b)
		if n > 0 {
			f.dispatch(b[:n], true)
			total += int64(n)
		} else {
			f.free <- b
			<-f.slots
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return total, f.Err()
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// Limit is io.LimitReader(r, n) that keeps r a ChunkReader when it is
// one, so that a Fanout still takes its chunks without copying them.
func Limit(r io.Reader, n int64) io.Reader {
	if cr, ok := r.(ChunkReader); ok {
		return &limitedChunks{r: cr, n: n}
	}
	return io.LimitReader(r, n)
}

// limitedChunks yields at most n bytes of r.
type limitedChunks struct {
	r    ChunkReader
	n    int64
	left []byte // what Read has not returned yet of the last chunk
}

func (l *limitedChunks) ReadChunk() ([]byte, error) {
	if len(l.left) > 0 {
		b := l.left
		l.left = nil
		return b, nil
	}
	if l.n <= 0 {
		return nil, io.EOF
	}
	b, err := l.r.ReadChunk()
	if int64(len(b)) > l.n {
		b = b[:l.n]
	}
	l.n -= int64(len(b))
	return b, err
}

func (l *limitedChunks) Read(p []byte) (int, error) {
	for len(l.left) == 0 {
		b, err := l.ReadChunk()
		if len(b) == 0 && err != nil {
			return 0, err
		}
		l.left = b
	}
	n := copy(p, l.left)
	l.left = l.left[n:]
	return n, nil
}

// Written is how many bytes were handed to the sinks.
func (f *Fanout) Written() int64 { return f.n }

// Close lets the sinks finish the chunks they have, stops their
// goroutines and returns the first error of a sink. It may be called
// more than once.
func (f *Fanout) Close() error {
	if !f.closed {
		f.closed = true
		for _, q := range f.queues {
			close(q)
		}
		f.wg.Wait()
	}
	return f.Err()
}

// Abort makes the sinks skip what they have not started, then closes the
// Fanout: for a transfer that failed elsewhere.
func (f *Fanout) Abort(cause error) {
	if cause == nil {
		cause = errors.New("transfer aborted")
	}
	f.fail(fmt.Errorf("transfer: %w", cause))
	f.Close()
}
