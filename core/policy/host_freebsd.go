package policy

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ifconfigPath is FreeBSD's ifconfig(8), which lists interface groups.
const ifconfigPath = "/sbin/ifconfig"

// ifconfigTimeout bounds the ifconfig run so a wedged tool cannot hang
// daemon start-up.
const ifconfigTimeout = 10 * time.Second

// hostCPUs lists CPUs 0 to hw.ncpu-1, capped at MaxCPUID. FreeBSD's
// cpuset(2) mask is not read yet, so a daemon confined by a cpuset still
// offers every CPU.
func hostCPUs() ([]int, error) {
	n, err := unix.SysctlUint32("hw.ncpu")
	if err != nil {
		return nil, fmt.Errorf("host policy: sysctl hw.ncpu: %w", err)
	}
	var cpus []int
	for id := 0; id < int(n) && id <= MaxCPUID; id++ {
		cpus = append(cpus, id)
	}
	return cpus, nil
}

// hostMemoryBytes returns the physical memory of the host (hw.physmem).
func hostMemoryBytes() (uint64, error) {
	mem, err := unix.SysctlUint64("hw.physmem")
	if err != nil {
		return 0, fmt.Errorf("host policy: sysctl hw.physmem: %w", err)
	}
	return mem, nil
}

// freeBytes returns the space free to unprivileged users on the
// filesystem holding dir. FreeBSD reports a negative count when the root
// reserve is in use; that is no free space, not a huge amount.
func freeBytes(dir string) (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, fmt.Errorf("host policy: statfs %s: %w", dir, err)
	}
	if fs.Bavail < 0 {
		return 0, nil
	}
	return uint64(fs.Bavail) * fs.Bsize, nil
}

// hostBridges lists the members of the "bridge" interface group, which
// every if_bridge interface joins whatever its name. ifconfig prints
// nothing when there are no bridges.
func hostBridges() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ifconfigTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, ifconfigPath, "-g", "bridge").Output()
	if err != nil {
		return nil, fmt.Errorf("host policy: list bridges: %s -g bridge: %w", ifconfigPath, err)
	}
	return bridgeList(strings.Fields(string(out))), nil
}
