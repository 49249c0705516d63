//go:build !linux

package main

import "runtime"

// hostChecks stands in for the device checks, which know Linux's
// /dev/kvm, /dev/net/tun and /sys only.
func hostChecks(hostEnv) []checkResult {
	return []checkResult{warn("host", "the checks of hypervisor devices, taps and bridges exist for Linux only, not %s: the daemon check below shows whether petreld's plugins are healthy", runtime.GOOS)}
}
