//go:build linux && amd64

package tender

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/sdktest/netnstest"
	"golang.org/x/sys/unix"
)

// Addresses used inside the test's private network namespace.
const (
	netHostAddr  = "10.213.0.1"
	netGuestAddr = "10.213.0.2"
)

// icmpChecksum is the Internet checksum of b.
func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// pingInNetns sends count ICMP echo requests to dst from inside network
// namespace ns and returns how many matching replies arrived. It runs on a
// locked OS thread that joins the namespace; the thread is never unlocked,
// so it is discarded when the goroutine ends instead of returning to the
// pool in the wrong namespace.
func pingInNetns(ns, dst string, count int) (int, error) {
	type res struct {
		n   int
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		n, err := func() (int, error) {
			fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return 0, fmt.Errorf("open namespace %s: %w", ns, err)
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				return 0, fmt.Errorf("setns %s: %w", ns, err)
			}
			s, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
			if err != nil {
				return 0, fmt.Errorf("ICMP socket: %w", err)
			}
			defer unix.Close(s)
			tv := unix.NsecToTimeval(int64(500 * time.Millisecond))
			if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				return 0, fmt.Errorf("SO_RCVTIMEO: %w", err)
			}
			var addr unix.SockaddrInet4
			copy(addr.Addr[:], parseIPv4(dst))
			id := uint16(os.Getpid())
			got := 0
			deadline := time.Now().Add(15 * time.Second)
			for seq := uint16(1); got < count && time.Now().Before(deadline); seq++ {
				payload := []byte("petrel tender ping test")
				req := make([]byte, 8+len(payload))
				req[0] = 8
				binary.BigEndian.PutUint16(req[4:], id)
				binary.BigEndian.PutUint16(req[6:], seq)
				copy(req[8:], payload)
				binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
				if err := unix.Sendto(s, req, 0, &addr); err != nil {
					return got, fmt.Errorf("send echo request: %w", err)
				}
				if waitEchoReply(s, id, seq, payload) {
					got++
				}
			}
			return got, nil
		}()
		ch <- res{n, err}
	}()
	r := <-ch
	return r.n, r.err
}

// waitEchoReply reads from raw ICMP socket s until the reply to (id, seq)
// carrying payload arrives or a read times out.
func waitEchoReply(s int, id, seq uint16, payload []byte) bool {
	buf := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false
		}
		pkt := buf[:n]
		if len(pkt) < 20 {
			continue
		}
		ihl := int(pkt[0]&0xf) * 4
		if len(pkt) < ihl+8 {
			continue
		}
		icmp := pkt[ihl:]
		if icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id &&
			binary.BigEndian.Uint16(icmp[6:]) == seq && bytes.Equal(icmp[8:], payload) &&
			icmpChecksum(icmp) == 0 {
			return true
		}
	}
}

// parseIPv4 converts a dotted quad into 4 bytes.
func parseIPv4(s string) []byte {
	var a [4]byte
	fmt.Sscanf(s, "%d.%d.%d.%d", &a[0], &a[1], &a[2], &a[3])
	return a[:]
}

// TestNet boots the net guest on a tap device inside a private network
// namespace, pings it from that namespace, then stops it with SIGTERM while
// it waits in POLL.
func TestNet(t *testing.T) {
	netGuest := guest(t, "net")
	_, ns := netnstest.WithTap(t, "petrel-tender-test", netHostAddr+"/24")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0],
		"--mem=16", "--net:service0=tap0", "--net-mac:service0=02:00:5e:00:53:01", "--", netGuest, netGuestAddr)
	cmd.Env = append(os.Environ(), "PETREL_TENDER_TEST_MAIN=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const pings = 3
	got, err := pingInNetns(ns, netGuestAddr, pings)
	if err != nil {
		t.Errorf("ping: %v", err)
	}
	if got != pings {
		t.Errorf("%d of %d echo requests answered", got, pings)
	}
	// ip netns exec runs the tender in its own process (it execs), so the
	// signal reaches the tender directly.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	out := stdout.String()
	for _, want := range []string{
		"mac 02:00:5e:00:53:01 mtu 1500, answering for " + netGuestAddr,
		"ARP request for " + netGuestAddr + " from " + netHostAddr,
		"ICMP echo request from " + netHostAddr,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("guest console lacks %q", want)
		}
	}
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(stderr.String(), "Exiting on signal 15") {
		t.Errorf("after SIGTERM: exit %d, stderr %q", cmd.ProcessState.ExitCode(), stderr.String())
	}
	if t.Failed() {
		t.Logf("guest console:\n%s\nstderr:\n%s", out, stderr.String())
	}
}
