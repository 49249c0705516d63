package policy

import (
	"errors"
	"fmt"
	"testing"

	"github.com/petrel-vmm/petrel/core/name"
)

func TestMeet(t *testing.T) {
	a := Policy{VMs: 4, CPUs: []int{0, 1, 2}, MemoryMB: 512, BlockMB: intp(100), Bridges: []string{"br0", "br1"}}
	b := Policy{VMs: 2, CPUs: []int{1, 2, 3}, MemoryMB: 1024, BlockMB: intp(50), Bridges: []string{"br1", "br2"}}
	want := Policy{VMs: 2, CPUs: []int{1, 2}, MemoryMB: 512, BlockMB: intp(50), Bridges: []string{"br1"}}
	if got := a.Meet(b); !got.Equal(want) {
		t.Errorf("meet = %v, want %v", got, want)
	}
	if got := b.Meet(a); !got.Equal(want) {
		t.Errorf("meet is not symmetric: %v", got)
	}
	if err := a.Meet(b).Within(a); err != nil {
		t.Errorf("meet not within one side: %v", err)
	}
	if err := a.Meet(b).Within(b); err != nil {
		t.Errorf("meet not within the other side: %v", err)
	}
	noBlock := b
	noBlock.BlockMB = nil
	if got := a.Meet(noBlock); got.BlockMB != nil {
		t.Errorf("a side without block storage allowed %d MB in the meet", *got.BlockMB)
	}
}

// TestCertificateNeverLoosensLocal: the owner's `policy add zed:xi --vms 0`
// stays in force when xi's certificate, carrying 2 VMs, is recorded
// later, and the certificate tightens what the owner set when it is the
// smaller one; both records are kept.
func TestCertificateNeverLoosensLocal(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "zed", Policy{VMs: 4, MemoryMB: 1024, CPUs: []int{0, 1}})
	mustSet(t, tr, "zed:xi", Policy{VMs: 0, MemoryMB: 1024, CPUs: []int{0, 1}})
	cert := Policy{VMs: 2, MemoryMB: 256, CPUs: []int{0}}
	if err := tr.SetCertificate(p("zed:xi"), cert); err != nil {
		t.Fatal(err)
	}
	eff, ok := tr.Get(p("zed:xi"))
	if !ok || eff.VMs != 0 || eff.MemoryMB != 256 || len(eff.CPUs) != 1 {
		t.Fatalf("effective policy %v, want vms 0 (local), memory 256 and cpus [0] (certificate)", eff)
	}
	err := tr.CheckDeploy(p("zed:xi:web"), Usage{MemoryMB: 16}, nil)
	wantErr(t, err, `policy of "zed:xi": 1 VMs would exceed the limit of 0`)
	local, certRec := tr.Records(p("zed:xi"))
	if local == nil || local.VMs != 0 || certRec == nil || certRec.VMs != 2 {
		t.Fatalf("records %v %v, want both kept", local, certRec)
	}
	// A certificate re-signed with more still does not loosen it.
	if err := tr.SetCertificate(p("zed:xi"), Policy{VMs: 3, MemoryMB: 512}); err != nil {
		t.Fatal(err)
	}
	if eff, _ := tr.Get(p("zed:xi")); eff.VMs != 0 {
		t.Fatalf("re-signed certificate loosened the owner's limit: %v", eff)
	}
	// Only the local record is persisted with Entries, only the
	// certificate's with CertificateEntries.
	for _, e := range tr.Entries() {
		if e.Path.String() == "zed:xi" && e.Policy.VMs != 0 {
			t.Errorf("Entries has the certificate's policy: %v", e)
		}
	}
	if ce := tr.CertificateEntries(); len(ce) != 1 || ce[0].Policy.VMs != 3 {
		t.Errorf("CertificateEntries = %v", ce)
	}
	// Listing shows the effective policy.
	for _, e := range tr.List(p("zed")) {
		if e.Path.String() == "zed:xi" && e.Policy.VMs != 0 {
			t.Errorf("List shows %v for zed:xi", e.Policy)
		}
	}
	// Remove takes both records away.
	if err := tr.Remove(p("zed:xi")); err != nil {
		t.Fatal(err)
	}
	if l, c := tr.Records(p("zed:xi")); l != nil || c != nil {
		t.Errorf("records after Remove: %v %v", l, c)
	}
	if err := tr.Remove(p("zed:xi")); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v", err)
	}
}

// TestCertificateOnlyAndLoad: a path with only a certificate record is
// governed by it, and LoadCertificates restores records apart from the
// local ones.
func TestCertificateOnlyAndLoad(t *testing.T) {
	tr := newTree(t)
	if err := tr.SetCertificate(p("alice"), Policy{VMs: 1, MemoryMB: 64}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, tr.CheckDeploy(p("alice:web"), Usage{MemoryMB: 128}, nil), `policy of "alice": 128 MB of memory would exceed the limit of 64 MB`)
	// A local policy below a certificate-only path nests in its effective
	// policy.
	wantErr(t, tr.Set(p("alice:bob"), Policy{VMs: 2, MemoryMB: 32}, nil), `exceeds the policy of "alice"`, "vms 2 > 1")
	if err := tr.SetCertificate(p(":"), Policy{}); err == nil {
		t.Error("a certificate policy for the root was recorded")
	}
	other := newTree(t)
	if err := other.LoadCertificates(tr.CertificateEntries()); err != nil {
		t.Fatal(err)
	}
	if eff, ok := other.Get(p("alice")); !ok || eff.VMs != 1 {
		t.Errorf("loaded certificate policy: %v %v", eff, ok)
	}
	if len(other.Entries()) != 0 {
		t.Errorf("certificate policies loaded as local ones: %v", other.Entries())
	}
	if err := other.LoadCertificates([]Entry{{Path: p("a"), Policy: Policy{VMs: -1}}}); err == nil {
		t.Error("an invalid certificate policy was loaded")
	}
}

func TestApplying(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 2, MemoryMB: 64})
	mustSet(t, tr, "a:b", Policy{VMs: 1, MemoryMB: 32, ImagesMB: intp(8)})
	var paths []string
	for _, e := range tr.Applying(p("a:b")) {
		paths = append(paths, e.Path.String())
	}
	if fmt.Sprint(paths) != "[: a a:b]" {
		t.Errorf("Applying(a:b) = %v", paths)
	}
	if got := tr.Applying(p(":")); len(got) != 1 || !got[0].Path.IsRoot() {
		t.Errorf("Applying(:) = %v, want the root", got)
	}
	if got := tr.Applying(p("c")); len(got) != 1 {
		t.Errorf("Applying(c) = %v, want the root only", got)
	}
}

// TestImagesAllowance: an image allowance a policy states nests in its
// parent's (stated, or its memory); one it leaves unstated is its memory.
func TestImagesAllowance(t *testing.T) {
	parent := Policy{VMs: 2, MemoryMB: 256}
	if err := (Policy{VMs: 1, MemoryMB: 128, ImagesMB: intp(300)}).Within(parent); err == nil {
		t.Error("300 MB of images within a parent whose memory (and so images) is 256 MB")
	}
	if err := (Policy{VMs: 1, MemoryMB: 128, ImagesMB: intp(256)}).Within(parent); err != nil {
		t.Errorf("256 MB of images within 256 MB of memory: %v", err)
	}
	if got := (Policy{MemoryMB: 64}).Images(); got != 64 {
		t.Errorf("unstated image allowance = %d, want the memory, 64", got)
	}
	if err := (Policy{ImagesMB: intp(-1)}).Validate(); err == nil {
		t.Error("negative image allowance validated")
	}
	if (Policy{MemoryMB: 64}).Equal(Policy{MemoryMB: 64, ImagesMB: intp(64)}) {
		t.Error("an unstated image allowance equals a stated one")
	}
	m := (Policy{MemoryMB: 64}).Meet(Policy{MemoryMB: 128, ImagesMB: intp(100)})
	if m.ImagesMB == nil || *m.ImagesMB != 64 {
		t.Errorf("meet of images: %v, want 64 (the first side's memory)", m.ImagesMB)
	}
	// Uploads and creates count every distinct image once.
	entries := []Entry{{Path: p("a"), Policy: Policy{VMs: 2, MemoryMB: 64, ImagesMB: intp(2)}}}
	held := func(name.Path) map[string]int64 { return map[string]int64{"x": 1 << 20} }
	if err := CheckImagesAgainst(entries, p("a"), map[string]int64{"x": 1 << 20}, held); err != nil {
		t.Errorf("an image held already: %v", err)
	}
	if err := CheckImagesAgainst(entries, p("a"), map[string]int64{"y": 1<<20 + 1}, held); err == nil || !errors.Is(err, ErrExceeded) {
		t.Errorf("a second image over the allowance: %v", err)
	} else {
		wantErr(t, err, `policy of "a": 3 MB of image storage would exceed the limit of 2 MB`)
	}
	if room := ImageRoom(entries, p("a:b"), held); room != 1<<20 {
		t.Errorf("room = %d, want 1 MiB", room)
	}
	wantErr(t, CheckMayDeploy([]Entry{{Path: p("z"), Policy: Policy{VMs: 0, MemoryMB: 64}}}, p("z")), `policy of "z" allows no VMs`)
}
