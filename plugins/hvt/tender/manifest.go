package tender

import (
	"fmt"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// Layout of struct mft and struct mft_entry (mft_abi.h, MFT_VERSION 1).
const (
	mftVersion       = 1
	mftHeaderSize    = 8
	mftEntrySize     = 104
	mftNameSize      = 68
	mftTypeOffset    = 68
	mftUnionOffset   = 72
	mftHostfdOffset  = 88
	mftAttachedOff   = 96
	mftMaxEntries    = 64
	mftReservedFirst = 1 << 30
)

// defaultMTU is the MTU reported for every network device.
const defaultMTU = 1500

// defaultSectorSize is the block size reported for a block device when
// --block-sector-size is not given.
const defaultSectorSize = 512

// maxSectorSize is the largest sector size the 16-bit block_size field of
// the manifest can carry.
const maxSectorSize = 1 << 15

// attachment is what the tender attaches to one manifest entry.
type attachment struct {
	block *blockDevice
	net   *netDevice
	fd    int
}

// buildManifest encodes the guest's copy of the manifest declared by devs,
// with every entry marked attached and its parameters filled in from att
// (keyed by device name). The handle of a device is its manifest index, with
// the reserved entry at index 0. It fails naming the first declared device
// that has no attachment.
func buildManifest(devs []solo5.Device, att map[string]attachment) ([]byte, error) {
	count := len(devs) + 1
	if count > mftMaxEntries {
		return nil, fmt.Errorf("manifest declares %d devices, at most %d are supported", len(devs), mftMaxEntries-1)
	}
	b := make([]byte, mftHeaderSize+count*mftEntrySize)
	le.PutUint32(b[0:], mftVersion)
	le.PutUint32(b[4:], uint32(count))
	le.PutUint32(b[mftHeaderSize+mftTypeOffset:], mftReservedFirst)
	for i, d := range devs {
		e := b[mftHeaderSize+(i+1)*mftEntrySize:][:mftEntrySize]
		if len(d.Name) >= mftNameSize {
			return nil, fmt.Errorf("device name %q is too long", d.Name)
		}
		copy(e, d.Name)
		le.PutUint32(e[mftTypeOffset:], uint32(d.Type))
		a, ok := att[d.Name]
		switch {
		case d.Type == solo5.DeviceBlock && ok && a.block != nil:
			le.PutUint64(e[mftUnionOffset:], a.block.capacity)
			le.PutUint16(e[mftUnionOffset+8:], uint16(a.block.sectorSize))
		case d.Type == solo5.DeviceNet && ok && a.net != nil:
			copy(e[mftUnionOffset:], a.net.mac[:])
			le.PutUint16(e[mftUnionOffset+6:], uint16(a.net.mtu))
		default:
			return nil, fmt.Errorf("device %q of type %s is declared in the manifest but not attached (use --%s:%s=...)", d.Name, d.Type, d.Type, d.Name)
		}
		le.PutUint32(e[mftHostfdOffset:], uint32(int32(a.fd)))
		e[mftAttachedOff] = 1
	}
	return b, nil
}
