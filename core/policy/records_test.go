package policy

import (
	"errors"
	"testing"
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
