//go:build linux

package tender

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// ioctl issues an ioctl whose argument is a pointer or an integer.
func ioctl(fd int, req uintptr, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

// tapIO reads and writes frames on a non-blocking tap file descriptor.
type tapIO struct{ fd int }

// Read implements netIO.
func (t tapIO) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(t.fd, p)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return 0, errWouldBlock
		case err != nil:
			return 0, err
		}
		return n, nil
	}
}

// Write implements netIO.
func (t tapIO) Write(p []byte) (int, error) {
	for {
		n, err := unix.Write(t.fd, p)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n, err
	}
}

// pollFds waits for the network devices' descriptors with ppoll.
type pollFds struct {
	fds     []unix.PollFd
	handles []uint64
}

// poll implements poller. An interrupted wait returns an empty set, which
// the ABI allows (the guest simply polls again).
func (p *pollFds) poll(timeout time.Duration) (uint64, error) {
	for i := range p.fds {
		p.fds[i].Revents = 0
	}
	ts := unix.NsecToTimespec(int64(timeout))
	n, err := unix.Ppoll(p.fds, &ts, nil)
	if errors.Is(err, unix.EINTR) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var ready uint64
	for i := 0; i < len(p.fds) && n > 0; i++ {
		if p.fds[i].Revents&unix.POLLIN != 0 {
			ready |= 1 << p.handles[i]
		}
	}
	return ready, nil
}
