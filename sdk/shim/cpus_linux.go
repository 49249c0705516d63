package shim

import (
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// parseCPUs parses a CPU list such as "0,2-3" and checks that every CPU is
// one this process may run on, so that a typo fails the launch instead of
// being silently narrowed by the kernel.
func parseCPUs(s string) ([]int, error) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return nil, fmt.Errorf("read own CPU affinity: %w", err)
	}
	seen := map[int]bool{}
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("invalid CPU list %q: bad CPU id %q", s, part)
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil || last < first {
				return nil, fmt.Errorf("invalid CPU list %q: bad range %q", s, part)
			}
		}
		for c := first; c <= last; c++ {
			if c < 0 || c >= 1024 || !allowed.IsSet(c) {
				return nil, fmt.Errorf("invalid CPU list %q: CPU %d is not available (allowed: %s)", s, c, formatCPUs(&allowed))
			}
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	sort.Ints(out)
	return out, nil
}

// formatCPUs renders a CPU set as a comma-separated list for messages.
func formatCPUs(set *unix.CPUSet) string {
	var ids []string
	for c := 0; c < 1024; c++ {
		if set.IsSet(c) {
			ids = append(ids, strconv.Itoa(c))
		}
	}
	return strings.Join(ids, ",")
}

// startPinned starts cmd, pinned to cpus when there are any. Affinity is a
// per-thread attribute inherited by a forked child, so it is set on a
// dedicated, locked OS thread that then forks the tender. That thread is
// never unlocked, so the runtime never reuses a pinned thread for the
// shim's own work, and it stays parked for the shim's life, because the
// tender's parent-death signal follows the thread that forked it.
func startPinned(start func() error, cpus []int) error {
	if len(cpus) == 0 {
		return start()
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errc <- fmt.Errorf("pin to CPUs %v: %w", cpus, err)
			return
		}
		err := start()
		errc <- err
		if err == nil {
			// The tender dies with the thread that forked it (it has
			// Pdeathsig set), so this thread lives as long as the shim.
			select {}
		}
	}()
	return <-errc
}
