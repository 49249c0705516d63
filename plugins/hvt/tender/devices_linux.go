//go:build linux

package tender

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// ioctl issues an ioctl whose argument is a pointer or an integer.
func ioctl(fd int, req uintptr, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

// openBlock opens the file backing a block device and checks that its size
// is a whole number of sectors.
func openBlock(b solo5.BlockArg) (*blockDevice, *os.File, error) {
	sector := uint64(b.SectorSize)
	if sector == 0 {
		sector = defaultSectorSize
	}
	if sector < 512 || sector&(sector-1) != 0 || sector > maxSectorSize {
		return nil, nil, fmt.Errorf("block device %q: sector size %d is not a power of two between 512 and %d", b.Name, sector, maxSectorSize)
	}
	f, err := os.OpenFile(b.Path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("block device %q: %w", b.Name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("block device %q: stat %s: %w", b.Name, b.Path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("block device %q: %s is not a regular file", b.Name, b.Path)
	}
	size := uint64(fi.Size())
	if size%sector != 0 {
		f.Close()
		return nil, nil, fmt.Errorf("block device %q: size of %s (%d bytes) is not a multiple of the sector size %d", b.Name, b.Path, size, sector)
	}
	return &blockDevice{name: b.Name, io: f, capacity: size, sectorSize: sector}, f, nil
}

// tapIO reads and writes frames on a non-blocking tap file descriptor.
type tapIO struct{ fd int }

// Read implements netIO.
func (t tapIO) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(t.fd, p)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return 0, errWouldBlock
		case err != nil:
			return 0, err
		}
		return n, nil
	}
}

// Write implements netIO.
func (t tapIO) Write(p []byte) (int, error) {
	for {
		n, err := unix.Write(t.fd, p)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n, err
	}
}

// ifReq mirrors struct ifreq as used by TUNSETIFF.
type ifReq struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

// openTap attaches to the existing tap interface iface, or to the already
// open descriptor NN when iface is "@NN" (as solo5-hvt accepts), and returns
// a non-blocking descriptor for it. Attaching only to existing interfaces
// avoids silently creating a new, unconfigured one.
func openTap(iface string) (int, error) {
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
	if _, err := ioctl(fd, unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("attach to tap interface %s: %w", iface, err)
	}
	return fd, nil
}

// openNet attaches a network device and chooses its MAC address: the one
// given, or a random locally administered unicast address.
func openNet(n solo5.NetArg) (*netDevice, int, error) {
	fd, err := openTap(n.Iface)
	if err != nil {
		return nil, -1, fmt.Errorf("net device %q: %w", n.Name, err)
	}
	dev := &netDevice{name: n.Name, io: tapIO{fd: fd}, mtu: defaultMTU}
	if n.MAC != "" {
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 {
			unix.Close(fd)
			return nil, -1, fmt.Errorf("net device %q: malformed MAC address %q", n.Name, n.MAC)
		}
		copy(dev.mac[:], hw)
	} else {
		if _, err := rand.Read(dev.mac[:]); err != nil {
			unix.Close(fd)
			return nil, -1, fmt.Errorf("net device %q: random MAC address: %w", n.Name, err)
		}
		dev.mac[0] = dev.mac[0]&^0x01 | 0x02
	}
	return dev, fd, nil
}

// pollFds waits for the network devices' descriptors with ppoll.
type pollFds struct {
	fds     []unix.PollFd
	handles []uint64
}

// poll implements poller. An interrupted wait returns an empty set, which
// the ABI allows (the guest simply polls again).
func (p *pollFds) poll(timeout time.Duration) (uint64, error) {
	for i := range p.fds {
		p.fds[i].Revents = 0
	}
	ts := unix.NsecToTimespec(int64(timeout))
	n, err := unix.Ppoll(p.fds, &ts, nil)
	if errors.Is(err, unix.EINTR) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var ready uint64
	for i := 0; i < len(p.fds) && n > 0; i++ {
		if p.fds[i].Revents&unix.POLLIN != 0 {
			ready |= 1 << p.handles[i]
		}
	}
	return ready, nil
}
