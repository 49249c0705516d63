package tender

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

func TestLowMemoryLayout(t *testing.T) {
	if bootInfoBase != 0x11000 || mftBase != 0x11028 || hostMemBase != 0x10000 || guestMinBase != 0x100000 {
		t.Fatalf("layout constants differ from spt_abi.h: boot info %#x, manifest %#x", bootInfoBase, mftBase)
	}
	devs := []solo5.Device{{Name: "storage", Type: solo5.DeviceBlock}}
	mft, err := solo5.EncodeManifest(devs, map[string]solo5.Attachment{"storage": {Type: solo5.DeviceBlock, HostFD: 9, Capacity: 4096, BlockSize: 512}})
	if err != nil {
		t.Fatal(err)
	}
	cmdline, err := solo5.GuestCmdline([]string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := lowMemory(64<<20, 0x105000, mft, cmdline, 5, 6)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(b) != 40+len(mft)+8192 {
		t.Fatalf("low memory is %d bytes", len(b))
	}
	cmdAddr := uint64(0x11028 + 8 + 2*104)
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"mem_size", le.Uint64(b[0:]), 64 << 20},
		{"kernel_end", le.Uint64(b[8:]), 0x105000},
		{"cmdline", le.Uint64(b[16:]), cmdAddr},
		{"mft", le.Uint64(b[24:]), 0x11028},
		{"epollfd", uint64(le.Uint32(b[32:])), 5},
		{"timerfd", uint64(le.Uint32(b[36:])), 6},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	at := func(addr uint64) []byte { return b[addr-bootInfoBase:] }
	if !bytes.Equal(at(0x11028)[:len(mft)], mft) {
		t.Errorf("manifest not at 0x11028")
	}
	if !bytes.Equal(at(cmdAddr)[:4], []byte("a b\x00")) {
		t.Errorf("command line at %#x = %q", cmdAddr, at(cmdAddr)[:4])
	}
	if end := bootInfoBase + uint64(len(b)); end > guestMinBase {
		t.Errorf("low memory ends at %#x, above the image", end)
	}
	// The largest manifest and command line still fit below the image.
	if bootInfoBase+40+solo5.MaxManifestSize+solo5.MaxCmdline > guestMinBase {
		t.Errorf("largest low memory does not fit below %#x", guestMinBase)
	}
	if _, err := lowMemory(64<<20, 0x105000, make([]byte, solo5.MaxManifestSize+1), cmdline, 5, 6); err == nil {
		t.Errorf("oversized manifest accepted")
	}
	if _, err := lowMemory(64<<20, 0x105000, mft, make([]byte, solo5.MaxCmdline+1), 5, 6); err == nil {
		t.Errorf("oversized command line accepted")
	}
}

// seg describes one PT_LOAD segment for makeImage.
type seg struct {
	addr, memsz uint64
	data        []byte
	flags       elf.ProgFlag
}

// makeImage builds an executable with solo5.RawExecutable from the test's
// shorter segment descriptions.
func makeImage(entry uint64, segs []seg) []byte {
	raw := make([]solo5.RawSegment, len(segs))
	for i, s := range segs {
		raw[i] = solo5.RawSegment{VAddr: s.addr, MemSize: s.memsz, Data: s.data, Flags: s.flags}
	}
	return solo5.RawExecutable(entry, raw)
}

const (
	rx = elf.PF_R | elf.PF_X
	ro = elf.PF_R
	rw = elf.PF_R | elf.PF_W
)

func TestPlanImage(t *testing.T) {
	code := []byte{0xf4}
	img := makeImage(0x100000, []seg{
		{addr: 0x100000, memsz: 0x1800, data: code, flags: rx},
		{addr: 0x102000, memsz: 0x10, data: code, flags: ro},
		{addr: 0x103000, memsz: 0x3000, data: code, flags: rw},
	})
	x, prots, err := planImage(img, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []protRange{
		{0x100000, 0x102000, protRead | protExec},
		{0x102000, 0x103000, protRead},
		{0x103000, 0x106000, protRead | protWrite},
	}
	if !reflect.DeepEqual(prots, want) || x.End() != 0x106000 || x.Entry != 0x100000 {
		t.Errorf("planned %+v, end %#x; want %+v", prots, x.End(), want)
	}
}

func TestPlanImageRefuses(t *testing.T) {
	code := []byte{0xf4}
	text := seg{addr: 0x100000, memsz: 0x1000, data: code, flags: rx}
	truncated := makeImage(0x100000, []seg{text})
	truncated = truncated[:len(truncated)-1]
	for _, c := range []struct {
		name, want string
		img        []byte
	}{
		{"writable and executable", "both writable and executable", makeImage(0x100000, []seg{{addr: 0x100000, memsz: 0x1000, data: code, flags: rx | elf.PF_W}})},
		{"overlapping", "overlap", makeImage(0x100000, []seg{text, {addr: 0x100800, memsz: 0x1000, data: code, flags: ro}})},
		{"sharing a page", "share a page", makeImage(0x100000, []seg{{addr: 0x100000, memsz: 0x800, data: code, flags: rx}, {addr: 0x100800, memsz: 0x10, data: code, flags: rw}})},
		{"below 0x100000", "below the minimum load address 0x100000", makeImage(0x100000, []seg{text, {addr: 0xff000, memsz: 0x10, data: code, flags: ro}})},
		{"in low memory", "below the minimum load address", makeImage(0x11000, []seg{{addr: 0x11000, memsz: 0x10, data: code, flags: rx}})},
		{"beyond --mem", "extends beyond guest memory (4194304 bytes); try a larger --mem", makeImage(0x100000, []seg{text, {addr: 0x3ff000, memsz: 0x2000, data: code, flags: rw}})},
		{"no stack left", "no guest memory for the stack", makeImage(0x100000, []seg{text, {addr: 0x101000, memsz: 0x2ff000, data: code, flags: rw}})},
		{"truncated", "extend past the end of the file", truncated},
		{"entry outside code", "entry point", makeImage(0x200000, []seg{text})},
		{"not ELF", "not an ELF file", bytes.Repeat([]byte("x"), 100)},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := planImage(c.img, 4<<20)
			if !errors.Is(err, solo5.ErrBadExecutable) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v does not wrap ErrBadExecutable or lacks %q", err, c.want)
			}
		})
	}
}

func TestCloseRanges(t *testing.T) {
	const open = ^uint32(0)
	for _, c := range []struct {
		keep []int
		want []fdRange
	}{
		{nil, []fdRange{{0, open}}},
		{[]int{1}, []fdRange{{0, 0}, {2, open}}},
		{[]int{0}, []fdRange{{1, open}}},
		{[]int{1, 3, 4, 9}, []fdRange{{0, 0}, {2, 2}, {5, 8}, {10, open}}},
		{[]int{9, 1, 4, 3, 4}, []fdRange{{0, 0}, {2, 2}, {5, 8}, {10, open}}},
		{[]int{0, 1, 2}, []fdRange{{3, open}}},
	} {
		if got := closeRanges(c.keep); !reflect.DeepEqual(got, c.want) {
			t.Errorf("closeRanges(%v) = %v, want %v", c.keep, got, c.want)
		}
	}
}

func TestCheckAddressSpace(t *testing.T) {
	pie, err := parseMaps([]byte(`5618c0ba4000-5618c116e000 r-xp 00000000 fe:00 9979119                    /usr/libexec/petrel/petrel-plugin-spt
c000000000-c000400000 rw-p 00000000 00:00 0 
7fdf9af5d000-7fdf9af9d000 rw-p 00000000 00:00 0 
7ffd7f4d7000-7ffd7f4f8000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(pie) != 5 || pie[0].path != "/usr/libexec/petrel/petrel-plugin-spt" || pie[1].start != 0xc000000000 || pie[0].offset != 0 {
		t.Fatalf("parsed %+v", pie)
	}
	if err := checkAddressSpace(pie, 512<<20); err != nil {
		t.Errorf("512 MB below a PIE tender: %v", err)
	}
	if err := checkAddressSpace(pie, 0xc000000000); err != nil {
		t.Errorf("memory up to the Go heap: %v", err)
	}
	err = checkAddressSpace(pie, 0xc000000000+1<<20)
	if err == nil || !strings.Contains(err.Error(), "at most 786432 MB") {
		t.Errorf("memory into the Go heap: %v", err)
	}
	nonPIE, err := parseMaps([]byte("00400000-00c00000 r-xp 00000000 fe:00 1 /tmp/petrel-plugin-spt\nc000000000-c000400000 rw-p 00000000 00:00 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = checkAddressSpace(nonPIE, 512<<20)
	if err == nil || !strings.Contains(err.Error(), "must be built with -buildmode=pie") || !strings.Contains(err.Error(), "/tmp/petrel-plugin-spt") {
		t.Errorf("non-PIE tender: %v", err)
	}
	if err := checkAddressSpace(nonPIE, 4<<20); err != nil {
		t.Errorf("guest memory below a non-PIE tender: %v", err)
	}
	for _, bad := range []string{"zzz r-xp 0 0 0\n", "1000-0fff r-xp 0 0 0\n", "1000-2000\n"} {
		if _, err := parseMaps([]byte(bad)); err == nil {
			t.Errorf("parseMaps(%q) accepted", bad)
		}
	}
}

func TestUnmapRanges(t *testing.T) {
	const top = userTop
	for _, c := range []struct {
		keep []addrRange
		want []addrRange
	}{
		{nil, []addrRange{{0, top}}},
		{[]addrRange{{0x10000, 0x2000000}}, []addrRange{{0, 0x10000}, {0x2000000, top}}},
		{
			[]addrRange{{0x7f0000001000, 0x7f0000002000}, {0x10000, 0x2000000}, {0x5600000a000, 0x5600000c000}},
			[]addrRange{{0, 0x10000}, {0x2000000, 0x5600000a000}, {0x5600000c000, 0x7f0000001000}, {0x7f0000002000, top}},
		},
		// Adjacent and overlapping ranges leave no empty gap between them.
		{[]addrRange{{0x3000, 0x5000}, {0x1000, 0x3000}, {0x4000, 0x6000}}, []addrRange{{0, 0x1000}, {0x6000, top}}},
		{[]addrRange{{0, 0x1000}, {0x2000, top}}, []addrRange{{0x1000, 0x2000}}},
	} {
		if got := unmapRanges(c.keep, top); !reflect.DeepEqual(got, c.want) {
			t.Errorf("unmapRanges(%#x) = %#x, want %#x", c.keep, got, c.want)
		}
	}
}

func TestSystemMappings(t *testing.T) {
	maps, err := parseMaps([]byte(`5618c0ba4000-5618c116e000 r-xp 00000000 fe:00 9979119                    /usr/libexec/petrel/petrel-plugin-spt
c000000000-c000400000 rw-p 00000000 00:00 0 
7f9f3c371000-7f9f3c375000 r--p 00000000 00:00 0                          [vvar]
7f9f3c375000-7f9f3c377000 r--p 00000000 00:00 0                          [vvar_vclock]
7f9f3c377000-7f9f3c379000 r-xp 00000000 00:00 0                          [vdso]
7ffd7f4d7000-7ffd7f4f8000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []addrRange{{0x7f9f3c371000, 0x7f9f3c375000}, {0x7f9f3c375000, 0x7f9f3c377000}, {0x7f9f3c377000, 0x7f9f3c379000}}
	if got := systemMappings(maps); !reflect.DeepEqual(got, want) {
		t.Errorf("systemMappings = %#x, want %#x", got, want)
	}
}
