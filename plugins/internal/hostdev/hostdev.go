// Package hostdev opens the host side of Solo5 devices: the files that back
// block devices and the tap interfaces that back network devices.
//
// Petrel's built-in tenders (hvt on KVM, spt in a seccomp sandbox) attach
// devices from the same command line and must refuse the same mistakes
// with the same messages, so they open them here rather than each on its
// own.
package hostdev

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// DefaultSectorSize is the block size of a block device when
// --block-sector-size is not given, as in the Solo5 tenders.
const DefaultSectorSize = 512

// DefaultMTU is the MTU reported for every network device; taps are
// created with the MTU of the bridge they join, which Petrel keeps at 1500.
const DefaultMTU = 1500

// Block is an opened block device file.
type Block struct {
	// File is open for reading and writing.
	File *os.File
	// Capacity is the file's size in bytes, a whole number of sectors.
	Capacity uint64
	// SectorSize is the block size the guest must read and write in.
	SectorSize uint64
}

// OpenBlock opens the regular file backing block device b for reading and
// writing and checks that its size is a whole number of sectors, so the
// guest can use all of it and nothing beyond it.
func OpenBlock(b solo5.BlockArg) (*Block, error) {
	sector := uint64(b.SectorSize)
	if sector == 0 {
		sector = DefaultSectorSize
	}
	if sector < 512 || sector&(sector-1) != 0 || sector > solo5.MaxBlockSize {
		return nil, fmt.Errorf("block device %q: sector size %d is not a power of two between 512 and %d", b.Name, sector, solo5.MaxBlockSize)
	}
	f, err := os.OpenFile(b.Path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("block device %q: %w", b.Name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("block device %q: stat %s: %w", b.Name, b.Path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("block device %q: %s is not a regular file", b.Name, b.Path)
	}
	size := uint64(fi.Size())
	if size%sector != 0 {
		f.Close()
		return nil, fmt.Errorf("block device %q: size of %s (%d bytes) is not a multiple of the sector size %d", b.Name, b.Path, size, sector)
	}
	return &Block{File: f, Capacity: size, SectorSize: sector}, nil
}

// Net is an attached network device.
type Net struct {
	// FD is a non-blocking descriptor of the tap interface.
	FD int
	// MAC is the guest's MAC address and MTU its MTU.
	MAC [6]byte
	MTU uint64
}

// OpenNet attaches network device n to its tap interface (see OpenTap) and
// chooses its MAC address: the one given, or a random locally administered
// unicast address, as the Solo5 tenders do.
func OpenNet(n solo5.NetArg) (*Net, error) {
	fd, err := OpenTap(n.Iface)
	if err != nil {
		return nil, fmt.Errorf("net device %q: %w", n.Name, err)
	}
	dev := &Net{FD: fd, MTU: DefaultMTU}
	if n.MAC != "" {
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 {
			closeFD(fd)
			return nil, fmt.Errorf("net device %q: malformed MAC address %q", n.Name, n.MAC)
		}
		copy(dev.MAC[:], hw)
	} else {
		if _, err := rand.Read(dev.MAC[:]); err != nil {
			closeFD(fd)
			return nil, fmt.Errorf("net device %q: random MAC address: %w", n.Name, err)
		}
		dev.MAC[0] = dev.MAC[0]&^0x01 | 0x02
	}
	return dev, nil
}
