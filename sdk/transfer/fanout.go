// Package transfer holds the streaming machinery shared by both ends of
// Petrel's bulk transfers (block device uploads and downloads, image
// uploads): a fan-out that lets reading, hashing, writing and sending a
// stream run on separate cores, a file sink that starts writing back to
// disk while the stream still arrives, and the two framings of
// compressed transfers: chunks marked one by one, compressed or as they
// are (MarkedChunks, MarkedReader), and, for clients and daemons that do
// not mark chunks, one gzip stream whose incompressible chunks are
// stored (GzipChunks, GzipReader).
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

// Sink consumes the chunks of a stream in order. It must not keep the
// chunk after it returns; an error stops the transfer.
type Sink func([]byte) error

// chunk is one buffer handed to every sink; the last sink to finish with
// it returns it to the pool.
type chunk struct {
	b    []byte
	refs atomic.Int32
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
	alloc  int
	wg     sync.WaitGroup

	firstError // of the sinks

	closed bool
	n      int64
}

// NewFanout starts one goroutine per sink.
func NewFanout(sinks ...Sink) *Fanout {
	f := &Fanout{sinks: sinks, free: make(chan []byte, depth), firstError: newFirstError()}
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
			f.free <- c.b[:cap(c.b)]
		}
	}
}

// Err is the first error of a sink, or nil.
func (f *Fanout) Err() error { return f.first() }

// firstError keeps the first error that a transfer's goroutines report,
// and closes failed when it comes, for the others to stop.
type firstError struct {
	once   *sync.Once
	err    error // set before failed closes
	failed chan struct{}
}

func newFirstError() firstError { return firstError{once: new(sync.Once), failed: make(chan struct{})} }

// fail records err if it is the first.
func (e *firstError) fail(err error) {
	e.once.Do(func() {
		e.err = err
		close(e.failed)
	})
}

// first returns the first error, nil while there is none.
func (e *firstError) first() error {
	select {
	case <-e.failed:
		return e.err
	default:
		return nil
	}
}

// get returns a free buffer, allocating up to depth of them.
func (f *Fanout) get() ([]byte, error) {
	select {
	case b := <-f.free:
		return b, nil
	default:
	}
	if f.alloc < depth {
		f.alloc++
		return make([]byte, ChunkSize), nil
	}
	select {
	case b := <-f.free:
		return b, nil
	case <-f.failed:
		return nil, f.err
	}
}

// dispatch hands a filled buffer to every sink. The queues never block
// for long: every sink goroutine keeps draining its queue until Close.
func (f *Fanout) dispatch(b []byte) {
	c := &chunk{b: b}
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
		b, err := f.get()
		if err != nil {
			return written, err
		}
		n := copy(b, p)
		f.dispatch(b[:n])
		p, written = p[n:], written+n
	}
	return written, nil
}

// ReadFrom reads r to its end straight into chunks for the sinks (no
// intermediate copy) and returns how many bytes it read. It stops at the
// first error of a sink and returns it.
func (f *Fanout) ReadFrom(r io.Reader) (int64, error) {
	if f.closed {
		return 0, errClosed
	}
	var total int64
	for {
		if err := f.Err(); err != nil {
			return total, err
		}
		b, err := f.get()
		if err != nil {
			return total, err
		}
		n, rerr := io.ReadFull(r, b)
		if n > 0 {
			f.dispatch(b[:n])
			total += int64(n)
		} else {
			f.free <- b
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return total, f.Err()
		}
		if rerr != nil {
			return total, rerr
		}
	}
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
