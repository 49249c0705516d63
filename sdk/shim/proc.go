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
// StartedAt is the tender's.
func statsOf(pid, shim int, shimStatm string) (Stats, error) {
	ps, err := readProcStat(pid)
	if err != nil {
		if shim > 0 {
			return Stats{}, errNotChild
		}
		return Stats{TenderPID: pid}, err
	}
	if shim > 0 && (ps.ppid != shim || ps.state == 'Z' || ps.state == 'X') {
		return Stats{}, errNotChild
	}
	st, err := processStats(pid, ps)
	if err != nil {
		return st, err
	}
	if boot, berr := bootTime(); berr == nil {
		st.StartedAt = boot.Add(time.Duration(ps.startTicks * nsPerTick)).UTC()
	}
	for _, child := range descendants(pid, ps.threads) {
		cps, err := readProcStat(child)
		if err != nil {
			continue // exited meanwhile: its figures are the tender's now
		}
		c, err := processStats(child, cps)
		if err != nil {
			continue
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
	if st.ShimRSSBytes, err = residentBytes(shimStatm); err != nil {
		return st, err
	}
	return st, nil
}

// maxDescendants bounds the process tree statsOf walks below a tender, so
// that a guest cannot make statistics collection expensive.
const maxDescendants = 64

// descendants lists the live processes below pid, which has threads
// threads, from the children files of its threads
// (/proc/PID/task/TID/children), breadth first. A single-threaded
// process (the spt tender and its guest are) has one such file, read
// without listing the task directory. A kernel without those files yields
// none.
func descendants(pid int, threads int64) []int {
	var out []int
	type proc struct {
		pid     int
		threads int64
	}
	queue := []proc{{pid, threads}}
	for len(queue) > 0 && len(out) < maxDescendants {
		p := queue[0]
		queue = queue[1:]
		base := "/proc/" + strconv.Itoa(p.pid) + "/task/"
		var tasks []string
		if p.threads == 1 {
			tasks = []string{strconv.Itoa(p.pid)}
		} else {
			entries, err := os.ReadDir(base)
			if err != nil {
				continue
			}
			for _, t := range entries {
				tasks = append(tasks, t.Name())
			}
		}
		for _, t := range tasks {
			data, err := os.ReadFile(base + t + "/children")
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(data)) {
				c, err := strconv.Atoi(f)
				if err != nil || len(out) >= maxDescendants {
					continue
				}
				out = append(out, c)
				// A child's thread count is read only to choose how to
				// list its children; 0 (unknown) lists its task directory.
				var ct int64
				if cps, err := readProcStat(c); err == nil {
					ct = cps.threads
				}
				queue = append(queue, proc{c, ct})
			}
		}
	}
	return out
}

// procStat holds the fields of /proc/PID/stat that statistics use.
type procStat struct {
	state                byte
	ppid                 int
	minflt, majflt       int64
	utime, stime         int64 // clock ticks
	threads              int64
	startTicks           int64 // clock ticks since boot
	vsizeBytes, rssPages int64
}

// readProcStat reads /proc/PID/stat once and parses it without
// allocating per field.
func readProcStat(pid int) (procStat, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	data, err := os.ReadFile(path)
	if err != nil {
		return procStat{}, fmt.Errorf("read stats: %w", err)
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
// resident memory from /proc/PID/statm and its context switches from
// /proc/PID/status.
func processStats(pid int, ps procStat) (Stats, error) {
	st := Stats{TenderPID: pid,
		Minflt: ps.minflt, Majflt: ps.majflt,
		UtimeNS: ps.utime * nsPerTick, StimeNS: ps.stime * nsPerTick,
		Threads: ps.threads, VSizeBytes: ps.vsizeBytes}
	base := "/proc/" + strconv.Itoa(pid)
	// statm, not the rss field of stat: the kernel sums its per-CPU
	// counters exactly for statm only.
	rss, err := residentBytes(base + "/statm")
	if err != nil {
		return st, err
	}
	st.RSSBytes = rss
	data, err := os.ReadFile(base + "/status")
	if err != nil {
		return st, fmt.Errorf("read stats: %w", err)
	}
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
			n, _ := parseDecimal(bytes.TrimSpace(v))
			return n
		}
	}
	return 0
}

// pageSize is the unit of /proc/PID/statm.
var pageSize = os.Getpagesize()

// residentBytes is the resident set size from a /proc/PID/statm file.
func residentBytes(statm string) (int64, error) {
	data, err := os.ReadFile(statm)
	if err != nil {
		return 0, fmt.Errorf("read stats: %w", err)
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
