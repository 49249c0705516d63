package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A spare shim is a petrel-shim started ahead of need, before there is a
// VM to run: its Go runtime is up and it waits, with no directory, no
// socket and no tender, for the work of the next launch. Handing that work
// over takes one message on a socket, so a launch that finds a spare saves
// the shim's exec and start-up, which otherwise come before the tender's
// on the path from create to a running guest.
//
// The spare is started with --spare and one end of a unix stream socket
// pair on readyFD; the launcher keeps the other end. The launcher sends
// {"args":[...]} (the command line a launch would have passed) with the
// shim's log file and the directory's locked LockFile attached
// (SCM_RIGHTS), and half-closes its end; the spare then runs as a shim
// started with those arguments and reports readiness on the same socket.
// If the launcher's end closes before any work came, as when the launcher
// exits or is killed, the spare reads end-of-file and exits: a spare never
// outlives the process that started it, and, having no directory, is
// never seen as a VM.

// flagSpare starts the shim as a spare.
const flagSpare = "--spare"

// maxWork bounds the work message a spare accepts.
const maxWork = 1 << 20

// DefaultRefillDelay is how long a Launcher waits after handing out its
// spare before it starts the next one: long enough that the new spare's
// start-up (about a millisecond of CPU) comes after the start-up of the
// tender just launched (a few milliseconds to its first line), short
// enough that creates made one after another (a deploy script, every
// 15-20 ms on a 2-core host) each find a spare.
const DefaultRefillDelay = 10 * time.Millisecond

// spareRetireTimeout bounds how long a retired spare gets to exit on its
// own once its socket is closed, before it is killed.
const spareRetireTimeout = 5 * time.Second

// work is the message a launcher hands a spare.
type work struct {
	Args []string `json:"args"`
}

// spareKey is what a spare was started with: a launch can use the spare
// only when it would start the same program with the same environment.
type spareKey struct {
	path string
	env  []string
}

// matches reports whether a launch of path with env can use a spare
// started for k.
func (k spareKey) matches(path string, env []string) bool {
	return k.path == path && slices.Equal(k.env, env)
}

// spare is a started spare shim.
type spare struct {
	key  spareKey
	conn *os.File // the launcher's end of the socket pair
	r    *shimReaper
}

// alive reports whether the spare's process has not exited.
func (s *spare) alive() bool {
	select {
	case <-s.r.done:
		return false
	default:
		return true
	}
}

// retire closes the spare's socket, which makes it exit, and waits for it
// (killing it if it does not go within spareRetireTimeout).
func (s *spare) retire() {
	_ = s.conn.Close()
	s.r.abandon(spareRetireTimeout)
}

// kill closes the spare's socket and kills it with anything it started.
func (s *spare) kill() {
	_ = s.conn.Close()
	s.r.abandon(0)
}

// startSpare starts a spare shim for k.
func startSpare(k spareKey) (*spare, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start spare shim: socket pair: %w", err)
	}
	// The launcher's end is non-blocking, so that reading the readiness
	// report from it can be given a deadline.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		_ = unix.Close(fds[0])
		_ = unix.Close(fds[1])
		return nil, fmt.Errorf("start spare shim: %w", err)
	}
	conn := os.NewFile(uintptr(fds[0]), "spare")
	theirs := os.NewFile(uintptr(fds[1]), "spare")
	cmd := exec.Command(k.path, flagSpare)
	cmd.ExtraFiles = []*os.File{theirs} // readyFD in the spare
	cmd.Env = k.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	_ = theirs.Close()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("start spare shim %s: %w", k.path, err)
	}
	return &spare{key: k, conn: conn, r: newShimReaper(cmd.Process)}, nil
}

// handOver sends args and the shim's files to the spare and half-closes
// the socket, after which the spare runs as a shim launched with args.
func (s *spare) handOver(args []string, logf, lock *os.File) error {
	data, err := json.Marshal(work{Args: args})
	if err != nil {
		return err
	}
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return err
	}
	rights := unix.UnixRights(int(logf.Fd()), int(lock.Fd()))
	var opErr error
	err = rc.Write(func(fd uintptr) bool {
		for len(data) > 0 {
			var n int
			n, opErr = unix.SendmsgN(int(fd), data, rights, nil, 0)
			if opErr == unix.EINTR {
				continue
			}
			if opErr == unix.EAGAIN {
				return false
			}
			if opErr != nil {
				return true
			}
			data, rights = data[n:], nil
		}
		opErr = unix.Shutdown(int(fd), unix.SHUT_WR)
		return true
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return fmt.Errorf("hand work to spare shim %d: %w", s.r.pid, err)
	}
	return nil
}

// spareWork is what a spare received: the command line to run with, the
// readiness socket, and the directory's lock.
type spareWork struct {
	args  []string
	ready *os.File
	lock  *os.File
}

// awaitWork is the life of a spare until it has work: it reads the work
// message from readyFD and puts the shim's log in place of its stdout and
// stderr. ok is false when the launcher went away without sending any,
// and the spare is to exit. An unreadable message is an error, which the
// caller reports on ready (set whenever readyFD is usable).
func awaitWork() (w spareWork, ok bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(readyFD, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return w, false, errors.New("spare shim started without its socket")
	}
	unix.CloseOnExec(readyFD)
	w.ready = os.NewFile(readyFD, "ready")
	var data []byte
	var files []int
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, rerr := unix.Recvmsg(readyFD, buf, oob, 0)
		if rerr == unix.EINTR {
			continue
		}
		if rerr != nil {
			closeFDs(files)
			return w, true, fmt.Errorf("read work: %w", rerr)
		}
		if oobn > 0 {
			got, perr := receivedFDs(oob[:oobn])
			files = append(files, got...)
			if perr != nil {
				closeFDs(files)
				return w, true, perr
			}
		}
		if n == 0 {
			break
		}
		data = append(data, buf[:n]...)
		if len(data) > maxWork {
			closeFDs(files)
			return w, true, fmt.Errorf("work message longer than %d bytes", maxWork)
		}
	}
	if len(data) == 0 && len(files) == 0 {
		return w, false, nil // the launcher is gone: nothing to do
	}
	var msg work
	if err := json.Unmarshal(data, &msg); err != nil {
		closeFDs(files)
		return w, true, fmt.Errorf("parse work: %w", err)
	}
	if len(files) != 2 {
		closeFDs(files)
		return w, true, fmt.Errorf("work came with %d files, want 2 (log and lock)", len(files))
	}
	logFD, lockFD := files[0], files[1]
	for _, fd := range []int{1, 2} {
		if err := unix.Dup2(logFD, fd); err != nil {
			closeFDs(files)
			return w, true, fmt.Errorf("log to %s: %w", LogFile, err)
		}
	}
	_ = unix.Close(logFD)
	w.args = msg.Args
	w.lock = os.NewFile(uintptr(lockFD), LockFile)
	return w, true, nil
}

// receivedFDs returns the descriptors passed in a control message, made
// close-on-exec so that the tender does not inherit them.
func receivedFDs(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range got {
			unix.CloseOnExec(fd)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// closeFDs closes descriptors received with an unusable message.
func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// Launcher launches shims like Launch, keeping a spare shim (see above)
// so that a launch need not wait for a shim to start: the first launch
// starts a shim afresh, and every launch that takes the spare has the next
// one started after RefillDelay. A launch finds no spare when launches
// come faster than that, or when it starts another program or gives
// another environment than the spare had; it then starts a shim afresh,
// exactly as Launch does. A spare that died is replaced by the next
// launch in the same way.
//
// Close stops the spare. A Launcher that is never closed leaves no spare
// behind either: its spare exits when the launching process does.
type Launcher struct {
	// RefillDelay is how long after a launch that took the spare the next
	// one is started (DefaultRefillDelay when zero). Set it before the
	// first launch.
	RefillDelay time.Duration

	mu     sync.Mutex
	spare  *spare    // the waiting spare, nil when none
	want   *spareKey // what the next spare is started for
	closed bool
	wake   chan struct{} // asks the refill loop for a spare
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the refill loop has ended
}

// NewLauncher returns a Launcher; no spare is started until its first
// launch, so a backend that never runs a VM holds no spare.
func NewLauncher() *Launcher {
	return &Launcher{wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// errLauncherClosed reports a launch through a closed Launcher.
var errLauncherClosed = errors.New("launch shim: launcher closed")

// Launch starts a shim for cfg, with Launch's guarantees, using the spare
// when it fits.
func (l *Launcher) Launch(ctx context.Context, cfg Config) (*Process, error) {
	env, own := shimEnv(cfg.Env)
	args, err := shimArgs(cfg, own)
	if err != nil {
		return nil, err
	}
	shimPath := cfg.ShimPath
	if shimPath == "" {
		shimPath = DefaultShimName
	}
	sp, err := l.take(spareKey{path: shimPath, env: env})
	if err != nil {
		return nil, err
	}
	return launchWith(ctx, cfg, shimPath, env, args, sp)
}

// take returns the spare when it fits a launch of k (nil when there is
// none), and has the refill loop start the next spare for k.
func (l *Launcher) take(k spareKey) (*spare, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errLauncherClosed
	}
	if l.want == nil {
		go l.refillLoop()
	}
	l.want = &k
	sp := l.spare
	l.spare = nil
	if sp != nil && (!sp.alive() || !sp.key.matches(k.path, k.env)) {
		// Dead, or made for another launch: it is of no use. Closing its
		// socket makes a live one exit; its reaper collects it.
		_ = sp.conn.Close()
		sp = nil
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return sp, nil
}

// refillLoop starts a spare, RefillDelay after each request, whenever
// there is none. It ends when the Launcher is closed.
func (l *Launcher) refillLoop() {
	defer close(l.done)
	delay := l.RefillDelay
	if delay <= 0 {
		delay = DefaultRefillDelay
	}
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-l.stop:
			return
		case <-l.wake:
		}
		t.Reset(delay)
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-t.C:
		}
		l.mu.Lock()
		if l.spare != nil && l.spare.alive() {
			l.mu.Unlock()
			continue
		}
		k := *l.want
		l.mu.Unlock()
		sp, err := startSpare(k)
		if err != nil {
			continue // the next launch starts its shim afresh, and asks again
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			sp.retire()
			return
		}
		old := l.spare
		l.spare = sp
		l.mu.Unlock()
		if old != nil {
			old.retire()
		}
	}
}

// Close stops the spare, if any, waits for it to exit, and refuses
// further launches. Shims already launched are not affected.
func (l *Launcher) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	started := l.want != nil
	sp := l.spare
	l.spare = nil
	l.mu.Unlock()
	close(l.stop)
	if started {
		<-l.done
	}
	if sp != nil {
		sp.retire()
	}
	return nil
}

// SparePID returns the process id of the waiting spare, or 0 when there
// is none. It is for tests and diagnostics: the spare is an ordinary
// child process of the launcher until a launch takes it.
func (l *Launcher) SparePID() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.spare == nil || !l.spare.alive() {
		return 0
	}
	return l.spare.r.pid
}
