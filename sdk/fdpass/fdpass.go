// Package fdpass lets a client on petreld's own host hand it an open
// file for a bulk transfer, so that the content moves between the file
// and petreld's store without being copied through the daemon API.
//
// Carrying a block device or an image through gRPC costs a copy into
// messages, the HTTP/2 framing and a checksum on each end; on a small
// host that is several times the cost of the copy itself. A local client
// can do better: it opens the file (its own permissions apply), passes
// the descriptor over a Unix socket beside the daemon socket
// (SCM_RIGHTS), and names it in the transfer request by the token it was
// given. petreld then reads from or writes to that descriptor directly,
// with the access mode the client opened it with: it never opens a path
// on a client's behalf, so it cannot be made to read or write a file the
// client could not.
//
// The socket is FilesSocket(daemon socket) and has the daemon socket's
// permissions. One connection passes one descriptor: the client sends
// the Magic bytes with the descriptor attached and reads one line back,
// "ok TOKEN" or "error MESSAGE". A token is good for one transfer request
// within TokenTTL; descriptors never claimed are closed then.
//
// Both ends share the file description, so its offset is shared too:
// petreld reads and writes at the description's offset, and the client
// follows the transfer's progress by looking at it (Offset).
//
// petrel-endpoint, petreld's local client for remote callers, passes
// pipes the same way, on the files socket beside petreld's remote socket
// (with that socket's permissions): its callers' content streams through
// a pipe between the two processes instead of a second gRPC stream.
package fdpass

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Magic opens every message that passes a descriptor; it names the
// protocol and its version, so that a later one can be told apart.
const Magic = "petrel-fd/1"

// TokenTTL is how long a passed descriptor waits for the transfer
// request that names it.
const TokenTTL = 30 * time.Second

// maxPending bounds the descriptors waiting for their request: a client
// that passes descriptors and never uses them cannot make petreld hold
// more than this many open files.
const maxPending = 64

// ioTimeout bounds each connection of the files socket, at both ends.
const ioTimeout = 5 * time.Second

// FilesSocket returns the path of the files socket that goes with the
// daemon socket at daemonSocket.
func FilesSocket(daemonSocket string) string { return daemonSocket + ".files" }

// ErrUnavailable is returned by Send when nothing listens on the files
// socket (a daemon without it, or a socket that is not petreld's): the
// client then sends the content through the daemon API.
var ErrUnavailable = errors.New("petreld takes no local files here")

// Send passes f to the petreld listening on the files socket at socket
// and returns the token that names it in one transfer request. f stays
// open and the caller's; petreld holds its own reference to the same
// file description until the transfer ends.
func Send(ctx context.Context, socket string, f *os.File) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return "", fmt.Errorf("pass %s to petreld: %w", f.Name(), err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	deadline := time.Now().Add(ioTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	uc.SetDeadline(deadline)
	var rights []byte
	if err := control(f, func(fd int) error { rights = unix.UnixRights(fd); return nil }); err != nil {
		return "", fmt.Errorf("pass %s to petreld: %w", f.Name(), err)
	}
	if _, _, err := uc.WriteMsgUnix([]byte(Magic), rights, nil); err != nil {
		return "", fmt.Errorf("pass %s to petreld: %w", f.Name(), err)
	}
	line, err := bufio.NewReader(io.LimitReader(uc, 1024)).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("pass %s to petreld: %w", f.Name(), err)
	}
	line = strings.TrimSuffix(line, "\n")
	if tok, ok := strings.CutPrefix(line, "ok "); ok {
		return tok, nil
	}
	msg, _ := strings.CutPrefix(line, "error ")
	return "", fmt.Errorf("pass %s to petreld: %s", f.Name(), msg)
}

// Offset returns f's current offset: how far petreld has read or written
// a file passed with Send, which shares it.
func Offset(f *os.File) (int64, error) {
	var off int64
	err := control(f, func(fd int) (err error) {
		off, err = unix.Seek(fd, 0, io.SeekCurrent)
		return err
	})
	return off, err
}

// control runs fn with f's descriptor. Unlike f.Fd, it leaves a
// non-blocking file (a pipe) non-blocking, which its file description,
// shared with another process once passed, must stay for reads and
// writes with deadlines.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// pending is a descriptor waiting for its transfer request.
type pending struct {
	f  *os.File
	at time.Time
}

// Registry is petreld's end: it accepts descriptors on the files socket
// and hands each to the one transfer request that names its token.
//
// Serve's goroutine and the connections it serves belong to the
// Registry; Close stops them, waits for them, and closes every
// descriptor not taken.
type Registry struct {
	lis *net.UnixListener
	now func() time.Time

	mu      sync.Mutex
	pending map[string]pending
	closed  bool
	// sweep closes what outlived TokenTTL when no put or Take comes to
	// do it, every sweepEvery: armed while files wait, stopped by Close.
	sweep      *time.Timer
	sweepEvery time.Duration

	wg sync.WaitGroup
}

// NewRegistry serves the files socket on lis, which the caller created
// with the daemon socket's permissions; the Registry owns it from now on.
func NewRegistry(lis *net.UnixListener) *Registry {
	r := &Registry{lis: lis, now: time.Now, pending: map[string]pending{}, sweepEvery: TokenTTL + time.Second}
	r.wg.Add(1)
	go r.serve()
	return r
}

func (r *Registry) serve() {
	defer r.wg.Done()
	for {
		c, err := r.lis.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (out of descriptors): wait a little
			// rather than spin.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.handle(c)
		}()
	}
}

// handle receives one descriptor on c and answers with its token.
func (r *Registry) handle(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	tok, err := r.receive(c)
	if err != nil {
		fmt.Fprintf(c, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	fmt.Fprintf(c, "ok %s\n", tok)
}

func (r *Registry) receive(c *net.UnixConn) (string, error) {
	buf := make([]byte, len(Magic))
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return "", fmt.Errorf("receive: %w", err)
	}
	var fds []int
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return "", fmt.Errorf("receive: %w", err)
		}
		for i := range msgs {
			got, err := unix.ParseUnixRights(&msgs[i])
			if err == nil {
				fds = append(fds, got...)
			}
		}
	}
	// Every descriptor received is closed unless it is the one kept.
	keep := -1
	defer func() {
		for _, fd := range fds {
			if fd != keep {
				unix.Close(fd)
			}
		}
	}()
	switch {
	case string(buf[:n]) != Magic:
		return "", fmt.Errorf("not a %s message", Magic)
	case flags&unix.MSG_CTRUNC != 0 || len(fds) != 1:
		return "", fmt.Errorf("pass exactly one descriptor per connection, not %d", len(fds))
	}
	keep = fds[0]
	// A pipe is read or written through Go's poller, with deadlines,
	// which needs it non-blocking when it becomes an os.File.
	var st unix.Stat_t
	if err := unix.Fstat(keep, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO {
		if err := unix.SetNonblock(keep, true); err != nil {
			keep = -1
			return "", fmt.Errorf("passed pipe: %w", err)
		}
	}
	tok, err := r.put(os.NewFile(uintptr(keep), "passed file"))
	if err != nil {
		keep = -1
	}
	return tok, err
}

// put records f under a new token, closing it on failure.
func (r *Registry) put(f *os.File) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		f.Close()
		return "", fmt.Errorf("token: %w", err)
	}
	tok := hex.EncodeToString(b[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		f.Close()
		return "", errors.New("petreld is shutting down")
	}
	r.expireLocked()
	if len(r.pending) >= maxPending {
		f.Close()
		return "", fmt.Errorf("%d passed files already wait for their transfer; try again later", maxPending)
	}
	r.pending[tok] = pending{f: f, at: r.now()}
	if r.sweep == nil {
		r.sweep = time.AfterFunc(r.sweepEvery, r.expire)
	}
	return tok, nil
}

// expire closes the files whose token outlived TokenTTL, and looks again
// later while some still wait.
func (r *Registry) expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.expireLocked()
	if len(r.pending) > 0 {
		r.sweep.Reset(r.sweepEvery)
	} else {
		r.sweep = nil
	}
}

// expireLocked closes the descriptors whose token outlived TokenTTL.
func (r *Registry) expireLocked() {
	for tok, p := range r.pending {
		if r.now().Sub(p.at) > TokenTTL {
			p.f.Close()
			delete(r.pending, tok)
		}
	}
}

// Take returns the file passed under tok, once: the caller owns it and
// closes it.
func (r *Registry) Take(tok string) (*os.File, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked()
	p, ok := r.pending[tok]
	if !ok {
		return nil, errors.New("no file was passed under that token, or it expired or was used already")
	}
	delete(r.pending, tok)
	return p.f, nil
}

// Close stops serving the files socket and closes every descriptor still
// waiting. It does not remove the socket file.
func (r *Registry) Close() error {
	err := r.lis.Close()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.sweep != nil {
		r.sweep.Stop()
	}
	for tok, p := range r.pending {
		p.f.Close()
		delete(r.pending, tok)
	}
	return err
}

// Readable checks that f, passed by a client, is a regular file opened
// for reading, and returns how many bytes lie between its offset and its
// end: the content a transfer from it carries.
func Readable(f *os.File) (int64, error) {
	fl, err := checkRegular(f)
	if err != nil {
		return 0, err
	}
	if fl&unix.O_ACCMODE == unix.O_WRONLY {
		return 0, errors.New("the passed file is not open for reading")
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("passed file: %w", err)
	}
	off, err := Offset(f)
	if err != nil {
		return 0, fmt.Errorf("passed file: %w", err)
	}
	return max(fi.Size()-off, 0), nil
}

// Writable checks that f, passed by a client, is a regular file opened
// for writing.
func Writable(f *os.File) error {
	fl, err := checkRegular(f)
	if err != nil {
		return err
	}
	if fl&unix.O_ACCMODE == unix.O_RDONLY {
		return errors.New("the passed file is not open for writing")
	}
	return nil
}

// checkRegular refuses what is not a regular file (a pipe, a socket or a
// device could block petreld indefinitely) and returns f's status flags.
func checkRegular(f *os.File) (int, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("passed file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("the passed file is not a regular file (%s)", fi.Mode().Type())
	}
	return flags(f)
}

// flags returns f's status flags.
func flags(f *os.File) (int, error) {
	var fl int
	err := control(f, func(fd int) (err error) {
		fl, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("passed file: %w", err)
	}
	return fl, nil
}

// IsPipe tells whether f, a passed file, is a pipe: the endpoint passes
// petreld pipes, whose content streams, on the remote socket's files
// socket.
func IsPipe(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeNamedPipe != 0
}

// ReadablePipe checks that f, passed by petrel-endpoint, is a pipe open
// for reading.
func ReadablePipe(f *os.File) error { return checkPipe(f, unix.O_WRONLY, "reading") }

// WritablePipe checks that f, passed by petrel-endpoint, is a pipe open
// for writing.
func WritablePipe(f *os.File) error { return checkPipe(f, unix.O_RDONLY, "writing") }

// checkPipe checks that f is a pipe open for use: its access mode is not
// wrong.
func checkPipe(f *os.File, wrong int, use string) error {
	if !IsPipe(f) {
		return errors.New("the passed file is not a pipe")
	}
	fl, err := flags(f)
	if err != nil {
		return err
	}
	if fl&unix.O_ACCMODE == wrong {
		return fmt.Errorf("the passed pipe is not open for %s", use)
	}
	return nil
}
