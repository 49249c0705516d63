//go:build !linux

package shim

// onExit calls fn once process pid, an unreaped child of the caller, has
// exited, leaving it unreaped so that its pid stays reserved until fn (or
// a later wait) reaps it. It waits in a goroutine of its own.
func onExit(pid int, fn func()) {
	go func() {
		_ = waitExited(pid)
		fn()
	}()
}
