package shim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	if ppid, err := parentOf(rec.TenderPID); err != nil || ppid != rec.ShimPID {
		return Stats{}, ErrExited
	}
	st, err := statsOf(rec.TenderPID, "/proc/"+strconv.Itoa(rec.ShimPID)+"/status")
	if err != nil {
		return Stats{}, err
	}
	return st, nil
}

// parentOf reads a process's parent pid.
func parentOf(pid int) (int, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d is gone", pid)
	}
	return strconv.Atoi(f[1])
}

// readStats samples /proc for pid from inside the shim. The caller
// guarantees pid still names the tender (not yet reaped).
func readStats(pid int) (Stats, error) { return statsOf(pid, "/proc/self/status") }

// statsOf samples /proc for the tender pid and every live process below
// it, and the shim's memory from shimStatus. A tender may run its guest
// in a child process (Petrel's built-in spt tender does: the guest is a
// single-threaded, sandboxed child of the tender), so the VM's CPU time,
// memory, faults, threads and context switches are the sums over that
// process tree; StartedAt is the tender's.
func statsOf(pid int, shimStatus string) (Stats, error) {
	st, startTicks, err := processStats(pid)
	if err != nil {
		return st, err
	}
	if boot, berr := bootTime(); berr == nil {
		st.StartedAt = boot.Add(time.Duration(startTicks * nsPerTick)).UTC()
	}
	for _, child := range descendants(pid) {
		c, _, err := processStats(child)
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
	self, err := readStatus(shimStatus)
	if err != nil {
		return st, err
	}
	st.ShimRSSBytes = self["VmRSS"]
	return st, nil
}

// maxDescendants bounds the process tree statsOf walks below a tender, so
// that a guest cannot make statistics collection expensive.
const maxDescendants = 64

// descendants lists the live processes below pid, from the children
// files of its threads (/proc/PID/task/TID/children), breadth first. A
// kernel without those files yields none.
func descendants(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < maxDescendants {
		p := queue[0]
		queue = queue[1:]
		tasks, err := os.ReadDir("/proc/" + strconv.Itoa(p) + "/task")
		if err != nil {
			continue
		}
		for _, t := range tasks {
			data, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/task/" + t.Name() + "/children")
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(data)) {
				if c, err := strconv.Atoi(f); err == nil && len(out) < maxDescendants {
					out = append(out, c)
					queue = append(queue, c)
				}
			}
		}
	}
	return out
}

// processStats samples /proc for one process; it returns its start time
// as /proc gives it, in clock ticks since boot.
func processStats(pid int) (Stats, int64, error) {
	st := Stats{TenderPID: pid}
	base := "/proc/" + strconv.Itoa(pid)

	data, err := os.ReadFile(base + "/stat")
	if err != nil {
		return st, 0, fmt.Errorf("read stats: %w", err)
	}
	// The command name (field 2) is in parentheses and may contain spaces
	// and parentheses; fields after the last ')' are plain numbers.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return st, 0, fmt.Errorf("parse %s/stat: no command name", base)
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is stat field 3 (state); stat field n is fields[n-3].
	if len(fields) < 22 {
		return st, 0, fmt.Errorf("parse %s/stat: %d fields", base, len(fields)+2)
	}
	num := func(field int) int64 {
		v, perr := strconv.ParseInt(fields[field-3], 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("parse %s/stat field %d: %w", base, field, perr)
		}
		return v
	}
	st.Minflt = num(10)
	st.Majflt = num(12)
	st.UtimeNS = num(14) * nsPerTick
	st.StimeNS = num(15) * nsPerTick
	st.Threads = num(20)
	startTicks := num(22)
	st.VSizeBytes = num(23)
	if err != nil {
		return st, 0, err
	}

	data, err = os.ReadFile(base + "/statm")
	if err != nil {
		return st, 0, fmt.Errorf("read stats: %w", err)
	}
	sm := strings.Fields(string(data))
	if len(sm) < 2 {
		return st, 0, fmt.Errorf("parse %s/statm: %d fields", base, len(sm))
	}
	pages, err := strconv.ParseInt(sm[1], 10, 64)
	if err != nil {
		return st, 0, fmt.Errorf("parse %s/statm: %w", base, err)
	}
	st.RSSBytes = pages * int64(os.Getpagesize())

	status, err := readStatus(base + "/status")
	if err != nil {
		return st, 0, err
	}
	st.Nvcsw = status["voluntary_ctxt_switches"]
	st.Nivcsw = status["nonvoluntary_ctxt_switches"]
	return st, startTicks, nil
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

// bootTime reads the system boot time from /proc/stat.
func bootTime() (time.Time, error) {
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
