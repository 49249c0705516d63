//go:build linux

package hostdev

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ifReq mirrors struct ifreq as used by TUNSETIFF.
type ifReq struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

// OpenTap attaches to the existing tap interface iface, or to the already
// open descriptor NN when iface is "@NN" (as the Solo5 tenders accept),
// and returns a non-blocking descriptor for it. It attaches only to
// existing interfaces, so a typo never silently creates a new,
// unconfigured one.
func OpenTap(iface string) (int, error) {
	if s, ok := strings.CutPrefix(iface, "@"); ok {
		fd, err := strconv.Atoi(s)
		if err != nil || fd < 0 {
			return -1, fmt.Errorf("malformed descriptor %q", iface)
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			return -1, fmt.Errorf("descriptor %d: %w", fd, err)
		}
		return fd, nil
	}
	if len(iface) >= unix.IFNAMSIZ {
		return -1, fmt.Errorf("interface name %q is too long", iface)
	}
	if _, err := net.InterfaceByName(iface); err != nil {
		return -1, fmt.Errorf("tap interface %s: %w", iface, err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var req ifReq
	copy(req.name[:], iface)
	req.flags = unix.IFF_TAP | unix.IFF_NO_PI
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); errno != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("attach to tap interface %s: %w", iface, errno)
	}
	return fd, nil
}

// closeFD closes a descriptor OpenTap returned.
func closeFD(fd int) { unix.Close(fd) }
