package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/internal/events"
	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// targetHV is a fake backend that runs some Solo5 targets and reports a
// health.
type targetHV struct {
	*fakeHV
	targets []string
	healthy bool
	// fingerprints counts the Fingerprint calls.
	fingerprints atomic.Int32
}

func (h *targetHV) Capabilities(context.Context) (*pluginv1.HypervisorCapabilities, error) {
	return &pluginv1.HypervisorCapabilities{Targets: h.targets}, nil
}

func (h *targetHV) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	h.fingerprints.Add(1)
	if !h.healthy {
		return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_UNHEALTHY}, nil
	}
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY}, nil
}

// namedBackends serves several fake backends by name.
type namedBackends struct {
	names []string
	hvs   map[string]hypervisor.Hypervisor
}

func (b namedBackends) Hypervisor(name string) (hypervisor.Hypervisor, error) {
	hv, ok := b.hvs[name]
	if !ok {
		return nil, fmt.Errorf("%w: no backend %q is enabled on this host", hypervisor.ErrInvalid, name)
	}
	return hv, nil
}

func (b namedBackends) Names() []string { return b.names }

// TestChooseBackend creates Solo5 images of each target with and without
// --backend on a host whose default is hvt, and checks which backend runs
// them or how the create is refused.
func TestChooseBackend(t *testing.T) {
	type backend struct {
		name    string
		targets []string
		healthy bool
	}
	hvt := backend{"hvt", []string{"hvt"}, true}
	spt := backend{"spt", []string{"spt"}, true}
	qemu := backend{"qemu", []string{"virtio", "linux"}, true}
	sickSPT := backend{"spt2", []string{"spt"}, false}
	// Choices with a single candidate, which need no backend's health.
	unasked := map[string]bool{"spt image goes to spt": true, "virtio image goes to qemu": true, "a sick single candidate": true}
	for _, tc := range []struct {
		name     string
		backends []backend
		target   solo5.Target // 0: not a Solo5 image
		flag     string
		want     string // backend chosen, or "error: " and a part of the message
	}{
		{"default runs it", []backend{hvt, spt, qemu}, solo5.TargetHVT, "", "hvt"},
		{"spt image goes to spt", []backend{hvt, spt, qemu}, solo5.TargetSPT, "", "spt"},
		{"virtio image goes to qemu", []backend{hvt, spt, qemu}, solo5.TargetVirtio, "", "qemu"},
		{"a sick single candidate", []backend{hvt, sickSPT}, solo5.TargetSPT, "", "spt2"},
		{"not Solo5 goes to the default", []backend{hvt, spt, qemu}, 0, "", "hvt"},
		{"not Solo5 goes to the named backend", []backend{hvt, spt, qemu}, 0, "qemu", "qemu"},
		{"explicit mismatch names the backend", []backend{hvt, spt, qemu}, solo5.TargetSPT, "hvt",
			"error: web.img is a Solo5 spt unikernel, which backend hvt does not run; use --backend spt"},
		{"no backend runs it", []backend{hvt, qemu}, solo5.TargetSPT, "",
			"error: web.img is a Solo5 spt unikernel, which backend hvt does not run; no enabled backend on this host runs spt unikernels"},
		{"the healthy one of two", []backend{hvt, spt, sickSPT}, solo5.TargetSPT, "", "spt"},
		{"two healthy ones", []backend{hvt, spt, {"spt2", []string{"spt"}, true}}, solo5.TargetSPT, "",
			"error: use --backend with one of spt, spt2"},
		{"unknown backend", []backend{hvt, spt}, solo5.TargetSPT, "bhyve", "error: no backend \"bhyve\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := namedBackends{hvs: map[string]hypervisor.Hypervisor{}}
			for _, b := range tc.backends {
				bs.names = append(bs.names, b.name)
				bs.hvs[b.name] = &targetHV{fakeHV: newFake(), targets: b.targets, healthy: b.healthy}
			}
			st, err := store.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			img := []byte("not an ELF file")
			if tc.target != 0 {
				if img, err = solo5.Build(solo5.BuildSpec{Target: tc.target, ABIVersion: 2}); err != nil {
					t.Fatal(err)
				}
			}
			sha, _, err := st.PutImage(bytes.NewReader(img), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			sup := New(Options{Store: st, Backends: bs, Events: events.New(), DefaultBackend: "hvt",
				ConsoleLines: 10, ConsoleBytes: 1 << 12, StopTimeout: time.Second, BackoffMin: time.Millisecond,
				BackoffMax: time.Millisecond, ResetAfter: time.Minute, HostCPUs: 2})
			defer sup.Close()
			rec, err := sup.Create(context.Background(), CreateParams{Name: "web", Backend: tc.flag, ImageSHA256: sha, ImageName: "web.img", MemoryMB: 16})
			if want, ok := strings.CutPrefix(tc.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("Create = %v, %v; want an error containing %q", rec.Backend, err, want)
				}
				return
			}
			if err != nil || rec.Backend != tc.want {
				t.Fatalf("Create = %q, %v; want backend %s", rec.Backend, err, tc.want)
			}
			var asked int32
			for _, hv := range bs.hvs {
				asked += hv.(*targetHV).fingerprints.Load()
			}
			if unasked[tc.name] && asked != 0 {
				t.Fatalf("%d Fingerprint calls to choose the only candidate", asked)
			}
		})
	}
}

// TestHideStorePaths: errors name the image and initrd as their users
// gave them, never by their files in the image store, and keep their
// kind.
func TestHideStorePaths(t *testing.T) {
	spec := &pluginv1.VMSpec{ImagePath: "/var/lib/petrel/images/sha256/cc46", InitrdPath: "/var/lib/petrel/images/sha256/77ab"}
	for _, tc := range []struct{ in, want string }{
		{"image: /var/lib/petrel/images/sha256/cc46: not an ELF file", "image web.hvt: not an ELF file"},
		{"cannot read /var/lib/petrel/images/sha256/cc46", "cannot read web.hvt"},
		{"initrd: /var/lib/petrel/images/sha256/77ab: too large", "initrd: too large"},
		{"qemu: could not load /var/lib/petrel/images/sha256/77ab", "qemu: could not load the initrd"},
	} {
		err := hideStorePaths(invalid("%s", tc.in), spec, "web.hvt")
		if !strings.HasSuffix(err.Error(), tc.want) || strings.Contains(err.Error(), "/var/lib") {
			t.Errorf("hideStorePaths(%q) = %q, want it to end in %q", tc.in, err, tc.want)
		}
		if !errors.Is(err, hypervisor.ErrInvalid) {
			t.Errorf("hideStorePaths(%q) lost the error's kind", tc.in)
		}
	}
	plain := errors.New("no paths here")
	if hideStorePaths(plain, spec, "web.hvt") != plain || hideStorePaths(nil, spec, "x") != nil {
		t.Error("hideStorePaths changed an error without store paths")
	}
}
