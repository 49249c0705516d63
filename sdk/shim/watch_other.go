//go:build !linux

package shim

// watchLoop would read every follow's socket in one goroutine; this
// system has no epoll, and each follow gets a goroutine instead.
type watchLoop struct{}

// startLoop reports that there is no loop.
func startLoop(*Watcher) *watchLoop { return nil }

func (*watchLoop) wake() {}

func (*watchLoop) stop() {}
