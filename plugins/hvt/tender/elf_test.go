package tender

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// testSeg describes one PT_LOAD segment for makeELF, loaded at the same
// physical and virtual address.
type testSeg struct {
	paddr, memsz uint64
	data         []byte
	exec         bool
}

// makeELF builds an executable with solo5.RawExecutable from the test's
// shorter segment descriptions.
func makeELF(entry uint64, segs []testSeg) []byte {
	raw := make([]solo5.RawSegment, len(segs))
	for i, s := range segs {
		flags := elf.PF_R
		if s.exec {
			flags |= elf.PF_X
		}
		raw[i] = solo5.RawSegment{VAddr: s.paddr, MemSize: s.memsz, Data: s.data, Flags: flags}
	}
	return solo5.RawExecutable(entry, raw)
}

func TestLoadELFFromBuild(t *testing.T) {
	code := []byte{0x90, 0x90, 0xf4, 0xeb, 0xfd}
	img, err := solo5.Build(solo5.BuildSpec{Target: solo5.TargetHVT, ABIVersion: ABIVersion, Code: code})
	if err != nil {
		t.Fatal(err)
	}
	mem := make([]byte, 4<<20)
	entry, end, err := loadELF(img, mem)
	if err != nil {
		t.Fatalf("loadELF: %v", err)
	}
	if entry != solo5.LoadAddress {
		t.Errorf("entry = %#x, want %#x", entry, solo5.LoadAddress)
	}
	if !bytes.Equal(mem[entry:entry+uint64(len(code))], code) {
		t.Errorf("code not loaded at the entry point")
	}
	if end != solo5.LoadAddress+0x1000 {
		t.Errorf("kernel end = %#x, want %#x", end, solo5.LoadAddress+0x1000)
	}
}

func TestLoadELFSegments(t *testing.T) {
	text := bytes.Repeat([]byte{0xcc}, 100)
	data := []byte("data")
	img := makeELF(0x100010, []testSeg{
		{paddr: 0x200000, memsz: 0x3000, data: data},
		{paddr: 0x100000, memsz: 100, data: text, exec: true},
	})
	mem := bytes.Repeat([]byte{0xaa}, 4<<20)
	entry, end, err := loadELF(img, mem)
	if err != nil {
		t.Fatalf("loadELF: %v", err)
	}
	if entry != 0x100010 || end != 0x203000 {
		t.Errorf("entry, end = %#x, %#x; want 0x100010, 0x203000", entry, end)
	}
	if !bytes.Equal(mem[0x100000:0x100064], text) || !bytes.Equal(mem[0x200000:0x200004], data) {
		t.Errorf("segment contents not loaded")
	}
	for i := 0x200004; i < 0x203000; i++ {
		if mem[i] != 0 {
			t.Fatalf("bss byte at %#x = %#x, want 0", i, mem[i])
		}
	}
}

func TestLoadELFRefuses(t *testing.T) {
	code := []byte{0xf4}
	good := testSeg{paddr: 0x100000, memsz: 0x1000, data: code, exec: true}
	truncated := makeELF(0x100000, []testSeg{good})
	truncated = truncated[:len(truncated)-1]
	phoffPastEnd := makeELF(0x100000, []testSeg{good})
	binary.LittleEndian.PutUint64(phoffPastEnd[32:], uint64(len(phoffPastEnd))-10)
	hugeOffset := makeELF(0x100000, []testSeg{good})
	binary.LittleEndian.PutUint64(hugeOffset[64+8:], ^uint64(0)-2)
	fileBigger := makeELF(0x100000, []testSeg{{paddr: 0x100000, memsz: 1, data: []byte{1, 2}, exec: true}})
	wrongMachine := makeELF(0x100000, []testSeg{good})
	binary.LittleEndian.PutUint16(wrongMachine[18:], 183)
	notExec := makeELF(0x100000, []testSeg{good})
	binary.LittleEndian.PutUint16(notExec[16:], 3)

	cases := []struct {
		name, want string
		img        []byte
	}{
		{"empty", "shorter than an ELF64 header", nil},
		{"not ELF", "not an ELF file", bytes.Repeat([]byte{'x'}, 64)},
		{"wrong machine", "machine 183", wrongMachine},
		{"shared object", "ET_EXEC", notExec},
		{"overlapping", "overlap", makeELF(0x100000, []testSeg{good, {paddr: 0x100800, memsz: 0x1000, data: code}})},
		{"below minimum", "below the minimum load address", makeELF(0x100000, []testSeg{good, {paddr: 0xff000, memsz: 0x10, data: code}})},
		{"beyond memory", "extends beyond guest memory", makeELF(0x100000, []testSeg{good, {paddr: 0x300000, memsz: 0x200000, data: code}})},
		{"beyond 4 GiB", "largest guest memory", makeELF(0x100000, []testSeg{good, {paddr: 0xffffff000, memsz: 0x10, data: code}})},
		{"address overflow", "largest guest memory", makeELF(0x100000, []testSeg{good, {paddr: 0x200000, memsz: ^uint64(0) - 0x1000, data: code}})},
		{"truncated segment", "extend past the end of the file", truncated},
		{"huge offset", "extend past the end of the file", hugeOffset},
		{"program headers past end", "program headers", phoffPastEnd},
		{"filesz > memsz", "exceeds memory size", fileBigger},
		{"entry outside", "entry point", makeELF(0x180000, []testSeg{good})},
		{"entry in data", "entry point", makeELF(0x200000, []testSeg{good, {paddr: 0x200000, memsz: 0x10, data: code}})},
		{"no program headers", "0 program headers", makeELF(0x100000, nil)},
		{"only empty segments", "no loadable segments", makeELF(0x100000, []testSeg{{paddr: 0x100000}})},
		{"stack space", "no guest memory for the stack", makeELF(0x100000, []testSeg{{paddr: 0x100000, memsz: 0x300000 - 0x100000, data: code, exec: true}})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem := make([]byte, 3<<20)
			_, _, err := loadELF(c.img, mem)
			if err == nil {
				t.Fatalf("loadELF accepted the image")
			}
			if !errors.Is(err, errBadELF) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not wrap errBadELF or lacks %q", err, c.want)
			}
		})
	}
}

func FuzzLoadELF(f *testing.F) {
	img, err := solo5.Build(solo5.BuildSpec{Target: solo5.TargetHVT, ABIVersion: ABIVersion})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(img)
	f.Add(makeELF(0x100000, []testSeg{{paddr: 0x100000, memsz: 0x10, data: []byte{1}, exec: true}}))
	mem := make([]byte, 2<<20+pageSize2M)
	f.Fuzz(func(t *testing.T, img []byte) {
		entry, end, err := loadELF(img, mem)
		if err == nil && (entry < guestMinBase || end > uint64(len(mem))) {
			t.Fatalf("accepted image with entry %#x end %#x", entry, end)
		}
	})
}
