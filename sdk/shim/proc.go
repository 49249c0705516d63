package shim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// userHZ is the unit of the clock-tick fields of /proc/PID/stat. The kernel
// exports it as 100 to user space on every architecture Petrel supports.
const userHZ = 100

// nsPerTick converts clock ticks to nanoseconds.
const nsPerTick = int64(time.Second) / userHZ

// ReadStats samples a running VM's statistics from /proc without waking
// its shim, so that collecting statistics of many VMs costs little: the
// tender's and the shim's pids come from shim.json in dir. It returns
// ErrExited once the tender has exited (exit.json exists, or the pid no
// longer names a child of the shim, which also guards against pid reuse)
// and ErrShimLost when dir holds no shim record.
func ReadStats(dir string) (Stats, error) {
	rec, err := readShimRecord(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("%w: %v", ErrShimLost, err)
	}
	if _, err := os.Stat(filepath.Join(dir, ExitFile)); err == nil {
		return Stats{}, ErrExited
	}
	st, err := statsOf(rec.TenderPID, rec.ShimPID, "/proc/"+strconv.Itoa(rec.ShimPID)+"/statm")
	if errors.Is(err, errNotChild) {
		return Stats{}, ErrExited
	}
	if err != nil {
		return Stats{}, err
	}
	return st, nil
}

// errNotChild is statsOf's answer when the tender pid no longer names a
// live child of the shim: the tender exited (and perhaps its pid was
// reused).
var errNotChild = errors.New("tender is no longer the shim's child")

// readStats samples /proc for pid from inside the shim. The caller
// guarantees pid still names the tender (not yet reaped).
func readStats(pid int) (Stats, error) { return statsOf(pid, 0, "/proc/self/statm") }

// statsOf samples /proc for the tender pid and every live process below
// it, and the shim's memory from shimStatm (its /proc statm file). With
// shim > 0, the tender must be a live child of that pid, or statsOf
// returns errNotChild. A tender may run its guest in a child process
// (Petrel's built-in spt tender does: the guest is a single-threaded,
// sandboxed child of the tender), so the VM's CPU time, memory, faults,
// threads and context switches are the sums over that process tree;
// StartedAt is the tender's. Each process costs three small reads (stat,
// status and its children), made by procReader without os.File.
func statsOf(pid, shim int, shimStatm string) (Stats, error) {
	r := procReader{buf: make([]byte, 4096)}
	ps, err := r.stat(pid)
	if err != nil {
		if shim > 0 {
			return Stats{}, errNotChild
		}
		return Stats{TenderPID: pid}, err
	}
	if shim > 0 && (ps.ppid != shim || ps.state == 'Z' || ps.state == 'X') {
		return Stats{}, errNotChild
	}
	st, err := r.processStats(pid, ps)
	if err != nil {
		return st, err
	}
	st.TenderPID = pid
	if boot, berr := bootTime(); berr == nil {
		st.StartedAt = boot.Add(time.Duration(ps.startTicks * nsPerTick)).UTC()
	}
	for _, child := range r.descendants(pid, ps) {
		c, err := r.processStats(child.pid, child.stat)
		if err != nil {
			continue // exited meanwhile: its figures are the tender's now
		}
		st.UtimeNS += c.UtimeNS
		st.StimeNS += c.StimeNS
		st.RSSBytes += c.RSSBytes
		st.VSizeBytes += c.VSizeBytes
		st.Minflt += c.Minflt
		st.Majflt += c.Majflt
		st.Threads += c.Threads
		st.Nvcsw += c.Nvcsw
		st.Nivcsw += c.Nivcsw
	}
	if st.ShimRSSBytes, err = r.resident(shimStatm); err != nil {
		return st, err
	}
	return st, nil
}

// maxDescendants bounds the process tree statsOf walks below a tender, so
// that a guest cannot make statistics collection expensive.
const maxDescendants = 64

// procReader reads small /proc files into one buffer it reuses, with
// open, read and close alone: no os.File, and so no poller registration,
// fcntl or finalizer for each of the many files a collection reads.
// What it returns is valid until its next read.
type procReader struct{ buf []byte }

// read returns the content of the file at path.
func (r *procReader) read(path string) ([]byte, error) {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read stats: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer syscall.Close(fd)
	n := 0
	for {
		if n == len(r.buf) {
			r.buf = append(r.buf, make([]byte, len(r.buf))...)
		}
		m, err := syscall.Read(fd, r.buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read stats: %w", &os.PathError{Op: "read", Path: path, Err: err})
		}
		if m <= 0 {
			return r.buf[:n], nil
		}
		n += m
	}
}

// child is a process below a tender, with its parsed stat.
type child struct {
	pid  int
	stat procStat
}

// descendants lists the live processes below pid, whose stat is ps, from
// the children files of its threads (/proc/PID/task/TID/children),
// breadth first. A single-threaded process (the spt tender and its guest
// are) has one such file, read without listing the task directory. A
// kernel without those files yields none.
func (r *procReader) descendants(pid int, ps procStat) []child {
	var out []child
	queue := []child{{pid, ps}}
	for len(queue) > 0 && len(out) < maxDescendants {
		p := queue[0]
		queue = queue[1:]
		base := "/proc/" + strconv.Itoa(p.pid) + "/task/"
		tasks := []string{strconv.Itoa(p.pid)}
		if p.stat.threads != 1 {
			entries, err := os.ReadDir(base)
			if err != nil {
				continue
			}
			tasks = tasks[:0]
			for _, t := range entries {
				tasks = append(tasks, t.Name())
			}
		}
		var pids []int
		for _, t := range tasks {
			data, err := r.read(base + t + "/children")
			if err != nil {
				continue
			}
			for _, f := range bytes.Fields(data) {
				if c, err := parseDecimal(f); err == nil {
					pids = append(pids, int(c))
				}
			}
		}
		for _, c := range pids {
			if len(out) >= maxDescendants {
				break
			}
			cps, err := r.stat(c)
			if err != nil {
				continue // exited meanwhile
			}
			out = append(out, child{c, cps})
			queue = append(queue, child{c, cps})
		}
	}
	return out
}

// procStat holds the fields of /proc/PID/stat that statistics use.
type procStat struct {
	state          byte
	ppid           int
	minflt, majflt int64
	utime, stime   int64 // clock ticks
	threads        int64
	startTicks     int64 // clock ticks since boot
	vsizeBytes     int64
}

// stat reads and parses /proc/PID/stat.
func (r *procReader) stat(pid int) (procStat, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	data, err := r.read(path)
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(path, data)
}

// parseProcStat parses the content of a /proc/PID/stat file read from
// path. The command name (field 2) is in parentheses and may contain
// spaces and parentheses; fields after the last ')' are plain numbers.
func parseProcStat(path string, data []byte) (procStat, error) {
	var ps procStat
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return ps, fmt.Errorf("parse %s: no command name", path)
	}
	rest := data[i+1:]
	field := 2
	for len(rest) > 0 && field < 23 {
		rest = bytes.TrimLeft(rest, " ")
		end := bytes.IndexAny(rest, " \n")
		if end < 0 {
			end = len(rest)
		}
		tok := rest[:end]
		rest = rest[end:]
		if len(tok) == 0 {
			break
		}
		field++
		if field == 3 {
			ps.state = tok[0]
			continue
		}
		var dst *int64
		switch field {
		case 10:
			dst = &ps.minflt
		case 12:
			dst = &ps.majflt
		case 14:
			dst = &ps.utime
		case 15:
			dst = &ps.stime
		case 20:
			dst = &ps.threads
		case 22:
			dst = &ps.startTicks
		case 23:
			dst = &ps.vsizeBytes
		case 4:
			v, err := parseDecimal(tok)
			if err != nil {
				return ps, fmt.Errorf("parse %s field %d: %w", path, field, err)
			}
			ps.ppid = int(v)
			continue
		default:
			continue
		}
		v, err := parseDecimal(tok)
		if err != nil {
			return ps, fmt.Errorf("parse %s field %d: %w", path, field, err)
		}
		*dst = v
	}
	if field < 23 {
		return ps, fmt.Errorf("parse %s: %d fields", path, field)
	}
	return ps, nil
}

// parseDecimal parses a possibly negative decimal integer.
func parseDecimal(b []byte) (int64, error) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, fmt.Errorf("bad number %q", b)
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad number %q", b)
		}
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, nil
}

// processStats turns one process's parsed stat into Stats, adding its
// resident memory and context switches from /proc/PID/status (whose
// VmRSS the kernel sums exactly, unlike the rss field of stat).
func (r *procReader) processStats(pid int, ps procStat) (Stats, error) {
	st := Stats{TenderPID: pid,
		Minflt: ps.minflt, Majflt: ps.majflt,
		UtimeNS: ps.utime * nsPerTick, StimeNS: ps.stime * nsPerTick,
		Threads: ps.threads, VSizeBytes: ps.vsizeBytes}
	data, err := r.read("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return st, err
	}
	st.RSSBytes = statusField(data, "VmRSS:") * 1024
	st.Nvcsw = statusField(data, "voluntary_ctxt_switches:")
	st.Nivcsw = statusField(data, "nonvoluntary_ctxt_switches:")
	return st, nil
}

// statusField is the number after key at the start of a line of a
// /proc/PID/status file, or 0.
func statusField(data []byte, key string) int64 {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if v, ok := bytes.CutPrefix(line, []byte(key)); ok {
			v = bytes.TrimSpace(v)
			if i := bytes.IndexByte(v, ' '); i >= 0 {
				v = v[:i] // the unit (kB)
			}
			n, _ := parseDecimal(v)
			return n
		}
	}
	return 0
}

// pageSize is the unit of /proc/PID/statm.
var pageSize = os.Getpagesize()

// resident is the resident set size from a /proc/PID/statm file.
func (r *procReader) resident(statm string) (int64, error) {
	data, err := r.read(statm)
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(data)
	if len(f) < 2 {
		return 0, fmt.Errorf("parse %s: %d fields", statm, len(f))
	}
	pages, err := parseDecimal(f[1])
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", statm, err)
	}
	return pages * int64(pageSize), nil
}

// readStatus returns the numeric fields of a /proc/PID/status file; sizes
// given in kB are converted to bytes. Non-numeric fields are skipped.
func readStatus(path string) (map[string]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read stats: %w", err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		parts := strings.Fields(val)
		if len(parts) == 0 {
			continue
		}
		v, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil {
			continue
		}
		if len(parts) == 2 && parts[1] == "kB" {
			v *= 1024
		}
		out[key] = v
	}
	return out, nil
}

// bootTime is the system boot time, read from /proc/stat once: it does
// not change, and /proc/stat is long on a host with many CPUs.
var bootTime = sync.OnceValues(readBootTime)

// readBootTime reads the system boot time from /proc/stat.
func readBootTime() (time.Time, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return time.Time{}, fmt.Errorf("read boot time: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("parse /proc/stat btime: %w", err)
			}
			return time.Unix(secs, 0), nil
		}
	}
	if err := sc.Err(); err != nil {
		return time.Time{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	return time.Time{}, fmt.Errorf("no btime in /proc/stat")
}
