package policy

import (
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/core/name"
)

// fits reports whether used+want <= limit in exact arithmetic.
func fits(used, want, limit int64) bool {
	sum := new(big.Int).Add(big.NewInt(used), big.NewInt(want))
	return sum.Cmp(big.NewInt(limit)) <= 0
}

// FuzzAdmission feeds admission (CheckDeployAgainst, CheckBlockAgainst,
// CheckImagesAgainst, ImageRoom) numbers from anywhere in their range,
// the extremes included, and checks that nothing is admitted that does
// not fit in exact arithmetic: a sum that wrapped around must never let a
// request through.
func FuzzAdmission(f *testing.F) {
	f.Add(int64(2), int64(256), int64(100), int64(1), int64(32), int64(0), int64(0), int64(10), int64(64), int64(1<<20), int64(1<<20))
	f.Add(int64(1), int64(1<<40), int64(1<<40), int64(0), int64(math.MaxInt64), int64(1), int64(5), int64(math.MaxInt64), int64(1<<40), int64(math.MaxInt64), int64(1))
	f.Add(int64(MaxVMs), int64(MaxMemoryMB), int64(MaxBlockMB), int64(math.MaxInt64), int64(1), int64(math.MaxInt64), int64(math.MaxInt64), int64(1), int64(-1), int64(1), int64(math.MaxInt64))
	f.Add(int64(0), int64(0), int64(0), int64(math.MinInt64), int64(math.MinInt64), int64(math.MinInt64), int64(-1), int64(-1), int64(0), int64(-5), int64(1))
	f.Fuzz(func(t *testing.T, vms, mem, block, usedVMs, usedMem, usedBlock, wantMem, wantBlock, images, usedImg, wantImg int64) {
		b := int(block)
		pol := Policy{VMs: int(vms), MemoryMB: int(mem), BlockMB: &b}
		used := Usage{VMs: int(usedVMs), MemoryMB: int(usedMem), BlockMB: int(usedBlock)}
		want := Usage{MemoryMB: int(wantMem), BlockMB: int(wantBlock)}
		a := name.MustParse("a")
		entries := []Entry{{Path: a, Policy: pol}}
		err := CheckDeployAgainst(entries, name.MustParse("a:vm"), want, func(name.Path) Usage { return used })
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("multi-line refusal: %q", err)
		}
		if err == nil {
			if !fits(usedVMs, 1, vms) {
				t.Fatalf("admitted a VM: %d used + 1 > %d", usedVMs, vms)
			}
			if wantMem > 0 && !fits(usedMem, wantMem, mem) {
				t.Fatalf("admitted memory: %d used + %d > %d", usedMem, wantMem, mem)
			}
			if wantBlock > 0 && !fits(usedBlock, wantBlock, block) {
				t.Fatalf("admitted block storage: %d used + %d > %d", usedBlock, wantBlock, block)
			}
		}
		err = CheckBlockAgainst(entries, name.MustParse("a:disk"), wantBlock, func(name.Path) (int64, error) { return usedBlock, nil })
		if err == nil && !fits(usedBlock, wantBlock, block) {
			t.Fatalf("admitted a block device: %d used + %d > %d", usedBlock, wantBlock, block)
		}
		if err == nil && wantBlock < 0 {
			t.Fatalf("admitted a block device of negative size %d", wantBlock)
		}
		// Image storage: a stated allowance, or the memory's.
		img := pol
		if images >= 0 {
			n := int(images)
			img.ImagesMB = &n
		}
		limitMB := int64(img.Images())
		imgEntries := []Entry{{Path: a, Policy: img}}
		usedImages := func(name.Path) map[string]int64 { return map[string]int64{"held": usedImg} }
		err = CheckImagesAgainst(imgEntries, a, map[string]int64{"new": wantImg}, usedImages)
		if err == nil && wantImg > 0 {
			held := max(usedImg, 0)
			total := new(big.Int).Add(big.NewInt(held), big.NewInt(wantImg))
			limit := new(big.Int).Lsh(big.NewInt(limitMB), 20)
			if total.Cmp(limit) > 0 {
				t.Fatalf("admitted an image: %d held + %d > %d MB", held, wantImg, limitMB)
			}
		}
		room := ImageRoom(imgEntries, a, usedImages)
		if room < 0 {
			t.Fatalf("negative room %d", room)
		}
		if room > 0 {
			total := new(big.Int).Add(big.NewInt(max(usedImg, 0)), big.NewInt(room))
			if total.Cmp(new(big.Int).Lsh(big.NewInt(limitMB), 20)) > 0 {
				t.Fatalf("room %d on top of %d held exceeds %d MB", room, usedImg, limitMB)
			}
		}
		// Sums of usage saturate rather than wrap.
		sum := used.Add(Usage{VMs: int(usedVMs), MemoryMB: int(wantMem), BlockMB: int(wantBlock)})
		if usedMem > 0 && wantMem > 0 && sum.MemoryMB < 0 {
			t.Fatalf("usage sum wrapped: %d + %d = %d", usedMem, wantMem, sum.MemoryMB)
		}
	})
}

func TestCheckBlock(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 2, MemoryMB: 64, BlockMB: intp(10)})
	mustSet(t, tr, "b", Policy{VMs: 2, MemoryMB: 64})
	used := func(name.Path) (int64, error) { return 6, nil }
	if err := tr.CheckBlock(p("a:d"), 4, used); err != nil {
		t.Fatalf("4 MB on top of 6 under a 10 MB allowance: %v", err)
	}
	wantErr(t, tr.CheckBlock(p("a:d"), 5, used), `policy of "a": 11 MB of block storage would exceed the limit of 10 MB`)
	wantErr(t, tr.CheckBlock(p("a:d"), math.MaxInt64, used), `policy of ":": 6 + 9223372036854775807 MB`, `policy of "a": 6 + 9223372036854775807 MB of block storage would exceed the limit of 10 MB`)
	wantErr(t, tr.CheckBlock(p("b:d"), 1, used), `policy of "b" allows no block storage`)
	wantErr(t, tr.CheckBlock(p("a:d"), -1, used), "negative size")
	if err := tr.CheckBlock(p("a:d"), math.MaxInt64, used); !errors.Is(err, ErrExceeded) {
		t.Errorf("%v does not wrap ErrExceeded", err)
	}
}
