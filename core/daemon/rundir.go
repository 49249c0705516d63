package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Files in the run directory that tie it to one petreld instance.
const (
	// runLockName is locked (flock) by the petreld using the directory,
	// for as long as it runs.
	runLockName = "petreld.lock"
	// runOwnerName holds the instance id of the petreld whose VMs the
	// directory holds.
	runOwnerName = "instance"
)

// claimRunDir makes runDir this petreld's: it locks it, so that no other
// petreld uses it at the same time, and checks that the VMs it holds
// belong to this instance. VMs outlive their petreld, so a directory
// another instance left holds that instance's running VMs, which this one
// would take for orphans and remove: it is refused, unless it holds no VM
// any more. A directory from before instance ids is taken as this
// instance's. The returned function releases the lock.
func claimRunDir(runDir, instance, dataDir string) (release func(), err error) {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	lockPath := filepath.Join(runDir, runLockName)
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		holder := ""
		if b, rerr := os.ReadFile(lockPath); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("run directory %s is in use by another petreld%s; give this one its own with --run-dir", runDir, holder)
		}
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	fail := func(err error) (func(), error) {
		f.Close()
		return nil, err
	}
	ownerPath := filepath.Join(runDir, runOwnerName)
	b, err := os.ReadFile(ownerPath)
	switch {
	case err == nil && strings.TrimSpace(string(b)) == instance:
		return func() { f.Close() }, nil
	case err == nil:
		owner := strings.TrimSpace(string(b))
		if n := runsIn(filepath.Join(runDir, "vms")); n > 0 {
			return fail(fmt.Errorf("run directory %s holds %d VM runs of petreld instance %s, and this petreld (data directory %s) is instance %s: "+
				"give it a run directory of its own with --run-dir", runDir, n, owner, dataDir, instance))
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fail(fmt.Errorf("run directory: %w", err))
	}
	if err := writeOwner(runDir, instance); err != nil {
		return fail(err)
	}
	return func() { f.Close() }, nil
}

// runsIn counts the VM runtime directories under vmsDir (one directory
// per backend, one per run inside).
func runsIn(vmsDir string) int {
	backends, _ := os.ReadDir(vmsDir)
	n := 0
	for _, b := range backends {
		if !b.IsDir() {
			continue
		}
		runs, _ := os.ReadDir(filepath.Join(vmsDir, b.Name()))
		for _, r := range runs {
			if r.IsDir() {
				n++
			}
		}
	}
	return n
}

// writeOwner records instance as the run directory's owner, atomically.
func writeOwner(runDir, instance string) error {
	tmp, err := os.CreateTemp(runDir, "."+runOwnerName+"-*")
	if err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	_, err = tmp.WriteString(instance + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(runDir, runOwnerName))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("run directory: record its instance: %w", err)
	}
	return nil
}
