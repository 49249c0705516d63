package solo5

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestEncodeManifest(t *testing.T) {
	devs := []Device{{Name: "storage", Type: DeviceBlock}, {Name: "service0", Type: DeviceNet}}
	mac := [6]byte{0x02, 1, 2, 3, 4, 5}
	att := map[string]Attachment{
		"storage":  {Type: DeviceBlock, Capacity: 1 << 20, BlockSize: 4096, HostFD: 7},
		"service0": {Type: DeviceNet, MAC: mac, MTU: 1500, HostFD: 9},
	}
	b, err := EncodeManifest(devs, att)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(b) != 8+3*104 || le.Uint32(b) != 1 || le.Uint32(b[4:]) != 3 {
		t.Fatalf("manifest header: len %d version %d entries %d", len(b), le.Uint32(b), le.Uint32(b[4:]))
	}
	entry := func(i int) []byte { return b[8+i*104:][:104] }
	if le.Uint32(entry(0)[68:]) != 1<<30 || entry(0)[96] != 0 {
		t.Errorf("entry 0 is not the reserved entry: % x", entry(0))
	}
	blk := entry(1)
	if string(blk[:8]) != "storage\x00" || le.Uint32(blk[68:]) != 1 ||
		le.Uint64(blk[72:]) != 1<<20 || le.Uint16(blk[80:]) != 4096 ||
		le.Uint32(blk[88:]) != 7 || blk[96] != 1 {
		t.Errorf("block entry wrong: % x", blk)
	}
	nic := entry(2)
	if string(nic[:9]) != "service0\x00" || le.Uint32(nic[68:]) != 2 ||
		!bytes.Equal(nic[72:78], mac[:]) || le.Uint16(nic[78:]) != 1500 ||
		le.Uint32(nic[88:]) != 9 || nic[96] != 1 {
		t.Errorf("net entry wrong: % x", nic)
	}
	// The encoding is what Read decodes from an image's note, apart from
	// the attachment fields.
	img, err := Build(BuildSpec{Target: TargetSPT, ABIVersion: 2, Devices: devs})
	if err != nil {
		t.Fatal(err)
	}
	im, err := Read(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := manifestDesc(im.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := EncodeManifest(im.Manifest, att)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e := plain[8+i*104:][:104]
		clear(e[72:104])
	}
	if !bytes.Equal(plain, desc[4:]) {
		t.Errorf("encoded manifest without attachments differs from the image's:\n% x\n% x", plain, desc[4:])
	}
}

func TestEncodeManifestRefuses(t *testing.T) {
	net0 := []Device{{Name: "service0", Type: DeviceNet}}
	for name, c := range map[string]struct {
		devs []Device
		att  map[string]Attachment
		want string
	}{
		"missing":      {net0, map[string]Attachment{}, `device "service0" of type net is declared in the manifest but not attached`},
		"wrong type":   {net0, map[string]Attachment{"service0": {Type: DeviceBlock, BlockSize: 512}}, `"service0"`},
		"block size 0": {[]Device{{"d", DeviceBlock}}, map[string]Attachment{"d": {Type: DeviceBlock}}, "block size 0"},
		"block size":   {[]Device{{"d", DeviceBlock}}, map[string]Attachment{"d": {Type: DeviceBlock, BlockSize: 1 << 16}}, "block size 65536"},
		"mtu":          {net0, map[string]Attachment{"service0": {Type: DeviceNet, MTU: 1 << 16}}, "MTU 65536"},
		"too many":     {make([]Device, MaxManifestEntries), nil, "at most 63"},
	} {
		_, err := EncodeManifest(c.devs, c.att)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", name, err, c.want)
		}
	}
}
