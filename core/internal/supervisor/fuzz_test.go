package supervisor

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/internal/events"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/store"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"google.golang.org/protobuf/proto"
)

// fuzzImage stands for "the image the fixture uploaded" in fuzz inputs,
// so that inputs reach the backend instead of stopping at an unknown
// digest.
const fuzzImage = "image"

// FuzzCreateParams feeds daemon API create requests, as they arrive on
// the wire, through the supervisor's Create (as petreld's server does)
// on an in-memory backend. Whatever the request, Create must not panic;
// a refused create must leave no VM; an accepted one must be listed
// under its canonical name, running, and destroyable.
func FuzzCreateParams(f *testing.F) {
	for _, req := range []*daemonv1.CreateRequest{
		{Name: "web", ImageSha256: fuzzImage, MemoryMb: 16},
		{Name: "team:db", ImageSha256: fuzzImage, MemoryMb: 64, Cpus: []uint32{0, 1}, Args: []string{"a", "b=c"}},
		{Name: "a:b:c", ImageSha256: fuzzImage, Restart: &daemonv1.RestartPolicy{OnFailure: true, ExitCodes: []int32{3, 255}}},
		{Name: "x", ImageSha256: fuzzImage, Cpus: []uint32{1, 1}},
		{Name: "x", ImageSha256: fuzzImage, Restart: &daemonv1.RestartPolicy{ExitCodes: []int32{-1}}},
		{Name: "x", ImageSha256: fuzzImage, Blocks: []*daemonv1.BlockAttachment{{Name: "storage", Device: "disk", SectorSize: 4096}}},
		{Name: "x", ImageSha256: fuzzImage, Nets: []*daemonv1.NetAttachment{{Name: "service0", Bridge: "br0", Mac: "02:00:00:00:00:01"}}},
		{Name: "UPPER:Case", ImageSha256: fuzzImage, Backend: "fake", Force: true, Startup: -3},
		{Name: "-bad", ImageSha256: fuzzImage},
		{Name: "big", ImageSha256: fuzzImage, MemoryMb: 1 << 31},
		{Name: "ok", ImageSha256: "0000", InitrdSha256: fuzzImage, KernelCmdline: "console=ttyS0"},
		{Name: "other", ImageSha256: fuzzImage, Backend: "nope"},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff, 0xff})

	st, err := store.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	sha, _, err := st.PutImage(bytes.NewReader([]byte("image")), 1<<20)
	if err != nil {
		f.Fatal(err)
	}
	sup := New(Options{Store: st, Backends: backends{hv: newFake()}, Events: events.New(), DefaultBackend: "fake",
		ConsoleLines: 100, ConsoleBytes: 1 << 16, StopTimeout: time.Second, BackoffMin: 10 * time.Millisecond,
		BackoffMax: 40 * time.Millisecond, ResetAfter: time.Minute, BootID: "fuzz", HostCPUs: 2, HostMemoryMB: 4096,
		RunIDs: func(string) []string { return nil }})
	f.Cleanup(func() {
		sup.Close()
		st.Close()
	})

	f.Fuzz(func(t *testing.T, wire []byte) {
		var req daemonv1.CreateRequest
		if err := proto.Unmarshal(wire, &req); err != nil {
			return // refused by the gRPC layer before petreld sees it
		}
		image := func(s string) string {
			if s == fuzzImage {
				return sha
			}
			return s
		}
		var blocks []BlockParam
		for _, b := range req.GetBlocks() {
			blocks = append(blocks, BlockParam{Name: b.GetName(), Device: b.GetDevice(), SectorSize: b.GetSectorSize()})
		}
		var nets []NetParam
		for _, n := range req.GetNets() {
			nets = append(nets, NetParam{Name: n.GetName(), Bridge: n.GetBridge(), MAC: n.GetMac()})
		}
		ctx := context.Background()
		rec, err := sup.Create(ctx, CreateParams{
			Name: req.GetName(), Backend: req.GetBackend(), ImageSHA256: image(req.GetImageSha256()), ImageName: req.GetImageName(),
			MemoryMB: req.GetMemoryMb(), CPUs: req.GetCpus(), Args: req.GetArgs(),
			Restart: RestartPolicy{OnFailure: req.GetRestart().GetOnFailure(), ExitCodes: req.GetRestart().GetExitCodes()},
			Startup: req.GetStartup(), Force: req.GetForce(), Blocks: blocks, Nets: nets,
			InitrdSHA256: image(req.GetInitrdSha256()), KernelCmdline: req.GetKernelCmdline(),
		})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("a refused create gave an empty error")
			}
			if all, ierr := sup.Info(""); ierr != nil || len(all) != 0 {
				t.Fatalf("refused create (%v) left VMs: %+v %v", err, all, ierr)
			}
			return
		}
		n, perr := name.ParseVM(rec.Name)
		if perr != nil || n.String() != rec.Name {
			t.Fatalf("accepted create has a non-canonical name %q: %v", rec.Name, perr)
		}
		if rec.MemoryMB == 0 || rec.MemoryMB > 4096 {
			t.Fatalf("accepted create of %s has %d MB of memory", rec.Name, rec.MemoryMB)
		}
		for _, c := range rec.CPUs {
			if c >= 2 {
				t.Fatalf("accepted create of %s pins CPU %d of 2", rec.Name, c)
			}
		}
		got, err := sup.Info(rec.Name)
		if err != nil || len(got) != 1 || got[0].State != StateRunning {
			t.Fatalf("accepted create of %s: info %+v %v", rec.Name, got, err)
		}
		if err := sup.Destroy(ctx, rec.Name); err != nil {
			t.Fatalf("destroy %s: %v", rec.Name, err)
		}
		if _, err := sup.Info(rec.Name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s still listed after destroy: %v", rec.Name, err)
		}
	})
}
