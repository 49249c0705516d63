package tender

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

func TestBuildManifest(t *testing.T) {
	devs := []solo5.Device{{Name: "storage", Type: solo5.DeviceBlock}, {Name: "service0", Type: solo5.DeviceNet}}
	mac := [6]byte{0x02, 1, 2, 3, 4, 5}
	att := map[string]attachment{
		"storage":  {block: &blockDevice{capacity: 1 << 20, sectorSize: 4096}, fd: 7},
		"service0": {net: &netDevice{mac: mac, mtu: 1500}, fd: 9},
	}
	b, err := buildManifest(devs, att)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(b) != mftHeaderSize+3*mftEntrySize || le.Uint32(b) != 1 || le.Uint32(b[4:]) != 3 {
		t.Fatalf("manifest header: len %d version %d entries %d", len(b), le.Uint32(b), le.Uint32(b[4:]))
	}
	entry := func(i int) []byte { return b[mftHeaderSize+i*mftEntrySize:][:mftEntrySize] }
	if le.Uint32(entry(0)[mftTypeOffset:]) != mftReservedFirst {
		t.Errorf("entry 0 is not the reserved entry")
	}
	blk := entry(1)
	if string(blk[:8]) != "storage\x00" || le.Uint32(blk[mftTypeOffset:]) != 1 ||
		le.Uint64(blk[72:]) != 1<<20 || le.Uint16(blk[80:]) != 4096 ||
		le.Uint32(blk[mftHostfdOffset:]) != 7 || blk[mftAttachedOff] != 1 {
		t.Errorf("block entry wrong: % x", blk)
	}
	nic := entry(2)
	if string(nic[:9]) != "service0\x00" || le.Uint32(nic[mftTypeOffset:]) != 2 ||
		!bytes.Equal(nic[72:78], mac[:]) || le.Uint16(nic[78:]) != 1500 ||
		le.Uint32(nic[mftHostfdOffset:]) != 9 || nic[mftAttachedOff] != 1 {
		t.Errorf("net entry wrong: % x", nic)
	}
}

func TestBuildManifestMissingDevice(t *testing.T) {
	devs := []solo5.Device{{Name: "service0", Type: solo5.DeviceNet}}
	for name, att := range map[string]map[string]attachment{
		"missing":    {},
		"wrong type": {"service0": {block: &blockDevice{sectorSize: 512}}},
	} {
		_, err := buildManifest(devs, att)
		if err == nil || !strings.Contains(err.Error(), `"service0"`) {
			t.Errorf("%s: error %v does not name the device", name, err)
		}
	}
}

func TestParseArgs(t *testing.T) {
	a, err := parseArgs([]string{"--mem=64", "--block:storage=/d", "img", "x", "--y"})
	if err != nil {
		t.Fatal(err)
	}
	if a.MemMB != 64 || a.Image != "img" || len(a.Args) != 2 || a.Args[1] != "--y" ||
		len(a.Blocks) != 1 || a.Blocks[0].Path != "/d" {
		t.Errorf("parseArgs without -- = %+v", a)
	}
	a, err = parseArgs([]string{"--net:service0=tap0", "--net-mac:service0=02:00:00:00:00:01", "--", "img", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Image != "img" || len(a.Nets) != 1 || a.Nets[0].MAC != "02:00:00:00:00:01" || a.Nets[0].Iface != "tap0" {
		t.Errorf("parseArgs with -- = %+v", a)
	}
	for _, bad := range [][]string{nil, {"--mem=x", "img"}, {"--bogus", "img"}, {"--"}} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("parseArgs(%q) accepted", bad)
		}
	}
}
