package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The package speaks to unix sockets through golang.org/x/sys/unix and
// pollable *os.File values instead of package net. Importing net links the
// C library into every binary built with cgo enabled (for its resolver),
// which costs the shim well over a megabyte of resident memory per VM;
// without it petrel-shim is a static binary whatever the build flags.

// errListenerClosed is returned by accept once the listener is closed.
var errListenerClosed = errors.New("listener closed")

// listener is a listening unix stream socket.
type listener struct {
	f      *os.File
	path   string
	closed atomic.Bool
}

// listenUnix binds and listens on a unix socket at path.
func listenUnix(path string) (*listener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	// DIR is private already; the socket itself is too, in case DIR is
	// not.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = unix.Close(fd)
		_ = os.Remove(path)
		return nil, fmt.Errorf("restrict %s: %w", path, err)
	}
	if err := unix.Listen(fd, maxClients); err != nil {
		_ = unix.Close(fd)
		_ = os.Remove(path)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return &listener{f: os.NewFile(uintptr(fd), path), path: path}, nil
}

// accept waits for and returns the next connection, or errListenerClosed
// once close has been called.
func (l *listener) accept() (*os.File, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		if l.closed.Load() {
			return nil, errListenerClosed
		}
		return nil, fmt.Errorf("accept on %s: %w", l.path, err)
	}
	var nfd int
	var aerr error
	err = rc.Read(func(fd uintptr) bool {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return aerr != unix.EAGAIN
	})
	if l.closed.Load() {
		if err == nil && aerr == nil {
			_ = unix.Close(nfd)
		}
		return nil, errListenerClosed
	}
	if err == nil {
		err = aerr
	}
	if err != nil {
		return nil, fmt.Errorf("accept on %s: %w", l.path, err)
	}
	return os.NewFile(uintptr(nfd), l.path), nil
}

// close stops accepting and removes the socket file.
func (l *listener) close() error {
	if l.closed.Swap(true) {
		return nil
	}
	err := l.f.Close()
	if rerr := removeIfExists(l.path); err == nil {
		err = rerr
	}
	return err
}

// dialUnix connects to the unix socket at path. The returned file supports
// deadlines, and closing it unblocks pending reads and writes.
func dialUnix(ctx context.Context, path string) (*os.File, error) {
	fd, err := dialRaw(ctx, path)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// dialRaw connects to the unix socket at path and returns the connected,
// non-blocking socket, which nothing else polls.
func dialRaw(ctx context.Context, path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EAGAIN {
			break
		}
		// The listener's backlog is full; it drains quickly.
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = unix.Close(fd)
			return -1, ctx.Err()
		case <-t.C:
		}
	}
	if err != nil {
		_ = unix.Close(fd)
		return -1, &os.PathError{Op: "connect", Path: path, Err: err}
	}
	return fd, nil
}
