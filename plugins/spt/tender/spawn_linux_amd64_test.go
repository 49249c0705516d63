//go:build linux && amd64

package tender

import "testing"

// TestTrampolinePages checks that the linker placed spawnGuestEnd right
// after spawnGuest, so that the pages the guest process keeps hold the
// code it runs.
func TestTrampolinePages(t *testing.T) {
	start, end := trampolineText()
	r, err := trampolinePages()
	if err != nil {
		t.Fatal(err)
	}
	if uint64(start) < r.start || uint64(end) > r.end || r.start%pageSize != 0 || r.end%pageSize != 0 {
		t.Errorf("trampoline code [%#x, %#x) in pages %#x", start, end, r)
	}
}
