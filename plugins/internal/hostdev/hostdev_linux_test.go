//go:build linux

package hostdev

import (
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// pipeFD returns the read end of a new pipe, closed when the test ends.
func pipeFD(t *testing.T) int {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0]
}

func TestOpenNetDescriptor(t *testing.T) {
	fd := pipeFD(t)
	n, err := OpenNet(solo5.NetArg{Name: "service0", Iface: "@" + strconv.Itoa(fd), MAC: "02:00:00:00:00:2a"})
	if err != nil {
		t.Fatal(err)
	}
	if n.FD != fd || n.MAC != [6]byte{2, 0, 0, 0, 0, 0x2a} || n.MTU != DefaultMTU {
		t.Errorf("attached %+v", n)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_NONBLOCK == 0 {
		t.Errorf("descriptor is not non-blocking: flags %#x, %v", flags, err)
	}
	n, err = OpenNet(solo5.NetArg{Name: "service0", Iface: "@" + strconv.Itoa(pipeFD(t))})
	if err != nil {
		t.Fatal(err)
	}
	if n.MAC[0]&1 != 0 || n.MAC[0]&2 == 0 {
		t.Errorf("random MAC %x is not a locally administered unicast address", n.MAC)
	}
}

func TestOpenNetRefuses(t *testing.T) {
	for _, c := range []struct {
		arg  solo5.NetArg
		want string
	}{
		{solo5.NetArg{Name: "service0", Iface: "@x"}, `net device "service0": malformed descriptor "@x"`},
		{solo5.NetArg{Name: "service0", Iface: "@99999"}, "descriptor 99999"},
		{solo5.NetArg{Name: "service0", Iface: "petrel-no-such-tap"}, "interface name"},
		{solo5.NetArg{Name: "service0", Iface: "pt-nosuchtap"}, "tap interface pt-nosuchtap"},
		{solo5.NetArg{Name: "service0", Iface: "@" + strconv.Itoa(pipeFD(t)), MAC: "zz"}, `malformed MAC address "zz"`},
	} {
		if n, err := OpenNet(c.arg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %+v, %v; want an error with %q", c.arg, n, err, c.want)
		}
	}
}
