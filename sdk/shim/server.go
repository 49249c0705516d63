package shim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Tunables of the shim's server side.
const (
	// maxClients bounds concurrent socket connections, and thereby the
	// memory clients can make the shim use.
	maxClients = 64
	// requestTimeout bounds how long a client may take to send its request.
	requestTimeout = 10 * time.Second
	// writeTimeout bounds one response write, so a client that stops
	// reading cannot pin a handler forever.
	writeTimeout = 10 * time.Second
	// drainTimeout is how long the console pipe may stay open after the
	// tender exited (a descendant may hold it); the rest is abandoned.
	drainTimeout = 2 * time.Second
	// lingerTimeout is how long the shim waits after the exit for
	// connected clients to go away before it removes the socket.
	lingerTimeout = 2 * time.Second
	// maxRequest is the longest request line accepted.
	maxRequest = 1024
	// trimInterval is how often the shim returns memory freed since its
	// last look to the kernel, when it did any work in between.
	trimInterval = time.Second
)

// server is a running shim: the tender, its console and the socket.
type server struct {
	opts    options
	log     *log.Logger
	pid     int
	started time.Time
	ring    *ring
	pipe    *os.File // read end of the tender's stdout+stderr
	ln      *listener

	mu     sync.Mutex
	exited bool          // the tender is dead (its pid may no longer be signalled)
	exit   *Exit         // set just before done is closed
	done   chan struct{} // closed once the exit is recorded

	accepted atomic.Uint64 // connections accepted, a measure of activity

	connMu  sync.Mutex
	conns   map[*os.File]struct{}
	closing bool
	wg      sync.WaitGroup // accept loop and connection handlers
}

// start prepares DIR, opens the socket and starts the tender. On error
// nothing is left running and the socket is removed.
func start(o options, logger *log.Logger) (*server, error) {
	sock := filepath.Join(o.dir, SocketName)
	probe, cancel := context.WithTimeout(context.Background(), time.Second)
	c, err := dialUnix(probe, sock)
	cancel()
	switch {
	case err == nil:
		_ = c.Close()
		return nil, fmt.Errorf("another shim is serving %s", sock)
	case !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ECONNREFUSED):
		// Anything but "nobody there" (e.g. a full backlog) may hide a
		// live shim, whose socket must not be taken over.
		return nil, fmt.Errorf("probe %s for another shim: %w", sock, err)
	}
	for _, name := range []string{SocketName, ExitFile, ConsoleFile, ShimFile} {
		if err := removeIfExists(filepath.Join(o.dir, name)); err != nil {
			return nil, fmt.Errorf("clear stale files: %w", err)
		}
	}
	ln, err := listenUnix(sock)
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		_ = ln.close()
		return nil, fmt.Errorf("create console pipe: %w", err)
	}
	cmd := exec.Command(o.argv[0], o.argv[1:]...)
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.Dir = o.tenderDir
	if o.ownGOMAXPROCS {
		cmd.Env = withoutVar(os.Environ(), "GOMAXPROCS")
	}
	// A shim killed outright takes its tender with it, so no guest runs
	// unsupervised (the VM is then recorded as exited, its shim lost).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := time.Now().Round(0).UTC()
	err = startPinned(cmd.Start, o.cpus)
	_ = pw.Close()
	if err != nil {
		_ = pr.Close()
		_ = ln.close()
		return nil, fmt.Errorf("start tender %s: %w", o.argv[0], err)
	}
	pid := cmd.Process.Pid
	// The shim reaps the tender with wait4 itself; drop the os.Process
	// handle (and its pidfd) so nothing else waits for it.
	_ = cmd.Process.Release()

	s := &server{
		opts: o, log: logger, pid: pid, started: started,
		ring: newRing(o.consoleLines, o.consoleBytes), pipe: pr, ln: ln,
		done: make(chan struct{}), conns: map[*os.File]struct{}{},
	}
	rec := shimRecord{ShimPID: os.Getpid(), TenderPID: pid, StartedAt: started, Argv: o.argv}
	if err := writeJSONFile(o.dir, ShimFile, rec); err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil)
		_ = pr.Close()
		_ = ln.close()
		return nil, fmt.Errorf("record shim: %w", err)
	}
	return s, nil
}

// withoutVar returns env without the variable name.
func withoutVar(env []string, name string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != name {
			out = append(out, kv)
		}
	}
	return out
}

// run supervises the tender until it exits, records the exit, serves the
// last clients and returns the shim's exit status.
func (s *server) run(sigs <-chan os.Signal) int {
	s.wg.Add(1)
	go s.acceptLoop()

	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		readConsole(s.pipe, s.ring, s.opts.lineMax)
	}()

	reaped := make(chan Exit, 1)
	go func() { reaped <- s.reap() }()

	stopTrim, trimDone := make(chan struct{}), make(chan struct{})
	go s.trimLoop(stopTrim, trimDone)
	defer func() {
		close(stopTrim)
		<-trimDone
	}()

	var ex Exit
	for waiting := true; waiting; {
		select {
		case sig := <-sigs:
			if ss, ok := sig.(syscall.Signal); ok && (ss == syscall.SIGTERM || ss == syscall.SIGINT) {
				s.log.Printf("forwarding %v to tender %d", ss, s.pid)
				if err := s.signal(ss); err != nil && !errors.Is(err, ErrExited) {
					s.log.Print(err)
				}
			}
		case ex = <-reaped:
			waiting = false
		}
	}
	s.log.Printf("tender %d exited: code %d signal %d", s.pid, ex.Code, ex.Signal)

	select {
	case <-readerDone:
	case <-time.After(drainTimeout):
		s.log.Printf("console pipe still open %v after the tender exited; closing it", drainTimeout)
	}
	_ = s.pipe.Close()
	<-readerDone

	if data, err := encodeConsole(s.ring.all()); err != nil {
		s.log.Print(err)
	} else if err := writeFileAtomic(s.opts.dir, ConsoleFile, data); err != nil {
		s.log.Print(err)
	}
	if err := writeJSONFile(s.opts.dir, ExitFile, ex); err != nil {
		s.log.Print(err)
	}

	s.mu.Lock()
	s.exit = &ex
	close(s.done)
	s.mu.Unlock()
	s.ring.close()

	s.linger()
	s.shutdown()
	return 0
}

// trimLoop keeps the shim's resident memory close to its live heap. The Go
// runtime returns freed memory to the kernel only slowly, so after a burst
// of requests or console output a shim would hold on to a few megabytes it
// no longer uses; multiplied by the number of VMs on a host that matters
// more than the fraction of a millisecond a forced collection of a small
// heap costs. The loop only trims after activity and ends when stop is
// closed.
func (s *server) trimLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(trimInterval)
	defer tick.Stop()
	var last uint64
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			if now := s.accepted.Load() + s.ring.seq(); now != last {
				last = now
				debug.FreeOSMemory()
			}
		}
	}
}

// reap waits for the tender to exit and returns its exit record. It first
// waits without reaping, marks the tender exited under s.mu and only then
// reaps it, so that a concurrent kill can never hit a recycled pid.
func (s *server) reap() Exit {
	err := waitExited(s.pid)
	if err != nil {
		s.log.Printf("waitid %d: %v", s.pid, err)
	}
	s.mu.Lock()
	s.exited = true
	s.mu.Unlock()

	var ws unix.WaitStatus
	var ru unix.Rusage
	err = unix.EINTR
	for err == unix.EINTR {
		_, err = unix.Wait4(s.pid, &ws, 0, &ru)
	}
	ex := Exit{
		StartedAt: s.started,
		ExitedAt:  time.Now().Round(0).UTC(),
		TenderPID: s.pid,
		Rusage: Rusage{
			UtimeNS:     ru.Utime.Nano(),
			StimeNS:     ru.Stime.Nano(),
			MaxRSSBytes: int64(ru.Maxrss) * 1024,
			Minflt:      int64(ru.Minflt),
			Majflt:      int64(ru.Majflt),
			Nvcsw:       int64(ru.Nvcsw),
			Nivcsw:      int64(ru.Nivcsw),
		},
	}
	switch {
	case err != nil:
		s.log.Printf("wait4 %d: %v", s.pid, err)
		ex.Code = -1
	case ws.Signaled():
		ex.Code, ex.Signal = -1, int(ws.Signal())
	default:
		ex.Code = ws.ExitStatus()
	}
	return ex
}

// signal sends sig to the tender unless it has exited.
func (s *server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exited {
		return ErrExited
	}
	if err := unix.Kill(s.pid, sig); err != nil {
		return fmt.Errorf("signal tender %d: %w", s.pid, err)
	}
	return nil
}

// stats samples the tender unless it has exited. The lock keeps the pid
// from being reaped (and recycled) while /proc is read.
func (s *server) stats() (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exited {
		return Stats{}, ErrExited
	}
	return readStats(s.pid)
}

// linger waits until no client is connected, or lingerTimeout has passed,
// so that clients that just got their answer can read it before the socket
// goes away.
func (s *server) linger() {
	deadline := time.Now().Add(lingerTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		s.connMu.Lock()
		n := len(s.conns)
		s.connMu.Unlock()
		if n == 0 {
			return
		}
		<-tick.C
	}
}

// shutdown closes the listener (removing the socket) and every connection,
// and waits for their goroutines.
func (s *server) shutdown() {
	_ = s.ln.close()
	s.connMu.Lock()
	s.closing = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.connMu.Unlock()
	s.wg.Wait()
}

// acceptLoop serves connections until the listener is closed.
func (s *server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.accept()
		if err != nil {
			if errors.Is(err, errListenerClosed) {
				return
			}
			s.log.Printf("accept: %v", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		s.accepted.Add(1)
		if err := s.track(c); err != nil {
			// A shim that is closing hangs up without a word, so the
			// client falls back to the records already on disk.
			if !errors.Is(err, errClosing) {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_ = json.NewEncoder(c).Encode(response{Error: err.Error()})
			}
			_ = c.Close()
			continue
		}
		s.wg.Add(1)
		go s.handle(c)
	}
}

// errClosing refuses connections while the shim shuts down.
var errClosing = errors.New("shim is shutting down")

// track registers a connection, refusing it when the shim is closing or
// too many clients are connected.
func (s *server) track(c *os.File) error {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.closing {
		return errClosing
	}
	if len(s.conns) >= maxClients {
		return fmt.Errorf("too many clients (limit %d)", maxClients)
	}
	s.conns[c] = struct{}{}
	return nil
}

func (s *server) untrack(c *os.File) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	delete(s.conns, c)
}

// handle serves one connection: one request, its responses, then close.
func (s *server) handle(c *os.File) {
	defer s.wg.Done()
	defer s.untrack(c)

	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	br := bufio.NewReaderSize(c, maxRequest)
	line, err := br.ReadSlice('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		if errors.Is(err, bufio.ErrBufferFull) {
			newReplier(c).reply(response{Error: "request too long", ErrorCode: codeBadRequest})
		}
		_ = c.Close()
		return
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		newReplier(c).reply(response{Error: "malformed request: " + err.Error(), ErrorCode: codeBadRequest})
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})

	// The client sends nothing after its request, so a read returning
	// means it went away: cancel whatever the request is blocked on.
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_, _ = io.Copy(io.Discard, br)
		cancel()
	}()

	s.dispatch(ctx, newReplier(c), req)
	_ = c.Close()
	<-watchDone
	cancel()
}

// replier writes response lines to one client through a buffer, so that
// a burst of console lines costs one system call rather than one each.
type replier struct {
	f   *os.File
	w   *bufio.Writer
	enc *json.Encoder
	err error // first write error; later writes are skipped
}

func newReplier(f *os.File) *replier {
	w := bufio.NewWriterSize(f, 4096)
	enc := json.NewEncoder(w)
	// Console text goes out as it is: escaping <, > and & would make
	// those bytes six times larger and send the batch down the reader's
	// slow path, for no reader that renders HTML.
	enc.SetEscapeHTML(false)
	return &replier{f: f, w: w, enc: enc}
}

// send queues one response line (flushing when the buffer fills) and
// reports whether the client is still reachable.
func (r *replier) send(resp response) bool {
	if r.err == nil {
		_ = r.f.SetWriteDeadline(time.Now().Add(writeTimeout))
		r.err = r.enc.Encode(resp)
	}
	return r.err == nil
}

// flush writes out what is queued.
func (r *replier) flush() bool {
	if r.err == nil {
		_ = r.f.SetWriteDeadline(time.Now().Add(writeTimeout))
		r.err = r.w.Flush()
	}
	return r.err == nil
}

// reply sends one response line at once.
func (r *replier) reply(resp response) bool {
	return r.send(resp) && r.flush()
}

// errorResponse turns an error into a response, classifying it.
func errorResponse(err error) response {
	r := response{Error: err.Error()}
	if errors.Is(err, ErrExited) {
		r.ErrorCode = codeExited
	}
	return r
}

// allowedSignals are the signals a client may send to the tender: the
// ones that ask or force it to stop. Others (SIGSTOP, SIGUSR1, ...) could
// wedge or confuse a tender and are refused.
var allowedSignals = map[int]bool{
	int(unix.SIGHUP): true, int(unix.SIGINT): true, int(unix.SIGQUIT): true,
	int(unix.SIGKILL): true, int(unix.SIGTERM): true,
}

// dispatch answers one request.
func (s *server) dispatch(ctx context.Context, c *replier, req request) {
	switch req.Op {
	case "info":
		s.mu.Lock()
		info := Info{ShimPID: os.Getpid(), TenderPID: s.pid, StartedAt: s.started, Exited: s.exited}
		s.mu.Unlock()
		c.reply(response{Info: &info})
	case "wait":
		select {
		case <-s.done:
			c.reply(response{Exit: s.exit})
		case <-ctx.Done():
		}
	case "kill":
		if !allowedSignals[req.Signal] {
			c.reply(response{Error: fmt.Sprintf("signal %d not allowed (allowed: 1 HUP, 2 INT, 3 QUIT, 9 KILL, 15 TERM)", req.Signal), ErrorCode: codeBadRequest})
			return
		}
		if err := s.signal(syscall.Signal(req.Signal)); err != nil {
			c.reply(errorResponse(err))
			return
		}
		c.reply(response{OK: true})
	case "stats":
		st, err := s.stats()
		if err != nil {
			c.reply(errorResponse(err))
			return
		}
		c.reply(response{Stats: &st})
	case "console":
		s.console(ctx, c, req)
	default:
		c.reply(response{Error: fmt.Sprintf("unknown op %q", req.Op), ErrorCode: codeBadRequest})
	}
}

// console streams history and, with follow, new lines.
func (s *server) console(ctx context.Context, c *replier, req request) {
	var since time.Time
	if req.Since != "" {
		var err error
		if since, err = time.Parse(time.RFC3339Nano, req.Since); err != nil {
			c.reply(response{Error: "bad since: " + err.Error(), ErrorCode: codeBadRequest})
			return
		}
	}
	if req.Count < 0 {
		c.reply(response{Error: fmt.Sprintf("count must not be negative, got %d", req.Count), ErrorCode: codeBadRequest})
		return
	}
	// send delivers lines (and, in batches, the count of lines lost
	// before them) and reports whether the client is still reachable;
	// responses are flushed only once the follower has caught up.
	send := func(lines []Line, dropped uint64) bool {
		if req.Batch {
			if len(lines) == 0 && dropped == 0 {
				return true
			}
			return c.send(response{Batch: encodeBatch(lines, dropped)})
		}
		for i := range lines {
			if !c.send(response{Line: &lines[i]}) {
				return false
			}
		}
		return true
	}
	if !req.Follow {
		lines, _ := s.ring.history(since, req.Count)
		for len(lines) > 0 {
			n := chunkLen(lines)
			if !send(lines[:n], 0) {
				return
			}
			lines = lines[n:]
		}
		c.reply(response{End: true})
		return
	}
	hist, cur := s.ring.follow(since, req.Count)
	defer s.ring.unfollow(cur)
	for len(hist) > 0 {
		n := chunkLen(hist)
		if !send(hist[:n], 0) {
			return
		}
		hist = hist[n:]
	}
	for {
		lines, dropped, more, changed, closed := s.ring.read(cur)
		if !send(lines, dropped) {
			return
		}
		if more {
			continue
		}
		if !c.flush() {
			return
		}
		if closed {
			c.reply(response{End: true})
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// chunkLen is how many of lines (at least one) go into one batch: at most
// batchLines, and no more than batchBytes of text unless the first line
// alone is longer.
func chunkLen(lines []Line) int {
	size := 0
	for i := range lines {
		if i == batchLines || (i > 0 && size+len(lines[i].Text) > batchBytes) {
			return i
		}
		size += len(lines[i].Text)
	}
	return len(lines)
}
