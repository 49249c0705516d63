package shim

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors returned by Client, so that a plugin can tell a VM that
// ended normally from one whose supervisor vanished.
var (
	// ErrShimLost reports that the shim is not reachable and left no
	// exit.json behind (it was killed or crashed), so the tender's fate is
	// unknown.
	ErrShimLost = errors.New("shim lost: no socket and no exit record")
	// ErrExited reports a request that needs a running tender (kill,
	// stats) made after the tender exited.
	ErrExited = errors.New("tender has exited")
)

// Names of the files the shim keeps in its directory. They are exported so
// that plugins can clean up or inspect a VM directory without guessing.
const (
	// SocketName is the shim's control socket.
	SocketName = "shim.sock"
	// ShimFile records the shim and tender pids and the tender's argv.
	ShimFile = "shim.json"
	// ConsoleFile holds the console ring at exit, one Line per line.
	ConsoleFile = "console.jsonl"
	// ExitFile holds the Exit record; it is written last.
	ExitFile = "exit.json"
	// LogFile receives the shim's own diagnostics (set up by Launch).
	LogFile = "shim.log"
	// LockFile is locked (flock) by whoever launches a shim in the
	// directory and then by the shim, for as long as it runs.
	LockFile = "shim.lock"
)

// MaxSocketPath is the longest socket path the kernel accepts in a
// sockaddr_un (108 bytes including the terminating NUL). Launch and the
// shim refuse a directory whose socket path would be longer, because the
// kernel would otherwise fail with an unhelpful error.
const MaxSocketPath = 107

// Defaults of the console ring, used when Config leaves a bound at zero.
const (
	// DefaultConsoleLines is the number of console lines kept.
	DefaultConsoleLines = 1000
	// DefaultConsoleBytes bounds the console text kept (line overhead
	// not counted).
	DefaultConsoleBytes = 1 << 20
	// DefaultLineMax is the longest console line kept whole, in bytes.
	DefaultLineMax = 4096
	// MaxLineMax is the largest line-max accepted, so that one line always
	// fits the buffers readers of console.jsonl and the socket use.
	MaxLineMax = 1 << 20
)

// Exit is how a tender ended, as recorded by its shim in exit.json and
// returned by Wait.
type Exit struct {
	// Code is the exit status when the tender exited normally, -1 when a
	// signal killed it (as os.ProcessState.ExitCode reports).
	Code int `json:"code"`
	// Signal is the number of the signal that killed the tender, 0 when it
	// exited normally.
	Signal int `json:"signal"`
	// StartedAt is when the shim started the tender.
	StartedAt time.Time `json:"started_at"`
	// ExitedAt is when the shim noticed the tender's exit.
	ExitedAt time.Time `json:"exited_at"`
	// TenderPID is the pid the tender had.
	TenderPID int `json:"tender_pid"`
	// Rusage is the tender's resource usage from wait4.
	Rusage Rusage `json:"rusage"`
}

// Rusage is the resource usage of an exited tender (and of its reaped
// descendants), as reported by wait4.
type Rusage struct {
	// UtimeNS and StimeNS are user and system CPU time.
	UtimeNS int64 `json:"utime_ns"`
	StimeNS int64 `json:"stime_ns"`
	// MaxRSSBytes is the peak resident memory of the tender.
	MaxRSSBytes int64 `json:"maxrss_bytes"`
	// Minflt and Majflt count page faults without and with I/O.
	Minflt int64 `json:"minflt"`
	Majflt int64 `json:"majflt"`
	// Nvcsw and Nivcsw count voluntary and involuntary context switches.
	Nvcsw  int64 `json:"nvcsw"`
	Nivcsw int64 `json:"nivcsw"`
}

// Line is one console line of a tender.
type Line struct {
	// Time is when the first byte of the line was read, strictly
	// increasing within one shim.
	Time time.Time `json:"time"`
	// Text is the line without its newline (and without a trailing
	// carriage return).
	Text string `json:"text"`
	// Truncated is set when the line was longer than the shim's line-max
	// and its tail was dropped.
	Truncated bool `json:"truncated"`
}

// Stats is a sample of a running tender's resource usage, read from
// /proc/PID/{stat,statm,status}. CPU times are converted from clock ticks
// assuming USER_HZ is 100, which holds on every Linux architecture Petrel
// runs on.
type Stats struct {
	// TenderPID is the process sampled.
	TenderPID int `json:"tender_pid"`
	// UtimeNS and StimeNS are user and system CPU time so far.
	UtimeNS int64 `json:"utime_ns"`
	StimeNS int64 `json:"stime_ns"`
	// RSSBytes and VSizeBytes are resident and virtual memory.
	RSSBytes   int64 `json:"rss_bytes"`
	VSizeBytes int64 `json:"vsize_bytes"`
	// Minflt and Majflt count page faults without and with I/O.
	Minflt int64 `json:"minflt"`
	Majflt int64 `json:"majflt"`
	// Threads is the thread count of the tender and the processes below it.
	Threads int64 `json:"threads"`
	// Nvcsw and Nivcsw count voluntary and involuntary context switches
	// of the tender's main thread and of the processes below it.
	Nvcsw  int64 `json:"nvcsw"`
	Nivcsw int64 `json:"nivcsw"`
	// StartedAt is the tender's start time according to the kernel. The
	// kernel gives it in clock ticks since boot and the boot time in whole
	// seconds, so it is accurate to about a second; Exit.StartedAt and
	// Info.StartedAt are the precise values.
	StartedAt time.Time `json:"started_at"`
	// ShimRSSBytes is the resident memory of the shim itself, so that the
	// cost of supervision is visible.
	ShimRSSBytes int64 `json:"shim_rss_bytes"`
}

// Info identifies a shim and its tender.
type Info struct {
	// ShimPID and TenderPID identify the two processes.
	ShimPID   int `json:"shim_pid"`
	TenderPID int `json:"tender_pid"`
	// StartedAt is when the shim started the tender.
	StartedAt time.Time `json:"started_at"`
	// Exited is set once the tender has exited (its exit record may
	// still be being written; Wait returns it).
	Exited bool `json:"exited"`
}

// shimRecord is the content of shim.json.
type shimRecord struct {
	ShimPID   int       `json:"shim_pid"`
	TenderPID int       `json:"tender_pid"`
	StartedAt time.Time `json:"started_at"`
	Argv      []string  `json:"argv"`
}

// request is one client request on the socket.
type request struct {
	Op     string `json:"op"`
	Signal int    `json:"signal,omitempty"`
	Since  string `json:"since,omitempty"`
	Count  int    `json:"count,omitempty"`
	Follow bool   `json:"follow,omitempty"`
	// Batch asks for console lines packed into batch responses, with
	// the lines a lagging follower lost counted there; a shim that
	// predates it ignores it and sends one line per response.
	Batch bool `json:"batch,omitempty"`
}

// Error codes in responses.
const (
	codeExited     = "exited"
	codeBadRequest = "bad_request"
)

// response is one line sent by the shim. Exactly one group of fields is set;
// the embedded Info flattens an info answer into the top level.
type response struct {
	*Info
	Exit      *Exit  `json:"exit,omitempty"`
	OK        bool   `json:"ok,omitempty"`
	Stats     *Stats `json:"stats,omitempty"`
	Line      *Line  `json:"line,omitempty"`
	Batch     *batch `json:"batch,omitempty"`
	End       bool   `json:"end,omitempty"`
	Error     string `json:"error,omitempty"`
	ErrorCode string `json:"error_code,omitempty"`
}

// readyReport is the line written to the readiness pipe.
type readyReport struct {
	TenderPID int       `json:"tender_pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	Error     string    `json:"error,omitempty"`
}

// Batch is a run of console lines delivered together, oldest first.
type Batch struct {
	// Dropped counts the lines the reader lost just before Lines because
	// it fell too far behind the tender's output; they are gone.
	Dropped uint64
	// Lines are the lines that follow, in order.
	Lines []Line
}

// batch is the wire form of a Batch: one JSON object for many lines, so
// that a busy console costs a few responses per read of the tender's
// output rather than one per line, and times are small numbers.
type batch struct {
	// Dropped is Batch.Dropped.
	Dropped uint64 `json:"dropped,omitempty"`
	// N is the number of lines.
	N int `json:"n"`
	// Start is the time of the first line, in unix nanoseconds.
	Start int64 `json:"t,omitempty"`
	// Deltas are the nanoseconds from each line to the next (N-1 values).
	Deltas []int64 `json:"d,omitempty"`
	// Text is the lines' texts joined by newlines (no text contains one).
	Text string `json:"x,omitempty"`
	// Truncated lists the indexes of the lines that were cut.
	Truncated []int `json:"tr,omitempty"`
}

// encodeBatch packs lines (none of which contains a newline) and the
// number of lines lost before them.
func encodeBatch(lines []Line, dropped uint64) *batch {
	b := &batch{Dropped: dropped, N: len(lines)}
	if len(lines) == 0 {
		return b
	}
	size := len(lines) - 1
	for i := range lines {
		size += len(lines[i].Text)
	}
	var text strings.Builder
	text.Grow(size)
	b.Start = lines[0].Time.UnixNano()
	b.Deltas = make([]int64, 0, len(lines)-1)
	prev := b.Start
	for i := range lines {
		if i > 0 {
			t := lines[i].Time.UnixNano()
			b.Deltas = append(b.Deltas, t-prev)
			prev = t
			text.WriteByte('\n')
		}
		text.WriteString(lines[i].Text)
		if lines[i].Truncated {
			b.Truncated = append(b.Truncated, i)
		}
	}
	b.Text = text.String()
	return b
}

// decode unpacks b, refusing one whose parts do not agree.
func (b *batch) decode() (Batch, error) {
	out := Batch{Dropped: b.Dropped}
	if b.N == 0 {
		if len(b.Deltas) != 0 || b.Text != "" || len(b.Truncated) != 0 {
			return Batch{}, errors.New("malformed console batch: content without lines")
		}
		return out, nil
	}
	if b.N < 0 || len(b.Deltas) != b.N-1 || strings.Count(b.Text, "\n") != b.N-1 {
		return Batch{}, fmt.Errorf("malformed console batch: %d lines, %d time deltas, %d texts", b.N, len(b.Deltas), strings.Count(b.Text, "\n")+1)
	}
	out.Lines = make([]Line, b.N)
	text, t := b.Text, b.Start
	for i := range out.Lines {
		if i > 0 {
			t += b.Deltas[i-1]
		}
		line, rest, _ := strings.Cut(text, "\n")
		out.Lines[i] = Line{Time: time.Unix(0, t).UTC(), Text: line}
		text = rest
	}
	for _, i := range b.Truncated {
		if i < 0 || i >= b.N {
			return Batch{}, fmt.Errorf("malformed console batch: truncated line %d of %d", i, b.N)
		}
		out.Lines[i].Truncated = true
	}
	return out, nil
}
