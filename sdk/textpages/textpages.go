// Package textpages lets a long-running Petrel process give back the
// pages of its own executable that it mapped while starting and no longer
// uses. A Go binary's text, read-only data and pclntab are mapped from
// the file; on Linux with large page-cache folios a process soon has
// nearly all of them resident (12–15 MB for petreld and each plugin),
// although after start-up it runs a fraction of that code. Release drops
// those mappings; the pages stay in the page cache, shared and
// reclaimable, and whatever the process still uses is mapped again by an
// ordinary minor fault.
package textpages

import "time"

// ReleaseAfter calls Release once, after d, when start-up work (plugin
// handshake, configuration, recovery) is done. The timer is its own: it
// fires once and holds nothing afterwards.
func ReleaseAfter(d time.Duration) {
	time.AfterFunc(d, func() { _, _ = Release() })
}
