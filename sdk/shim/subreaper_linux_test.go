package shim

import "golang.org/x/sys/unix"

// becomeSubreaper makes the test process the reaper of orphans in its
// subtree, so that tests can kill and reap tenders whose shim is gone.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}
