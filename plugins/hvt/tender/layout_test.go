package tender

import (
	"encoding/binary"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// translate walks the 4-level page tables in low like the MMU does for a
// 2 MiB page mapping and returns the physical address for virt.
func translate(low []byte, virt uint64) (uint64, bool) {
	le := binary.LittleEndian
	entry := func(table, index uint64) (uint64, bool) {
		if table+index*8+8 > uint64(len(low)) {
			return 0, false
		}
		e := le.Uint64(low[table+index*8:])
		return e, e&ptePresent != 0 && e&pteWritable != 0
	}
	pml4e, ok := entry(pml4Base, virt>>39&0x1ff)
	if !ok {
		return 0, false
	}
	pdpte, ok := entry(pml4e&^0xfff, virt>>30&0x1ff)
	if !ok || pdpte&ptePageSize != 0 {
		return 0, false
	}
	pde, ok := entry(pdpte&^0xfff, virt>>21&0x1ff)
	if !ok || pde&ptePageSize == 0 {
		return 0, false
	}
	return pde&^(pageSize2M-1) | virt&(pageSize2M-1), true
}

func TestPageTables(t *testing.T) {
	for _, size := range []uint64{pageSize2M, 32 << 20, 1 << 30, 1<<30 + pageSize2M, 3<<30 + 6*pageSize2M, 4 << 30} {
		low := make([]byte, pageTablesEnd)
		for i := range low {
			low[i] = 0xff
		}
		if err := writePageTables(low, size); err != nil {
			t.Fatalf("size %#x: %v", size, err)
		}
		probes := []uint64{0, 0x1234, guestMinBase, size/2 + 17, size - 8, size - 1, size, size + pageSize2M, 4 << 30, 1 << 39}
		for _, va := range probes {
			pa, ok := translate(low, va)
			if va < size && (!ok || pa != va) {
				t.Errorf("size %#x: %#x maps to %#x (present %v), want identity", size, va, pa, ok)
			}
			if va >= size && ok {
				t.Errorf("size %#x: %#x beyond memory is mapped to %#x", size, va, pa)
			}
		}
	}
}

func TestPageTablesRefuse(t *testing.T) {
	low := make([]byte, pageTablesEnd)
	for _, size := range []uint64{0, pageSize2M + 4096, 4<<30 + pageSize2M} {
		if err := writePageTables(low, size); err == nil {
			t.Errorf("size %#x accepted", size)
		}
	}
	if err := setupPageTables(make([]byte, 0x1000)); err == nil {
		t.Errorf("tiny memory accepted")
	}
}

func TestGDT(t *testing.T) {
	mem := make([]byte, 0x2000)
	setupGDT(mem)
	le := binary.LittleEndian
	want := []uint64{0, 0x00af99000000ffff, 0x00cf93000000ffff}
	for i, w := range want {
		if got := le.Uint64(mem[gdtBase+i*8:]); got != w {
			t.Errorf("GDT entry %d = %#016x, want %#016x", i, got, w)
		}
	}
	if gdtLimit != 23 {
		t.Errorf("GDT limit = %d, want 23", gdtLimit)
	}
}

func TestControlRegisters(t *testing.T) {
	if cr0Init != 0x80000021 || cr4Init != 0x620 || eferInit != 0x500 {
		t.Errorf("CR0 %#x CR4 %#x EFER %#x", cr0Init, cr4Init, eferInit)
	}
}

func TestLayoutFitsBelowImage(t *testing.T) {
	if pageTablesEnd > bootInfoBase || bootInfoBase+bootInfoSize > mftBase ||
		mftBase+mftMaxSize > cmdlineBase || cmdlineBase+cmdlineSize > guestMinBase {
		t.Fatalf("tender data areas overlap each other or the image")
	}
	if solo5.MaxManifestSize > mftMaxSize {
		t.Fatalf("largest manifest does not fit")
	}
}

func TestMemSizeFromMB(t *testing.T) {
	cases := []struct {
		mb   int
		want uint64
		ok   bool
	}{
		{512, 512 << 20, true},
		{3, 2 << 20, true},
		{5, 4 << 20, true},
		{4096, 4 << 30, true},
		{1, 0, false},
		{0, 0, false},
		{-1, 0, false},
		{4097, 0, false},
	}
	for _, c := range cases {
		got, err := memSizeFromMB(c.mb)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("memSizeFromMB(%d) = %d, %v; want %d, ok=%v", c.mb, got, err, c.want, c.ok)
		}
	}
}

func TestBootInfo(t *testing.T) {
	mem := make([]byte, bootInfoBase+0x100)
	bootInfo{memSize: 1, kernelEnd: 2, cpuCycleFreq: 3, cmdline: 4, mft: 5}.put(mem)
	le := binary.LittleEndian
	for i := 0; i < 5; i++ {
		if got := le.Uint64(mem[bootInfoBase+8*i:]); got != uint64(i+1) {
			t.Errorf("boot info field %d = %d", i, got)
		}
	}
}
