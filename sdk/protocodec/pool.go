package protocodec

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// Pool's buffers come in powers of two from 2^minTier to 2^maxTier
// bytes; larger requests are allocated and left to the collector.
const (
	minTier = 8
	maxTier = 23 // 8 MiB, the largest message petreld and its clients accept
)

// bufferPool is a mem.BufferPool that hands out buffers as they were
// last used, without clearing them. gRPC's default pool clears each
// buffer it hands out, a cost as high as a copy of the buffer: for a
// transfer, one more pass over every megabyte of every message, and for
// messages larger than its largest tier (1 MiB, which a chunk of 1 MiB
// with its framing exceeds) a fresh clear of the whole message. Every
// user of a pool writes the bytes it asked for before reading them
// (gRPC reads a frame into exactly its length, a codec marshals into
// the whole buffer), so the clearing protects nothing they read.
type bufferPool struct {
	tiers [maxTier + 1]sync.Pool
}

// Pool is the pool that Codec marshals into and gathers messages in.
// Given to gRPC as its buffer pool (experimental.BufferPool on a server,
// experimental.WithBufferPool on a connection), it also holds the frames
// gRPC reads.
var Pool mem.BufferPool = pool

// pool is Pool.
var pool = &bufferPool{}

// tierFor is the tier holding buffers of at least n bytes.
func tierFor(n int) int {
	if n <= 1<<minTier {
		return minTier
	}
	return bits.Len(uint(n - 1))
}

func (p *bufferPool) Get(n int) *[]byte {
	t := tierFor(n)
	if t > maxTier {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<t)
	return &b
}

// kept returns a buffer of n bytes that the pool holds, or nil when it
// holds none of that size.
func (p *bufferPool) kept(n int) *[]byte {
	t := tierFor(n)
	if t > maxTier {
		return nil
	}
	b, _ := p.tiers[t].Get().(*[]byte)
	if b != nil {
		*b = (*b)[:n]
	}
	return b
}

// Put keeps a buffer whose capacity is one of the tiers; others (the
// large ones Get allocated, or a slice gRPC was given from elsewhere)
// are left to the collector.
func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	t := tierFor(c)
	if t > maxTier || c != 1<<t {
		return
	}
	*b = (*b)[:c]
	p.tiers[t].Put(b)
}
