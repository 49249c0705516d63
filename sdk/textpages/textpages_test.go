//go:build linux

package textpages

import (
	"os"
	"runtime"
	"testing"
)

// TestCandidates keeps only the read-only mappings of the executable
// that hold no anonymous pages.
func TestCandidates(t *testing.T) {
	smaps := []byte(`00400000-00500000 r-xp 00000000 fe:00 1 /bin/x
Rss:                1024 kB
Anonymous:             0 kB
00500000-00600000 r--p 00100000 fe:00 1 /bin/x
Anonymous:             0 kB
00600000-00700000 r--p 00200000 fe:00 1 /bin/x
Anonymous:            16 kB
00700000-00800000 rw-p 00300000 fe:00 1 /bin/x
Anonymous:             0 kB
00800000-00900000 r-xp 00000000 fe:00 2 /lib/y
Anonymous:             0 kB
`)
	got := candidates(smaps, "/bin/x")
	want := []span{{0x400000, 0x500000}, {0x500000, 0x600000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("candidates = %x, want %x", got, want)
	}
}

// TestRelease releases the test binary's own text and keeps running it.
func TestRelease(t *testing.T) {
	n, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 {
		t.Fatalf("released %d bytes", n)
	}
	runtime.GC()
	if _, err := os.ReadFile("/proc/self/status"); err != nil {
		t.Fatal(err)
	}
}
