//go:build linux && amd64

package tender

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/sdktest/netnstest"
)

// Addresses used inside the test's private network namespace.
const (
	netHostAddr  = "10.213.1.1"
	netGuestAddr = "10.213.1.2"
)

// TestNet runs the net guest on a tap in a throwaway network namespace and
// pings it from there; while the guest waits for frames, its process holds
// the tap and nothing else beyond the console, epoll set and timerfd.
func TestNet(t *testing.T) {
	netGuest := guest(t, "net.spt")
	ipPath, ns := netnstest.WithTap(t, "petrel-spt-test", netHostAddr+"/24")
	pingPath, err := exec.LookPath("ping")
	if err != nil {
		t.Skipf("the net test needs ping (iputils-ping): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// ip netns exec runs the tender in the namespace, where tap0 is.
	cmd := exec.CommandContext(ctx, ipPath, "netns", "exec", ns, tenderPath(t), "tender", "--mem=16",
		"--net:service0=tap0", "--net-mac:service0=02:00:00:00:02:01", "--", netGuest, netGuestAddr, "3")
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stdout.String(), "answering for") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	// ip netns exec runs the tender in its own process or, in batch mode,
	// in a child: the guest process is the one without children.
	tender := cmd.Process.Pid
	child := waitChild(t, tender)
	if grandchild := childOf(child); grandchild != 0 {
		tender, child = child, grandchild
	}
	checkSandbox(t, child, map[int]string{tapFD(t, child): "/dev/net/tun"})
	checkGuestMaps(t, child, 16<<20)
	checkWaiter(t, tender)
	out, err := exec.CommandContext(ctx, ipPath, "netns", "exec", ns, pingPath, "-c", "3", "-i", "0.2", "-W", "2", netGuestAddr).CombinedOutput()
	if err != nil {
		t.Errorf("ping %s in %s: %v\n%s", netGuestAddr, ns, err, out)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tender: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"mac 02:00:00:00:02:01 mtu 1500", "ARP request for " + netGuestAddr, "ICMP echo request from " + netHostAddr, "answered 3 echo requests"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("console lacks %q:\n%s", want, stdout.String())
		}
	}
}

// lockedBuffer is a bytes.Buffer that a command writes while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tapFD returns the descriptor of pid that refers to /dev/net/tun.
func tapFD(t *testing.T, pid int) int {
	t.Helper()
	for fd, target := range fdTargets(t, pid) {
		if target == "/dev/net/tun" {
			return fd
		}
	}
	t.Fatalf("process %d holds no tap", pid)
	return 0
}
