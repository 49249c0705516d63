//go:build linux

// Package netnstest gives tender and network tests a throwaway network
// namespace holding a tap device, so a guest's frames can be exchanged
// with the host side without touching the host's own interfaces.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TapName is the name of the tap device WithTap creates in its namespace.
const TapName = "tap0"

// WithTap creates a network namespace named after prefix and the test
// process, holding TapName addressed hostCIDR (such as "10.0.0.1/24") and
// up, and returns the path of the ip command and the namespace's name.
// Both are removed when the test ends. It skips the test when it is not
// run as root or when iproute2's ip command is missing.
func WithTap(t testing.TB, prefix, hostCIDR string) (ipPath, ns string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("this test needs root to create a network namespace and a tap device")
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		t.Skipf("this test needs the ip command (iproute2): %v", err)
	}
	ns = fmt.Sprintf("%s-%d", prefix, os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ipPath, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command(ipPath, "-n", ns, "link", "del", TapName).Run()
		_ = exec.Command(ipPath, "netns", "del", ns).Run()
	})
	ip("-n", ns, "tuntap", "add", TapName, "mode", "tap")
	ip("-n", ns, "addr", "add", hostCIDR, "dev", TapName)
	ip("-n", ns, "link", "set", TapName, "up")
	return ipPath, ns
}
