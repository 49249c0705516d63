package hostdev

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

func TestOpenBlock(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := OpenBlock(solo5.BlockArg{Name: "storage", Path: disk})
	if err != nil {
		t.Fatal(err)
	}
	if b.Capacity != 8192 || b.SectorSize != DefaultSectorSize {
		t.Errorf("capacity %d sector size %d", b.Capacity, b.SectorSize)
	}
	if _, err := b.File.WriteAt([]byte("x"), 0); err != nil {
		t.Errorf("block file is not writable: %v", err)
	}
	b.File.Close()
	b, err = OpenBlock(solo5.BlockArg{Name: "storage", Path: disk, SectorSize: 4096})
	if err != nil || b.SectorSize != 4096 {
		t.Fatalf("4096-byte sectors: %+v, %v", b, err)
	}
	b.File.Close()

	odd := filepath.Join(dir, "odd.img")
	if err := os.WriteFile(odd, make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		arg  solo5.BlockArg
		want string
	}{
		{solo5.BlockArg{Name: "storage", Path: filepath.Join(dir, "missing")}, `block device "storage": open `},
		{solo5.BlockArg{Name: "storage", Path: os.DevNull}, "/dev/null is not a regular file"},
		{solo5.BlockArg{Name: "storage", Path: odd}, "not a multiple of the sector size 512"},
		{solo5.BlockArg{Name: "storage", Path: disk, SectorSize: 8192 * 8}, "sector size 65536 is not a power of two between 512 and 32768"},
		{solo5.BlockArg{Name: "storage", Path: disk, SectorSize: 768}, "sector size 768"},
	} {
		if b, err := OpenBlock(c.arg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %+v, %v; want an error with %q", c.arg, b, err, c.want)
		}
	}
}
