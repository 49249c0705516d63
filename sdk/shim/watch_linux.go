package shim

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// watchLoop is the goroutine that reads every socket of a Watcher's
// follows, waiting for them all in one epoll set. It alone reads, closes
// and forgets the sockets once it took them over.
type watchLoop struct {
	w        *Watcher
	epfd     int
	wakeFD   int // eventfd: commands wait, or the loop is to stop
	stopping atomic.Bool
	done     chan struct{}
}

// readSize is the loop's one read buffer: a busy console's batches come
// whole in one or two reads.
const readSize = 64 << 10

// startLoop starts w's loop; nil when the epoll set cannot be made (each
// follow then gets a goroutine).
func startLoop(w *Watcher) *watchLoop {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		_ = unix.Close(efd)
		_ = unix.Close(epfd)
		return nil
	}
	l := &watchLoop{w: w, epfd: epfd, wakeFD: efd, done: make(chan struct{})}
	go l.run()
	return l
}

// wake makes the loop look at its commands.
func (l *watchLoop) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(l.wakeFD, one[:])
}

// stop ends the loop, closing every socket without calling end, and
// waits for it.
func (l *watchLoop) stop() {
	l.stopping.Store(true)
	l.wake()
	<-l.done
}

func (l *watchLoop) run() {
	defer close(l.done)
	byKey := map[string]*watch{}
	byFD := map[int32]*watch{}
	remove := func(wt *watch) {
		delete(byKey, wt.key)
		delete(byFD, int32(wt.fd))
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, wt.fd, nil)
		closeFD(wt.fd)
	}
	finish := func(wt *watch, err error) {
		remove(wt)
		wt.end(err)
	}
	defer func() {
		for _, wt := range byKey {
			remove(wt)
		}
		// Follows queued but not yet taken hold open consoles too.
		for _, c := range l.w.takeCommands() {
			if c.w != nil {
				closeFD(c.w.fd)
			}
		}
		_ = unix.Close(l.wakeFD)
		_ = unix.Close(l.epfd)
	}()
	events := make([]unix.EpollEvent, 128)
	var buf []byte
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			for _, wt := range byKey {
				finish(wt, fmt.Errorf("wait for console of %s: %w", wt.c.dir, err))
			}
			return
		}
		for i := range events[:n] {
			fd := events[i].Fd
			if int(fd) == l.wakeFD {
				var b [8]byte
				_, _ = unix.Read(l.wakeFD, b[:])
				if l.stopping.Load() {
					return
				}
				for _, c := range l.w.takeCommands() {
					if old := byKey[c.key]; old != nil {
						remove(old)
					}
					if c.w == nil {
						continue
					}
					ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.w.fd)}
					if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.w.fd, &ev); err != nil {
						closeFD(c.w.fd)
						c.w.end(fmt.Errorf("watch console of %s: %w", c.w.c.dir, err))
						continue
					}
					byKey[c.key], byFD[int32(c.w.fd)] = c.w, c.w
				}
				continue
			}
			wt := byFD[fd]
			if wt == nil {
				continue // closed earlier in this round
			}
			if buf == nil {
				buf = make([]byte, readSize)
			}
			// One read per socket and round keeps a busy console from
			// holding up the others; what is left is reported again.
			r, err := unix.Read(wt.fd, buf)
			switch {
			case r > 0:
				if done, ferr := wt.consume(buf[:r]); done {
					finish(wt, ferr)
				}
			case err == unix.EAGAIN || err == unix.EINTR:
			case err == nil:
				finish(wt, wt.broken(io.ErrUnexpectedEOF))
			default:
				finish(wt, wt.broken(err))
			}
		}
	}
}
