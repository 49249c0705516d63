package testguest

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// cpioEntry is one parsed newc entry.
type cpioEntry struct {
	name         string
	mode         uint32
	rdev         [2]uint32
	data         []byte
	nlink, check uint32
}

// parseCPIO reads a newc archive, independently of the writer.
func parseCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		e := cpioEntry{mode: field(1), nlink: field(4), rdev: [2]uint32{field(9), field(10)}, check: field(12)}
		size, namesize := int(field(6)), int(field(11))
		nameStart := off + 110
		e.name = string(b[nameStart : nameStart+namesize-1])
		if b[nameStart+namesize-1] != 0 {
			t.Fatalf("name of %q not NUL-terminated", e.name)
		}
		dataStart := align(nameStart + namesize)
		e.data = b[dataStart : dataStart+size]
		off = align(dataStart + size)
		if e.name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestCPIO(t *testing.T) {
	var a cpioArchive
	steps := []error{
		a.Dir("/bin", 0o755),
		a.File("bin/x", 0o755, []byte("hello")),
		a.Symlink("bin/sh", "x"),
		a.CharDev("dev/console", 0o600, 5, 1),
	}
	if err := errors.Join(steps...); err != nil {
		t.Fatal(err)
	}
	if err := a.File("", 0o644, nil); err == nil {
		t.Fatal("empty name accepted")
	}
	got := parseCPIO(t, a.Bytes())
	want := []struct {
		name string
		mode uint32
		data string
	}{{"bin", cpioDir | 0o755, ""}, {"bin/x", cpioFile | 0o755, "hello"}, {"bin/sh", cpioSymlink | 0o777, "x"}, {"dev/console", cpioChar | 0o600, ""}}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].name != w.name || got[i].mode != w.mode || string(got[i].data) != w.data {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], w)
		}
	}
	if got[3].rdev != [2]uint32{5, 1} || got[0].nlink != 2 {
		t.Errorf("device or directory fields wrong: %+v %+v", got[3], got[0])
	}
}

func TestExitBinaryIsStaticELF(t *testing.T) {
	f, err := elf.NewFile(bytes.NewReader(staticELF(exitCode)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC || len(f.Progs) != 1 || f.Progs[0].Type != elf.PT_LOAD {
		t.Fatalf("ELF %+v progs %v", f.FileHeader, f.Progs)
	}
	seg, err := io.ReadAll(f.Progs[0].Open())
	if err != nil {
		t.Fatal(err)
	}
	off := f.Entry - f.Progs[0].Vaddr
	if !bytes.Equal(seg[off:], exitCode) {
		t.Fatal("entry point is not the code")
	}
}

func TestVirtioImage(t *testing.T) {
	b, err := VirtioImage(solo5.Device{Name: "service", Type: solo5.DeviceNet})
	if err != nil {
		t.Fatal(err)
	}
	im, err := solo5.Read(bytes.NewReader(b))
	if err != nil || im.Target != solo5.TargetVirtio || len(im.Manifest) != 1 {
		t.Fatalf("Read = %+v, %v", im, err)
	}
	// The multiboot header must sit within the first 8 KiB for QEMU.
	i := bytes.Index(b, []byte{0x02, 0xb0, 0xad, 0x1b})
	if i < 0 || i+32 > 8192 || i%4 != 0 {
		t.Fatalf("multiboot header at %d", i)
	}
	if !bytes.Contains(b, []byte(VirtioMarker+"\n")) {
		t.Fatal("marker missing")
	}
}

func TestInitramfs(t *testing.T) {
	l, err := FindLinux()
	if errors.Is(err, ErrMissing) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	gz, err := l.Initramfs()
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]cpioEntry{}
	for _, e := range parseCPIO(t, raw) {
		names[e.name] = e
	}
	for _, n := range []string{"init", "bin/busybox", "bin/petrel-exit", "dev/console", "lib/modules/order"} {
		if _, ok := names[n]; !ok {
			t.Errorf("initramfs lacks %s", n)
		}
	}
	for _, m := range Modules {
		if _, ok := names["lib/modules/"+m+".ko"]; !ok {
			t.Errorf("initramfs lacks module %s", m)
		}
	}
	if order := strings.Fields(string(names["lib/modules/order"].data)); strings.Join(order, " ") != strings.Join(Modules, " ") {
		t.Errorf("module order %q", order)
	}
	if !strings.Contains(string(names["init"].data), LinuxMarker) {
		t.Error("init does not print the marker")
	}
	bb, _ := os.ReadFile(l.Busybox)
	if !bytes.Equal(names["bin/busybox"].data, bb) {
		t.Error("busybox differs")
	}
}
