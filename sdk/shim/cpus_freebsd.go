package shim

import "errors"

// errNoPinning is returned for any CPU list on FreeBSD: the shim pins the
// tender with Linux's per-thread sched_setaffinity, and the cpuset(2)
// equivalent is not wired up yet. Failing loudly is better than running
// the VM unpinned when the caller asked for dedicated CPUs.
var errNoPinning = errors.New("CPU pinning is not supported on FreeBSD yet")

// parseCPUs rejects every CPU list; see errNoPinning.
func parseCPUs(string) ([]int, error) {
	return nil, errNoPinning
}

// startPinned starts the tender unpinned when no CPUs are requested and
// refuses otherwise; see errNoPinning.
func startPinned(start func() error, cpus []int) error {
	if len(cpus) > 0 {
		return errNoPinning
	}
	return start()
}
