package shim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// maxResponse bounds one response line read by the client; console lines
// are at most line-max bytes before JSON escaping.
const maxResponse = 8 << 20

// aliveTimeout bounds the info request made by Alive.
const aliveTimeout = time.Second

// Client talks to the shim serving one directory. It holds no connection:
// every call opens its own, so a Client can be kept across shim restarts and
// used concurrently.
type Client struct {
	dir string
}

// Dial returns a client for the shim serving dir. It does not connect; use
// Alive to probe.
func Dial(dir string) *Client { return &Client{dir: dir} }

// socket is the path of the shim's socket.
func (c *Client) socket() string { return filepath.Join(c.dir, SocketName) }

// errGone marks a shim that is not reachable (no socket, nobody listening,
// or the connection broke before the answer was complete).
var errGone = errors.New("shim not reachable")

// call sends req and passes every response line to fn until fn returns
// done or an error. Errors reported by the shim are returned as errors
// (ErrExited for a tender that has exited); an unreachable shim yields an
// error wrapping errGone.
func (c *Client) call(ctx context.Context, req request, fn func(response) (done bool, err error)) error {
	sock := c.socket()
	conn, err := dialUnix(ctx, sock)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("connect %s: %w: %w", sock, errGone, err)
		}
		return fmt.Errorf("connect %s: %w", sock, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	if _, err := conn.Write(append(data, '\n')); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("send %s request to %s: %w: %w", req.Op, sock, errGone, err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 4096), maxResponse)
	for sc.Scan() {
		var r response
		if err := decodeResponse(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("parse %s response from %s: %w", req.Op, sock, err)
		}
		if r.Error != "" {
			if r.ErrorCode == codeExited {
				return ErrExited
			}
			return fmt.Errorf("shim %s: %s: %s", c.dir, req.Op, r.Error)
		}
		done, err := fn(r)
		if err != nil || done {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	err = sc.Err()
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %s response from %s: %w: %w", req.Op, sock, errGone, err)
}

// Info identifies the shim and its tender. When the shim has gone after
// recording the exit, the answer is rebuilt from its files (ShimPID is then
// 0 if shim.json is unreadable); without them it returns ErrShimLost.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var info Info
	err := c.call(ctx, request{Op: "info"}, func(r response) (bool, error) {
		if r.Info == nil {
			return true, fmt.Errorf("shim %s: info: unexpected response", c.dir)
		}
		info = *r.Info
		return true, nil
	})
	if errors.Is(err, errGone) {
		ex, ferr := c.exitFromFile(err)
		if ferr != nil {
			return Info{}, ferr
		}
		info = Info{TenderPID: ex.TenderPID, StartedAt: ex.StartedAt, Exited: true}
		if rec, rerr := readShimRecord(c.dir); rerr == nil {
			info.ShimPID = rec.ShimPID
		}
		return info, nil
	}
	return info, err
}

// Wait blocks until the tender exits (or ctx ends) and returns how it
// ended. If the shim is gone, the exit is read from exit.json; if that is
// missing too, the error wraps ErrShimLost.
func (c *Client) Wait(ctx context.Context) (Exit, error) {
	var ex Exit
	err := c.call(ctx, request{Op: "wait"}, func(r response) (bool, error) {
		if r.Exit == nil {
			return true, fmt.Errorf("shim %s: wait: unexpected response", c.dir)
		}
		ex = *r.Exit
		return true, nil
	})
	if errors.Is(err, errGone) {
		fe, ferr := c.exitFromFile(err)
		if ferr != nil {
			return Exit{}, ferr
		}
		return *fe, nil
	}
	return ex, err
}

// Kill sends sig to the tender. Only SIGHUP, SIGINT, SIGQUIT, SIGKILL and
// SIGTERM are accepted by the shim. It returns ErrExited when the tender
// has already exited and an error wrapping ErrShimLost when the shim is
// gone without a record.
func (c *Client) Kill(ctx context.Context, sig syscall.Signal) error {
	err := c.call(ctx, request{Op: "kill", Signal: int(sig)}, func(r response) (bool, error) {
		if !r.OK {
			return true, fmt.Errorf("shim %s: kill: unexpected response", c.dir)
		}
		return true, nil
	})
	if errors.Is(err, errGone) {
		if _, ferr := c.exitFromFile(err); ferr != nil {
			return ferr
		}
		return ErrExited
	}
	return err
}

// Stats samples the running tender's resource usage. It returns ErrExited
// once the tender has exited and an error wrapping ErrShimLost when the
// shim is gone without a record.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := c.call(ctx, request{Op: "stats"}, func(r response) (bool, error) {
		if r.Stats == nil {
			return true, fmt.Errorf("shim %s: stats: unexpected response", c.dir)
		}
		st = *r.Stats
		return true, nil
	})
	if errors.Is(err, errGone) {
		if _, ferr := c.exitFromFile(err); ferr != nil {
			return Stats{}, ferr
		}
		return Stats{}, ErrExited
	}
	return st, err
}

// Console calls fn for each console line at or after since (zero: no
// bound), only the newest count of them (0: all), oldest first. With follow
// it then keeps calling fn for new lines until the tender exits or ctx
// ends. An error from fn stops the stream and is returned. Lines a slow
// follower loses are skipped silently; ConsoleBatches counts them.
//
// If the shim is gone, lines are served from console.jsonl (follow then
// ends at once), provided the shim recorded the exit; otherwise the error
// wraps ErrShimLost. If the shim goes away in the middle of a stream, the
// rest is served from console.jsonl in the same way (or ErrShimLost is
// returned after the lines already delivered).
func (c *Client) Console(ctx context.Context, since time.Time, count int, follow bool, fn func(Line) error) error {
	return c.ConsoleBatches(ctx, since, count, follow, func(b Batch) error {
		for _, l := range b.Lines {
			if err := fn(l); err != nil {
				return err
			}
		}
		return nil
	})
}

// ConsoleBatches is Console delivering many lines per call of fn, as the
// shim hands them out (a busy console costs a few calls per read of the
// tender's output rather than one per line), and telling a follower that
// fell too far behind the tender how many lines it lost (Batch.Dropped).
// The tender's output never waits for a follower. A shim that predates
// batches is served one line per call.
func (c *Client) ConsoleBatches(ctx context.Context, since time.Time, count int, follow bool, fn func(Batch) error) error {
	if count < 0 {
		return fmt.Errorf("console: count must not be negative, got %d", count)
	}
	req := request{Op: "console", Count: count, Follow: follow, Batch: true}
	if !since.IsZero() {
		req.Since = since.Format(time.RFC3339Nano)
	}
	var last time.Time // time of the last line delivered, zero if none
	err := c.call(ctx, req, func(r response) (bool, error) {
		return c.consoleResponse(r, &last, fn)
	})
	if !errors.Is(err, errGone) {
		return err
	}
	return c.consoleFromFile(err, since, count, last, fn)
}

// consoleResponse handles one response to a console request: it passes
// the lines to fn, noting the time of the last one in last, and reports
// whether the stream is over.
func (c *Client) consoleResponse(r response, last *time.Time, fn func(Batch) error) (bool, error) {
	switch {
	case r.End:
		return true, nil
	case r.Batch != nil:
		b, err := r.Batch.decode()
		if err != nil {
			return true, fmt.Errorf("shim %s: console: %w", c.dir, err)
		}
		if n := len(b.Lines); n > 0 {
			*last = b.Lines[n-1].Time
		}
		return false, fn(b)
	case r.Line != nil:
		*last = r.Line.Time
		return false, fn(Batch{Lines: []Line{*r.Line}})
	default:
		return true, fmt.Errorf("shim %s: console: unexpected response", c.dir)
	}
}

// consoleFromFile serves the rest of a console request (since, count)
// once the shim is unreachable (connErr said how): from console.jsonl,
// after the line of time last when some lines were delivered, provided
// the shim recorded the exit; otherwise the error wraps ErrShimLost.
func (c *Client) consoleFromFile(connErr error, since time.Time, count int, last time.Time, fn func(Batch) error) error {
	if _, ferr := c.exitFromFile(connErr); ferr != nil {
		return ferr
	}
	lines, ferr := ReadConsole(c.dir)
	if ferr != nil {
		return fmt.Errorf("console of %s: %w", c.dir, ferr)
	}
	lines = selectLines(lines, since, count)
	if !last.IsZero() {
		// The stream broke after some lines: deliver only the rest.
		lines = selectLines(lines, last.Add(time.Nanosecond), 0)
	}
	for len(lines) > 0 {
		n := chunkLen(lines)
		if err := fn(Batch{Lines: lines[:n]}); err != nil {
			return err
		}
		lines = lines[n:]
	}
	return nil
}

// selectLines applies the since and count filters of a console request.
func selectLines(lines []Line, since time.Time, count int) []Line {
	start := 0
	if !since.IsZero() {
		for start < len(lines) && lines[start].Time.Before(since) {
			start++
		}
	}
	if count > 0 && len(lines)-start > count {
		start = len(lines) - count
	}
	return lines[start:]
}

// exitFromFile is the fallback once the shim is unreachable: the exit
// record if the shim left one, otherwise an error wrapping ErrShimLost
// (and the connection error that revealed it).
func (c *Client) exitFromFile(connErr error) (*Exit, error) {
	ex, err := ReadExit(c.dir)
	if err == nil {
		return ex, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (%s): %w", ErrShimLost, c.dir, connErr)
	}
	return nil, err
}

// Alive reports whether a shim answers on dir's socket.
func Alive(dir string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), aliveTimeout)
	defer cancel()
	err := Dial(dir).call(ctx, request{Op: "info"}, func(response) (bool, error) { return true, nil })
	return err == nil
}
