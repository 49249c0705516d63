package solo5

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var le = binary.LittleEndian

var testDevices = []Device{{"service0", DeviceNet}, {"disk", DeviceBlock}, {"data_1", DeviceBlock}}

func mustBuild(t testing.TB, spec BuildSpec) []byte {
	t.Helper()
	b, err := Build(spec)
	if err != nil {
		t.Fatalf("Build(%+v): %v", spec, err)
	}
	return b
}

// defaultImage is an hvt image declaring testDevices.
func defaultImage(t testing.TB) []byte {
	return mustBuild(t, BuildSpec{Target: TargetHVT, ABIVersion: 2, Devices: testDevices})
}

// noteSegments returns the file offsets of the ABI and manifest notes and the
// indexes of their program headers in an image made by Build.
func noteSegments(t testing.TB, b []byte) (abiOff, mftOff uint64) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("debug/elf rejects built image: %v", err)
	}
	abi, mft := f.Section(abiSection), f.Section(mftSection)
	if abi == nil || mft == nil {
		t.Fatal("built image lacks note sections")
	}
	return abi.Offset, mft.Offset
}

// entryOff is the file offset of manifest entry i.
func entryOff(mftOff uint64, i int) uint64 {
	return mftOff + nhdrSize + noteNameSize + mftDescPad + mftHeaderSize + uint64(i)*mftEntrySize
}

func TestBuildReadRoundTrip(t *testing.T) {
	many := make([]Device, MaxManifestEntries-1)
	for i := range many {
		many[i] = Device{Name: "dev" + strings.Repeat("x", i), Type: DeviceType(1 + i%2)}
	}
	long := strings.Repeat("N", MaxDeviceNameLen)
	cases := []struct {
		name string
		spec BuildSpec
	}{
		{"no devices", BuildSpec{Target: TargetSPT, ABIVersion: 1}},
		{"devices", BuildSpec{Target: TargetHVT, ABIVersion: 2, Devices: testDevices}},
		{"max devices", BuildSpec{Target: TargetHVT, ABIVersion: 2, Devices: many}},
		{"longest name", BuildSpec{Target: TargetXen, ABIVersion: 3, Devices: []Device{{long, DeviceNet}}}},
		{"aarch64", BuildSpec{Target: TargetHVT, ABIVersion: 2, Machine: elf.EM_AARCH64, Devices: testDevices}},
		{"custom code", BuildSpec{Target: TargetVirtio, Code: bytes.Repeat([]byte{0x90}, 5000)}},
		{"muen", BuildSpec{Target: TargetMuen}},
		{"genode", BuildSpec{Target: TargetGenode}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := mustBuild(t, c.spec)
			im, err := Read(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			wantMachine := c.spec.Machine
			if wantMachine == 0 {
				wantMachine = elf.EM_X86_64
			}
			want := &Image{Target: c.spec.Target, ABIVersion: c.spec.ABIVersion, Machine: wantMachine, Manifest: c.spec.Devices}
			if want.Manifest == nil {
				want.Manifest = []Device{}
			}
			if !reflect.DeepEqual(im, want) {
				t.Fatalf("Read = %+v, want %+v", im, want)
			}
			path := filepath.Join(t.TempDir(), "image")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			im2, err := ReadFile(path)
			if err != nil {
				t.Fatalf("ReadFile: %v", err)
			}
			if !reflect.DeepEqual(im2, want) {
				t.Fatalf("ReadFile = %+v, want %+v", im2, want)
			}
		})
	}
}

// TestBuildIsValidELF checks Build's output with the standard library's ELF
// parser: entry point, loadable code and named note sections.
func TestBuildIsValidELF(t *testing.T) {
	code := []byte{0x0f, 0x0b, 0xf4}
	b := mustBuild(t, BuildSpec{Target: TargetHVT, ABIVersion: 2, Devices: testDevices, Code: code})
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Type != elf.ET_EXEC || f.Machine != elf.EM_X86_64 {
		t.Fatalf("header = %v %v %v %v", f.Class, f.Data, f.Type, f.Machine)
	}
	if f.Entry != LoadAddress {
		t.Fatalf("entry = %#x, want %#x", f.Entry, LoadAddress)
	}
	var loads, notes int
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			loads++
			if p.Vaddr != LoadAddress || p.Flags != elf.PF_R|elf.PF_X || p.Off%p.Align != p.Vaddr%p.Align {
				t.Fatalf("PT_LOAD = %+v", p.ProgHeader)
			}
			got := make([]byte, p.Filesz)
			if _, err := p.ReadAt(got, 0); err != nil || !bytes.Equal(got, code) {
				t.Fatalf("code = %x, %v; want %x", got, err, code)
			}
		case elf.PT_NOTE:
			notes++
		}
	}
	if loads != 1 || notes != 2 {
		t.Fatalf("%d PT_LOAD and %d PT_NOTE, want 1 and 2", loads, notes)
	}
	for _, name := range []string{abiSection, mftSection} {
		s := f.Section(name)
		if s == nil || s.Type != elf.SHT_NOTE {
			t.Fatalf("section %s = %+v", name, s)
		}
	}
	if f.Section(".text") == nil {
		t.Fatal("no .text section")
	}
}

func TestBuildErrors(t *testing.T) {
	many := make([]Device, MaxManifestEntries)
	for i := range many {
		many[i] = Device{Name: "d" + strings.Repeat("x", i), Type: DeviceNet}
	}
	cases := []struct {
		name string
		spec BuildSpec
		want string
	}{
		{"unknown target", BuildSpec{Target: 9}, "unknown target"},
		{"zero target", BuildSpec{}, "unknown target"},
		{"machine", BuildSpec{Target: TargetHVT, Machine: elf.EM_386}, "unsupported machine"},
		{"bad name", BuildSpec{Target: TargetHVT, Devices: []Device{{"a-b", DeviceNet}}}, "characters other than"},
		{"empty name", BuildSpec{Target: TargetHVT, Devices: []Device{{"", DeviceNet}}}, "empty"},
		{"long name", BuildSpec{Target: TargetHVT, Devices: []Device{{strings.Repeat("a", 68), DeviceNet}}}, "longer than 67"},
		{"duplicate", BuildSpec{Target: TargetHVT, Devices: []Device{{"a", DeviceNet}, {"a", DeviceBlock}}}, "duplicate"},
		{"type", BuildSpec{Target: TargetHVT, Devices: []Device{{"a", DeviceReservedFirst}}}, "not block or net"},
		{"too many", BuildSpec{Target: TargetHVT, Devices: many}, "at most 63"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(c.spec)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Build error = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	base := defaultImage(t)
	abiOff, mftOff := noteSegments(t, base)
	ph := func(i int) uint64 { return ehdrSize + uint64(i)*phdrSize }
	put32 := func(off uint64, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint32(b[off:], v); return b }
	}
	put16 := func(off uint64, v uint16) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint16(b[off:], v); return b }
	}
	put64 := func(off uint64, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint64(b[off:], v); return b }
	}
	setName := func(i int, name string) func([]byte) []byte {
		return func(b []byte) []byte {
			e := b[entryOff(mftOff, i):]
			clear(e[:mftNameSize])
			copy(e, name)
			return b
		}
	}
	built := func(spec BuildSpec) func([]byte) []byte {
		return func([]byte) []byte { return mustBuild(t, spec) }
	}
	raw := func(s string) func([]byte) []byte {
		return func([]byte) []byte { return []byte(s) }
	}
	truncate := func(n uint64) func([]byte) []byte {
		return func(b []byte) []byte { return b[:n] }
	}
	mftCount := mftOff + nhdrSize + noteNameSize + mftDescPad + 4

	cases := []struct {
		name   string
		mutate func([]byte) []byte
		want   error
		msg    string
	}{
		{"empty file", raw(""), ErrNotELF, "not an ELF file"},
		{"text file", raw("#!/bin/sh\necho hello\n"), ErrNotELF, "not an ELF file"},
		{"short magic", raw("\x7fEL"), ErrNotELF, "not an ELF file"},
		{"magic only", raw("\x7fELF"), ErrMalformed, "truncated"},
		{"truncated header", truncate(40), ErrMalformed, "truncated: file is 40 bytes"},
		{"elf32", func(b []byte) []byte { b[elf.EI_CLASS] = byte(elf.ELFCLASS32); return b }, ErrUnsupported, "ELFCLASS32"},
		{"big endian", func(b []byte) []byte { b[elf.EI_DATA] = byte(elf.ELFDATA2MSB); return b }, ErrUnsupported, "little-endian"},
		{"i386", put16(18, uint16(elf.EM_386)), ErrUnsupported, "machine EM_386"},
		{"riscv", put16(18, uint16(elf.EM_RISCV)), ErrUnsupported, "EM_RISCV"},
		{"ident version", func(b []byte) []byte { b[elf.EI_VERSION] = 0; return b }, ErrMalformed, "identification version 0"},
		{"elf version", put32(20, 7), ErrMalformed, "ELF version 7"},
		{"ehsize", put16(52, 52), ErrMalformed, "ELF header size 52"},
		{"phentsize", put16(54, 32), ErrMalformed, "program header entry size 32"},
		{"phnum huge", put16(56, 0xffff), ErrMalformed, "65535 program headers"},
		{"phoff past end", put64(32, 1<<62), ErrMalformed, "truncated"},
		{"phoff overflow", put64(32, ^uint64(0)-10), ErrMalformed, "truncated"},
		{"no ABI note", built(BuildSpec{NoABINote: true, Devices: testDevices}), ErrNotSolo5, "not a Solo5 unikernel: no .note.solo5.abi"},
		{"plain ELF", built(BuildSpec{NoABINote: true, NoManifest: true}), ErrNotSolo5, "no .note.solo5.abi"},
		{"no manifest", built(BuildSpec{Target: TargetHVT, NoManifest: true}), ErrMalformed, "no .note.solo5.manifest"},
		{"wrong note name", put32(abiOff, 5), ErrNotSolo5, "no .note.solo5.abi"},
		{"wrong note owner", func(b []byte) []byte { b[abiOff+nhdrSize] = 's'; return b }, ErrNotSolo5, "no .note.solo5.abi"},
		{"truncated in manifest", truncate(mftOff + 50), ErrMalformed, "truncated"},
		{"truncated in note segment", truncate(abiOff + 20), ErrMalformed, "truncated"},
		{"segment past end", put64(ph(2)+32, 1<<40), ErrMalformed, "truncated: program header 2 (PT_NOTE)"},
		{"segment offset overflow", put64(ph(1)+8, ^uint64(0)-4), ErrMalformed, "truncated"},
		{"lying namesz", put32(abiOff, 0xffffff00), ErrMalformed, "extends past the end of its 36-byte area"},
		{"lying ABI descsz", put32(abiOff+4, 0xffffffff), ErrMalformed, "extends past the end"},
		{"lying manifest descsz", put32(mftOff+4, 1<<20), ErrMalformed, "extends past the end"},
		{"short ABI descriptor", put32(abiOff+4, 8), ErrMalformed, "ABI note descriptor is 8 bytes, want 16"},
		{"short manifest descriptor", put32(mftOff+4, 8), ErrMalformed, "shorter than the 12-byte minimum"},
		{"trailing bytes in segment", func(b []byte) []byte { le.PutUint64(b[ph(1)+32:], 40); return b }, ErrMalformed, "too short for a note header"},
		{"unknown target", put32(abiOff+20, 42), ErrMalformed, "unknown ABI target 42"},
		{"zero target", put32(abiOff+20, 0), ErrMalformed, "unknown ABI target 0"},
		{"manifest version", put32(mftCount-4, 2), ErrMalformed, "unknown manifest version 2"},
		{"zero entries", put32(mftCount, 0), ErrMalformed, "no entries"},
		{"huge entry count", put32(mftCount, 0xffffffff), ErrMalformed, "4294967295 entries, more than the maximum of 64"},
		{"entries beyond descriptor", put32(mftCount, 6), ErrMalformed, "declares 6 entries (624 bytes) but its descriptor holds only 416"},
		{"entries short of descriptor", put32(mftCount, 3), ErrMalformed, "104 bytes after its 3 entries"},
		{"entry 0 not reserved", put32(entryOff(mftOff, 0)+mftTypeOff, uint32(DeviceNet)), ErrMalformed, "entry 0 has type net"},
		{"unknown device type", put32(entryOff(mftOff, 1)+mftTypeOff, 7), ErrMalformed, `entry 1 ("service0"): unknown device type 7`},
		{"reserved type later", put32(entryOff(mftOff, 2)+mftTypeOff, uint32(DeviceReservedFirst)), ErrMalformed, "only allowed for entry 0"},
		{"duplicate names", setName(2, "service0"), ErrMalformed, `entry 2: duplicate device name "service0"`},
		{"bad name", setName(1, "eth-0"), ErrMalformed, `"eth-0" contains characters other than`},
		{"space in name", setName(3, "a b"), ErrMalformed, "characters other than"},
		{"empty name", setName(1, ""), ErrMalformed, "entry 1: device name is empty"},
		{"unterminated name", setName(1, strings.Repeat("a", 68)), ErrMalformed, "entry 1: name is not NUL-terminated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mutate(bytes.Clone(base))
			im, err := Read(bytes.NewReader(b))
			if err == nil {
				t.Fatalf("Read succeeded: %+v", im)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %q does not wrap %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not contain %q", err, c.msg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q spans several lines", err)
			}
			// Without a known size, truncation must still be caught
			// (by short reads) with the same sentinel.
			_, err2 := Read(sizeless{bytes.NewReader(b)})
			if !errors.Is(err2, c.want) {
				t.Fatalf("sizeless reader: error %v does not wrap %v", err2, c.want)
			}
		})
	}
}

// sizeless hides the Size method so Read cannot learn the file size.
type sizeless struct{ r io.ReaderAt }

func (s sizeless) ReadAt(p []byte, off int64) (int, error) { return s.r.ReadAt(p, off) }

// failing returns an I/O error for reads past a point.
type failing struct {
	r     io.ReaderAt
	after int64
	err   error
}

func (f failing) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.after {
		return 0, f.err
	}
	return f.r.ReadAt(p, off)
}

func TestReadIOError(t *testing.T) {
	b := defaultImage(t)
	boom := errors.New("disk on fire")
	for _, after := range []int64{0, 10, ehdrSize + 10, 300} {
		_, err := Read(failing{bytes.NewReader(b), after, boom})
		if !errors.Is(err, boom) {
			t.Fatalf("after %d: error %v does not wrap the I/O error", after, err)
		}
		if errors.Is(err, ErrMalformed) || errors.Is(err, ErrNotELF) {
			t.Fatalf("after %d: I/O error %v reported as a format error", after, err)
		}
	}
}

func TestReadFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	path := filepath.Join(dir, "empty")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(path)
	if !errors.Is(err, ErrNotELF) || !strings.Contains(err.Error(), path) {
		t.Fatalf("empty file: %v", err)
	}
}

// TestReadSectionFallback hides the PT_NOTE headers; Read must then find the
// notes through the named sections, and fail if those are renamed.
func TestReadSectionFallback(t *testing.T) {
	b := defaultImage(t)
	for i := 1; i <= 2; i++ {
		le.PutUint32(b[ehdrSize+i*phdrSize:], 0) // PT_NULL
	}
	im, err := Read(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Read without PT_NOTE: %v", err)
	}
	if im.Target != TargetHVT || len(im.Manifest) != len(testDevices) {
		t.Fatalf("Read = %+v", im)
	}
	bad := bytes.Clone(b)
	i := bytes.Index(bad, []byte(abiSection+"\x00"))
	bad[i+1] = 'X'
	if _, err := Read(bytes.NewReader(bad)); !errors.Is(err, ErrNotSolo5) {
		t.Fatalf("renamed ABI section: %v", err)
	}
	// Only the ABI note hidden: manifest from the segment, ABI from the section.
	b2 := defaultImage(t)
	le.PutUint32(b2[ehdrSize+1*phdrSize:], 0)
	if _, err := Read(bytes.NewReader(b2)); err != nil {
		t.Fatalf("mixed lookup: %v", err)
	}
	// Hostile section headers are reported, not trusted.
	b3 := bytes.Clone(b)
	le.PutUint64(b3[40:], uint64(len(b3))-10) // e_shoff near the end
	if _, err := Read(bytes.NewReader(b3)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated section headers: %v", err)
	}
}

// segImage builds an image whose PT_NOTE segments hold arbitrary notes.
func segImage(segs ...noteSegment) []byte {
	return layoutELF(elf.EM_X86_64, segs, []byte{0xf4})
}

func manifestNote(t testing.TB, devices []Device, align int) []byte {
	desc, err := manifestDesc(devices)
	if err != nil {
		t.Fatal(err)
	}
	return encodeNote(noteName, mftNoteType, desc, align)
}

// TestReadNoteAlignment checks note walking in a segment holding several
// notes: with p_align 8 notes start on 8-byte boundaries, and the same
// bytes misread with 4-byte steps do not yield the Solo5 notes.
func TestReadNoteAlignment(t *testing.T) {
	gnu := encodeNote("GNU\x00", 5, []byte{1, 2, 3, 4}, 8) // 20 bytes padded to 24
	abi := encodeNote(noteName, abiNoteType, make([]byte, abiDescSize), 8)
	le.PutUint32(abi[nhdrSize+noteNameSize:], uint32(TargetSPT))
	var data []byte
	data = append(data, gnu...)
	data = append(data, abi...)
	data = append(data, manifestNote(t, testDevices, 8)...)

	im, err := Read(bytes.NewReader(segImage(noteSegment{name: ".note", align: 8, data: data})))
	if err != nil {
		t.Fatalf("8-aligned segment: %v", err)
	}
	if im.Target != TargetSPT || !reflect.DeepEqual(im.Manifest, testDevices) {
		t.Fatalf("Read = %+v", im)
	}
	if _, err := Read(bytes.NewReader(segImage(noteSegment{name: ".note", align: 4, data: data}))); err == nil {
		t.Fatal("8-aligned notes read with p_align 4 should not parse")
	}

	// 4-aligned notes packed together, as a linker merging sections would.
	var packed []byte
	packed = append(packed, encodeNote("GNU\x00", 5, []byte{1, 2, 3, 4}, 4)...)
	packed = append(packed, abiNote(TargetHVT, 1)...)
	packed = append(packed, manifestNote(t, nil, 4)...)
	if _, err := Read(bytes.NewReader(segImage(noteSegment{name: ".note", align: 4, data: packed}))); err != nil {
		t.Fatalf("4-aligned segment: %v", err)
	}
}

func TestReadHostileNoteSegments(t *testing.T) {
	abi := abiNote(TargetHVT, 1)
	mft := manifestNote(t, testDevices, 4)
	cases := []struct {
		name string
		segs []noteSegment
		msg  string
	}{
		{"two ABI notes", []noteSegment{{".a", 4, abi}, {".b", 4, abiNote(TargetSPT, 1)}, {".m", 4, mft}}, "more than one .note.solo5.abi"},
		{"two manifests", []noteSegment{{".a", 4, abi}, {".m", 4, mft}, {".n", 4, manifestNote(t, nil, 4)}}, "more than one .note.solo5.manifest"},
		{"oversized manifest", []noteSegment{{".a", 4, abi}, {".m", 4, encodeNote(noteName, mftNoteType, make([]byte, mftMaxDesc+104), 4)}}, "larger than the 6668 bytes of 64 entries"},
		{"many empty notes", []noteSegment{{".a", 4, abi}, {".m", 4, mft}, {".x", 4, make([]byte, nhdrSize*(maxNotes+1))}}, "more than 4096 ELF notes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(segImage(c.segs...)))
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error = %v, want ErrMalformed containing %q", err, c.msg)
			}
		})
	}

	// The same note reached through two program headers is one note.
	b := defaultImage(t)
	copy(b[ehdrSize:ehdrSize+phdrSize], b[ehdrSize+phdrSize:ehdrSize+2*phdrSize])
	if _, err := Read(bytes.NewReader(b)); err != nil {
		t.Fatalf("aliased PT_NOTE: %v", err)
	}

	// A large area of empty notes is cut off after maxNotes notes.
	area := segImage(noteSegment{".x", 4, make([]byte, 1<<16)})
	if _, err := Read(bytes.NewReader(area)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("note flood: %v", err)
	}
}

// TestReadToolchainImage links an image with the system C toolchain, laying
// out the notes the way Solo5's headers and linker scripts do, and checks
// that Read agrees with that layout.
func TestReadToolchainImage(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found; skipping the toolchain-built image test")
	}
	ld, err := exec.LookPath("ld")
	if err != nil {
		t.Skip("ld not found; skipping the toolchain-built image test")
	}
	if _, err := exec.LookPath("as"); err != nil {
		t.Skip("as not found; skipping the toolchain-built image test")
	}
	dir := t.TempDir()
	src := `#include <stdint.h>
#include <stdbool.h>
struct nhdr { uint32_t namesz, descsz, type; char name[8]; };
struct abi_info { uint32_t target, version, r0, r1; };
struct abi_note { struct nhdr h; struct abi_info i; };
const struct abi_note abi __attribute__((section(".note.solo5.abi"), aligned(4))) =
  { { 6, sizeof(struct abi_note) - sizeof(struct nhdr), 0x31494241, "Solo5" }, { 2, 7, 0, 0 } };
struct entry {
  char name[68]; uint32_t type;
  union { struct { uint64_t capacity; uint16_t block_size; } b; struct { uint8_t mac[6]; uint16_t mtu; } n; } u;
  union { int hostfd; void *data; } h;
  bool attached;
};
_Static_assert(sizeof(struct entry) == 104, "entry size");
struct mft { uint32_t version, entries; struct entry e[4]; };
struct mft_note { struct nhdr h; struct mft m; };
const struct mft_note mft __attribute__((section(".note.solo5.manifest"), aligned(4))) =
  { { 6, sizeof(struct mft_note) - sizeof(struct nhdr), 0x3154464d, "Solo5" },
    { 1, 4, { { "", 1u << 30 }, { "service0", 2 }, { "storage", 1 }, { "admin_net", 2 } } } };
void _start(void) { for (;;) __asm__ volatile("hlt"); }
`
	lds := `ENTRY(_start)
PHDRS { text PT_LOAD FLAGS(5); rodata PT_LOAD FLAGS(4); note_abi PT_NOTE; note_mft PT_NOTE; }
SECTIONS {
  . = 0x100000;
  .text : { *(.text*) } :text
  . = ALIGN(0x1000);
  .rodata : { *(.rodata*) } :rodata
  .note.solo5.abi : { *(.note.solo5.abi*) } :rodata :note_abi
  .note.solo5.manifest : { *(.note.solo5.manifest*) } :rodata :note_mft
  /DISCARD/ : { *(.comment) *(.note.GNU-stack) *(.note.gnu.property) *(.eh_frame) }
}
`
	if err := os.WriteFile(filepath.Join(dir, "u.c"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "u.lds"), []byte(lds), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run(gcc, "-O2", "-ffreestanding", "-fno-pic", "-fno-asynchronous-unwind-tables", "-c", "u.c", "-o", "u.o")
	run(ld, "-static", "-nostdlib", "-T", "u.lds", "u.o", "-o", "u.elf")
	im, err := ReadFile(filepath.Join(dir, "u.elf"))
	if err != nil {
		t.Fatalf("Read toolchain image: %v", err)
	}
	want := &Image{Target: TargetSPT, ABIVersion: 7, Machine: elf.EM_X86_64, Manifest: []Device{
		{"service0", DeviceNet}, {"storage", DeviceBlock}, {"admin_net", DeviceNet},
	}}
	if !reflect.DeepEqual(im, want) {
		t.Fatalf("Read = %+v, want %+v", im, want)
	}
	if got := im.Devices(DeviceNet); !reflect.DeepEqual(got, []string{"admin_net", "service0"}) {
		t.Fatalf("Devices(net) = %v", got)
	}
}

func TestDevicesSorted(t *testing.T) {
	im := &Image{Manifest: []Device{{"z", DeviceNet}, {"b", DeviceBlock}, {"a", DeviceNet}, {"c", DeviceBlock}}}
	if got := im.Devices(DeviceNet); !reflect.DeepEqual(got, []string{"a", "z"}) {
		t.Fatalf("net = %v", got)
	}
	if got := im.Devices(DeviceBlock); !reflect.DeepEqual(got, []string{"b", "c"}) {
		t.Fatalf("block = %v", got)
	}
	if got := im.Devices(DeviceReservedFirst); got != nil {
		t.Fatalf("reserved = %v", got)
	}
}

func TestTargetNames(t *testing.T) {
	for _, tc := range []struct {
		t    Target
		name string
	}{{TargetHVT, "hvt"}, {TargetSPT, "spt"}, {TargetVirtio, "virtio"}, {TargetMuen, "muen"}, {TargetGenode, "genode"}, {TargetXen, "xen"}} {
		if tc.t.String() != tc.name {
			t.Errorf("%d.String() = %q, want %q", uint32(tc.t), tc.t.String(), tc.name)
		}
		got, err := ParseTarget(tc.name)
		if err != nil || got != tc.t {
			t.Errorf("ParseTarget(%q) = %v, %v", tc.name, got, err)
		}
	}
	if s := Target(9).String(); s != "Target(9)" {
		t.Errorf("Target(9).String() = %q", s)
	}
	for _, bad := range []string{"", "HVT", "kvm", "hvt "} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) succeeded", bad)
		}
	}
	for d, s := range map[DeviceType]string{DeviceBlock: "block", DeviceNet: "net", DeviceReservedFirst: "reserved", 5: "DeviceType(5)"} {
		if d.String() != s {
			t.Errorf("DeviceType %d String = %q, want %q", uint32(d), d.String(), s)
		}
	}
}

func TestValidDeviceName(t *testing.T) {
	for _, ok := range []string{"a", "service0", "A_b_9", strings.Repeat("x", 67), "_", "0"} {
		if !ValidDeviceName(ok) {
			t.Errorf("ValidDeviceName(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 68), "a-b", "a.b", "a b", "é", "a\x00", "a=b", "a:b"} {
		if ValidDeviceName(bad) {
			t.Errorf("ValidDeviceName(%q) = true", bad)
		}
	}
}
