package transfer

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"sync"
)

// gzipBuffers is how many members a compressing writer holds: one being
// made while the others wait for, or go through, its sending goroutine.
const gzipBuffers = 3

// memberSender is what GzipChunks and MarkedChunks share: a fast gzip
// writer that makes members into reused buffers, and a goroutine that
// hands the queued members to a send function, in order and one at a
// time, so that making a member overlaps sending the previous ones. It
// recycles every buffer, and after the first failure only recycles.
type memberSender struct {
	send    func([]byte) error
	queue   chan []byte
	free    chan []byte
	pending sync.WaitGroup // members queued and not yet sent
	done    chan struct{}

	firstError // of the sends

	closed bool
	fast   *gzip.Writer
}

// start readies s and starts its goroutine, which send is called on.
func (s *memberSender) start(send func([]byte) error) {
	s.send = send
	s.queue, s.free = make(chan []byte, gzipBuffers), make(chan []byte, gzipBuffers)
	s.done, s.firstError = make(chan struct{}), newFirstError()
	for i := 0; i < gzipBuffers; i++ {
		s.free <- nil // allocated on first use, at the size needed
	}
	go s.run()
}

func (s *memberSender) run() {
	defer close(s.done)
	for b := range s.queue {
		select {
		case <-s.failed:
		default:
			if err := s.send(b); err != nil {
				s.fail(err)
			}
		}
		s.free <- b[:0]
		s.pending.Done()
	}
}

// buffer waits for a free buffer; it returns the first failure instead
// when a send failed.
func (s *memberSender) buffer() ([]byte, error) {
	if s.closed {
		return nil, errClosed
	}
	select {
	case b := <-s.free:
		return b, nil
	case <-s.failed:
		return nil, s.err
	}
}

// release gives back a buffer taken with buffer and not queued.
func (s *memberSender) release(b []byte) { s.free <- b[:0] }

// enqueue queues a member, in a buffer taken with buffer, for sending.
func (s *memberSender) enqueue(b []byte) {
	s.pending.Add(1)
	s.queue <- b
}

// compress makes p into a gzip member at the fastest level, in b's
// storage.
func (s *memberSender) compress(b, p []byte) ([]byte, error) {
	buf := bytes.NewBuffer(b[:0])
	if s.fast == nil {
		s.fast, _ = gzip.NewWriterLevel(buf, gzip.BestSpeed)
	}
	s.fast.Reset(buf)
	if _, err := s.fast.Write(p); err != nil {
		return b, fmt.Errorf("gzip: %w", err)
	}
	if err := s.fast.Close(); err != nil {
		return b, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}

// close waits until the members queued are sent, stops the goroutine and
// returns the first failure. It may be called more than once.
func (s *memberSender) close() error {
	if !s.closed {
		s.closed = true
		close(s.queue)
	}
	<-s.done
	return s.first()
}
