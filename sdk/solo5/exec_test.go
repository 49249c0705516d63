package solo5

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// execSeg describes one PT_LOAD segment for makeExec.
type execSeg struct {
	vaddr, paddr, memsz uint64
	data                []byte
	flags               elf.ProgFlag
}

// makeExec builds an executable with RawExecutable from the test's
// shorter segment descriptions.
func makeExec(entry uint64, segs []execSeg) []byte {
	raw := make([]RawSegment, len(segs))
	for i, s := range segs {
		raw[i] = RawSegment{VAddr: s.vaddr, PAddr: s.paddr, MemSize: s.memsz, Data: s.data, Flags: s.flags}
	}
	return RawExecutable(entry, raw)
}

var testLimits = LoadLimits{MinAddr: 0x100000, MaxAddr: 4 << 30}

func TestParseExecutable(t *testing.T) {
	text := bytes.Repeat([]byte{0xcc}, 100)
	data := []byte("data")
	img := makeExec(0x100010, []execSeg{
		{vaddr: 0x200000, paddr: 0x400000, memsz: 0x3000, data: data, flags: elf.PF_R | elf.PF_W},
		{vaddr: 0x100000, memsz: 100, data: text, flags: elf.PF_R | elf.PF_X},
	})
	x, err := ParseExecutable(img, testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if x.Entry != 0x100010 || len(x.Segments) != 2 || x.End() != 0x203000 {
		t.Fatalf("parsed %+v, end %#x", x, x.End())
	}
	if s := x.Segments[0]; s.Addr != 0x100000 || s.MemSize != 100 || s.FileSize != 100 || s.Flags != elf.PF_R|elf.PF_X {
		t.Errorf("text segment %+v", s)
	}
	if s := x.Segments[1]; s.Addr != 0x200000 || s.Flags != elf.PF_R|elf.PF_W {
		t.Errorf("data segment %+v", s)
	}
	phys := testLimits
	phys.Physical = true
	x, err = ParseExecutable(img, phys)
	if err != nil || x.Segments[1].Addr != 0x400000 || x.End() != 0x403000 {
		t.Fatalf("physical addresses: %+v, %v", x, err)
	}

	// Load into memory starting at 0x10000, as spt maps it.
	x, _ = ParseExecutable(img, testLimits)
	mem := bytes.Repeat([]byte{0xaa}, 0x300000-0x10000)
	if err := x.Load(img, mem, 0x10000); err != nil {
		t.Fatal(err)
	}
	at := func(a uint64) []byte { return mem[a-0x10000:] }
	if !bytes.Equal(at(0x100000)[:100], text) || !bytes.Equal(at(0x200000)[:4], data) {
		t.Errorf("segment contents not loaded")
	}
	if at(0x100000)[100] != 0xaa {
		t.Errorf("bytes after a segment's memory size were touched")
	}
	for a := uint64(0x200004); a < 0x203000; a++ {
		if at(a)[0] != 0 {
			t.Fatalf("bss byte at %#x = %#x, want 0", a, at(a)[0])
		}
	}
	if err := x.Load(img, mem[:0x200000-0x10000], 0x10000); !errors.Is(err, ErrBadExecutable) || !strings.Contains(err.Error(), "try a larger --mem") {
		t.Errorf("load into too little memory: %v", err)
	}
	if err := x.Load(img, mem, 0x180000); !errors.Is(err, ErrBadExecutable) {
		t.Errorf("load below the memory's base: %v", err)
	}
}

func TestParseExecutableRefuses(t *testing.T) {
	code := []byte{0xf4}
	rx := elf.PF_R | elf.PF_X
	good := execSeg{vaddr: 0x100000, memsz: 0x1000, data: code, flags: rx}
	truncated := makeExec(0x100000, []execSeg{good})
	truncated = truncated[:len(truncated)-1]
	phoffPastEnd := makeExec(0x100000, []execSeg{good})
	binary.LittleEndian.PutUint64(phoffPastEnd[32:], uint64(len(phoffPastEnd))-10)
	hugeOffset := makeExec(0x100000, []execSeg{good})
	binary.LittleEndian.PutUint64(hugeOffset[ehdrSize+8:], ^uint64(0)-2)
	fileBigger := makeExec(0x100000, []execSeg{{vaddr: 0x100000, memsz: 1, data: []byte{1, 2}, flags: rx}})
	wrongMachine := makeExec(0x100000, []execSeg{good})
	binary.LittleEndian.PutUint16(wrongMachine[18:], 183)
	notExec := makeExec(0x100000, []execSeg{good})
	binary.LittleEndian.PutUint16(notExec[16:], 3)
	bigEndian := makeExec(0x100000, []execSeg{good})
	bigEndian[5] = 2
	manyHeaders := makeExec(0x100000, []execSeg{good})
	binary.LittleEndian.PutUint16(manyHeaders[56:], 65)

	for _, c := range []struct {
		name, want string
		img        []byte
	}{
		{"empty", "shorter than an ELF64 header", nil},
		{"not ELF", "not an ELF file", bytes.Repeat([]byte{'x'}, 64)},
		{"big-endian", "little-endian ELF64", bigEndian},
		{"wrong machine", "machine 183", wrongMachine},
		{"shared object", "ET_EXEC", notExec},
		{"too many program headers", "65 program headers", manyHeaders},
		{"overlapping", "overlap", makeExec(0x100000, []execSeg{good, {vaddr: 0x100800, memsz: 0x1000, data: code}})},
		{"below minimum", "below the minimum load address", makeExec(0x100000, []execSeg{good, {vaddr: 0xff000, memsz: 0x10, data: code}})},
		{"beyond the largest memory", "largest guest memory (4096 MB)", makeExec(0x100000, []execSeg{good, {vaddr: 0xffffff000, memsz: 0x10, data: code}})},
		{"address overflow", "largest guest memory", makeExec(0x100000, []execSeg{good, {vaddr: 0x200000, memsz: ^uint64(0) - 0x1000, data: code}})},
		{"truncated segment", "extend past the end of the file", truncated},
		{"huge offset", "extend past the end of the file", hugeOffset},
		{"program headers past end", "program headers", phoffPastEnd},
		{"filesz > memsz", "exceeds memory size", fileBigger},
		{"entry outside", "entry point", makeExec(0x180000, []execSeg{good})},
		{"entry in data", "entry point", makeExec(0x200000, []execSeg{good, {vaddr: 0x200000, memsz: 0x10, data: code, flags: elf.PF_R}})},
		{"no program headers", "0 program headers", makeExec(0x100000, nil)},
		{"only empty segments", "no loadable segments", makeExec(0x100000, []execSeg{{vaddr: 0x100000}})},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseExecutable(c.img, testLimits)
			if !errors.Is(err, ErrBadExecutable) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v does not wrap ErrBadExecutable or lacks %q", err, c.want)
			}
		})
	}
}

func TestParseBuiltExecutable(t *testing.T) {
	img, err := Build(BuildSpec{Target: TargetSPT, ABIVersion: 2, Code: []byte{0x90, 0xf4}})
	if err != nil {
		t.Fatal(err)
	}
	x, err := ParseExecutable(img, testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if x.Entry != LoadAddress || len(x.Segments) != 1 || x.End() != LoadAddress+0x1000 {
		t.Errorf("built image parsed as %+v", x)
	}
}

// TestReadImageFile reads a file within the limit and refuses a
// directory, a missing file and a file over the limit.
func TestReadImageFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	if err := os.WriteFile(p, []byte("12345678"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadImageFile(p, 8); err != nil || string(b) != "12345678" {
		t.Fatalf("ReadImageFile within the limit = %q, %v", b, err)
	}
	for _, c := range []struct {
		path  string
		limit int64
		want  string
	}{
		{p, 7, "8 bytes is larger than any unikernel this tender loads (7 bytes)"},
		{dir, 100, "not a regular file"},
		{filepath.Join(dir, "missing"), 100, "no such file"},
	} {
		if _, err := ReadImageFile(c.path, c.limit); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadImageFile(%s, %d) = %v, want %q", c.path, c.limit, err, c.want)
		}
	}
}
