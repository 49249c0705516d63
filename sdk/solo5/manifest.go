package solo5

import (
	"encoding/binary"
	"fmt"
)

// Offsets within struct mft_entry (mft_abi.h) of the fields a tender fills
// in when it attaches a device.
const (
	mftUnionOff    = 72 // u.block_basic / u.net_basic
	mftHostfdOff   = 88 // b.hostfd
	mftAttachedOff = 96 // attached
)

// MaxManifestSize is the size of the largest manifest a tender hands its
// guest: the header and MaxManifestEntries entries. Tenders reserve this
// much guest memory for it.
const MaxManifestSize = mftHeaderSize + MaxManifestEntries*mftEntrySize

// MaxBlockSize is the largest block size the 16-bit block_size field of a
// manifest entry can carry.
const MaxBlockSize = 1 << 15

// Attachment is what a tender attached to one declared device, as the guest
// learns it from its copy of the manifest.
type Attachment struct {
	// Type must be the type the manifest declares for the device.
	Type DeviceType
	// HostFD is the tender's descriptor for the device: the guest uses it
	// directly on spt, and it is informational on hvt.
	HostFD int
	// Capacity and BlockSize describe a block device, in bytes.
	Capacity, BlockSize uint64
	// MAC and MTU describe a network device.
	MAC [6]byte
	MTU uint64
}

// EncodeManifest returns the guest's copy of the manifest declaring devs
// (struct mft, as Read decoded it from the image) with every entry marked
// attached and its parameters filled in from att, keyed by device name. A
// device's handle is its index in the result, with the reserved entry at
// index 0, so handle i is devs[i-1]. It fails naming the first declared
// device that has no attachment of its type, so that a guest never starts
// with a device it declared but cannot use.
func EncodeManifest(devs []Device, att map[string]Attachment) ([]byte, error) {
	count := len(devs) + 1
	if count > MaxManifestEntries {
		return nil, fmt.Errorf("manifest declares %d devices, at most %d are supported", len(devs), MaxManifestEntries-1)
	}
	le := binary.LittleEndian
	b := make([]byte, mftHeaderSize+count*mftEntrySize)
	le.PutUint32(b[0:], mftVersion)
	le.PutUint32(b[4:], uint32(count))
	le.PutUint32(b[mftHeaderSize+mftTypeOff:], uint32(DeviceReservedFirst))
	for i, d := range devs {
		e := b[mftHeaderSize+(i+1)*mftEntrySize:][:mftEntrySize]
		if len(d.Name) >= mftNameSize {
			return nil, fmt.Errorf("device name %q is too long", d.Name)
		}
		copy(e, d.Name)
		le.PutUint32(e[mftTypeOff:], uint32(d.Type))
		a, ok := att[d.Name]
		if !ok || a.Type != d.Type {
			return nil, fmt.Errorf("device %q of type %s is declared in the manifest but not attached (use --%s:%s=...)", d.Name, d.Type, d.Type, d.Name)
		}
		switch d.Type {
		case DeviceBlock:
			if a.BlockSize == 0 || a.BlockSize > MaxBlockSize {
				return nil, fmt.Errorf("block device %q: block size %d does not fit the manifest (1 to %d)", d.Name, a.BlockSize, MaxBlockSize)
			}
			le.PutUint64(e[mftUnionOff:], a.Capacity)
			le.PutUint16(e[mftUnionOff+8:], uint16(a.BlockSize))
		case DeviceNet:
			if a.MTU > 0xffff {
				return nil, fmt.Errorf("net device %q: MTU %d does not fit the manifest", d.Name, a.MTU)
			}
			copy(e[mftUnionOff:], a.MAC[:])
			le.PutUint16(e[mftUnionOff+6:], uint16(a.MTU))
		default:
			return nil, fmt.Errorf("device %q has unknown type %s", d.Name, d.Type)
		}
		le.PutUint32(e[mftHostfdOff:], uint32(int32(a.HostFD)))
		e[mftAttachedOff] = 1
	}
	return b, nil
}
