package sdktest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// HypervisorSuite describes a backend under test. The suite drives it
// through the gRPC boundary with ServeHypervisor.
type HypervisorSuite struct {
	// New returns a fresh, unconfigured backend. It is called again to
	// check that a new plugin instance can recover a running VM.
	New func(t *testing.T) hypervisor.Hypervisor
	// Settings are passed to Configure.
	Settings map[string]string
	// PluginDir is passed to Configure (where helper binaries live).
	PluginDir string
	// Image returns the path of an image the backend accepts, running a
	// guest that prints at least one console line containing Marker,
	// takes the given arguments (below), and otherwise runs until
	// stopped. A backend whose guests cannot take these arguments
	// implements them through the image.
	Image func(t *testing.T) string
	// Marker is a string the guest prints on its console.
	Marker string
	// RunForever and ExitWith(code) are guest arguments making the guest
	// run until stopped, or exit at once with code.
	RunForever []string
	ExitWith   func(code int) []string
	// WrongImage returns an image the backend must refuse in Validate.
	WrongImage func(t *testing.T) string
	// MemoryMB is a memory size the backend accepts.
	MemoryMB uint32
	// MaxArgsBytes is the longest guest command line, the arguments
	// joined with single spaces, that the backend accepts: the suite
	// checks that one byte more is refused before anything starts, with
	// the limit named in the reason. 0 means a Solo5 guest's,
	// solo5.MaxCmdline-1 bytes.
	MaxArgsBytes int
}

var specSeq int

func (s HypervisorSuite) spec(t *testing.T, image string, args []string) *pluginv1.VMSpec {
	specSeq++
	return &pluginv1.VMSpec{Id: "conf-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(specSeq),
		Name: "conformance", ImagePath: image, MemoryMb: s.MemoryMB, Args: args, ConsoleLines: 100, ConsoleBytes: 1 << 16}
}

func (s HypervisorSuite) configured(t *testing.T, runDir string) hypervisor.Hypervisor {
	t.Helper()
	hv := ServeHypervisor(t, s.New(t))
	ctx := context.Background()
	if err := hv.Configure(ctx, &pluginv1.ConfigureRequest{Settings: s.Settings, RunDir: runDir, PluginDir: s.PluginDir}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return hv
}

// Run runs the conformance suite.
func (s HypervisorSuite) Run(t *testing.T) {
	runDir, err := os.MkdirTemp("/tmp", "sdkt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("Identity", func(t *testing.T) {
		hv := s.configured(t, runDir)
		info, err := hv.Info(ctx)
		if err != nil || info.GetKind() != pluginv1.Kind_KIND_HYPERVISOR || info.GetName() == "" || len(info.GetApiVersions()) == 0 {
			t.Fatalf("Info: %v %v", info, err)
		}
		fp, err := hv.Fingerprint(ctx)
		if err != nil || fp.GetHealth() != pluginv1.Health_HEALTH_HEALTHY {
			t.Fatalf("Fingerprint: %v %v", fp, err)
		}
		if _, err := hv.Capabilities(ctx); err != nil {
			t.Fatalf("Capabilities: %v", err)
		}
	})

	t.Run("ValidateRefuses", func(t *testing.T) {
		hv := s.configured(t, runDir)
		notELF := filepath.Join(t.TempDir(), "junk")
		os.WriteFile(notELF, []byte("junk"), 0o644)
		for _, img := range []string{notELF, s.WrongImage(t)} {
			res, err := hv.Validate(ctx, s.spec(t, img, nil))
			if err != nil || res.GetOk() || res.GetReason() == "" {
				t.Fatalf("Validate(%s) = %v, %v; want a refusal with a reason", img, res, err)
			}
			if _, err := hv.Start(ctx, s.spec(t, img, nil)); !errors.Is(err, hypervisor.ErrInvalid) {
				t.Fatalf("Start(%s) = %v; want ErrInvalid", img, err)
			}
		}
		// Arguments the guest's command line cannot hold are refused,
		// with the limit named, before anything starts.
		limit := s.MaxArgsBytes
		if limit == 0 {
			limit = solo5.MaxCmdline - 1
		}
		long := s.spec(t, s.Image(t), []string{strings.Repeat("x", limit+1)})
		if res, err := hv.Validate(ctx, long); err != nil || res.GetOk() || !strings.Contains(res.GetReason(), strconv.Itoa(limit)) {
			t.Fatalf("Validate(%d bytes of arguments) = %v, %v; want a refusal naming the limit", limit+1, res, err)
		}
		if _, err := hv.Start(ctx, long); !errors.Is(err, hypervisor.ErrInvalid) {
			t.Fatalf("Start(%d bytes of arguments) = %v; want ErrInvalid", limit+1, err)
		}
		res, err := hv.Validate(ctx, s.spec(t, s.Image(t), nil))
		if err != nil || !res.GetOk() {
			t.Fatalf("Validate(good image) = %v, %v", res, err)
		}
		entries, _ := os.ReadDir(runDir)
		if len(entries) != 0 {
			t.Fatalf("refused specs left %d entries in the run directory", len(entries))
		}
	})

	t.Run("ExitCode", func(t *testing.T) {
		hv := s.configured(t, runDir)
		spec := s.spec(t, s.Image(t), s.ExitWith(7))
		h, err := hv.Start(ctx, spec)
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		if h.GetId() != spec.GetId() || h.GetPid() == 0 {
			t.Fatalf("handle %v", h)
		}
		st, err := hv.Wait(ctx, spec.GetId())
		if err != nil || st.GetCode() != 7 || st.GetSignal() != 0 {
			t.Fatalf("Wait = %v, %v; want code 7", st, err)
		}
		// Start times are optional; given, they are one instant, and
		// never after the exit.
		if hs, es := h.GetStartedAtNs(), st.GetStartedAtNs(); hs != 0 && es != 0 && hs != es {
			t.Errorf("the handle says the run started at %d, its exit status %d", hs, es)
		}
		if es := st.GetStartedAtNs(); es != 0 && st.GetExitedAtNs() != 0 && es > st.GetExitedAtNs() {
			t.Errorf("the run started at %d, after its exit at %d", es, st.GetExitedAtNs())
		}
		var saw bool
		hv.Console(ctx, &pluginv1.ConsoleRequest{Id: spec.GetId()}, func(l *pluginv1.ConsoleLine) error {
			saw = saw || strings.Contains(l.GetText(), s.Marker)
			return nil
		})
		if !saw {
			t.Fatalf("console of the exited VM lacks %q", s.Marker)
		}
		if err := hv.Destroy(ctx, spec.GetId()); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
		if _, err := hv.Wait(ctx, spec.GetId()); !errors.Is(err, hypervisor.ErrUnknownVM) {
			t.Fatalf("Wait after Destroy = %v; want ErrUnknownVM", err)
		}
	})

	t.Run("StopRecoverStats", func(t *testing.T) {
		hv := s.configured(t, runDir)
		spec := s.spec(t, s.Image(t), s.RunForever)
		h, err := hv.Start(ctx, spec)
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		defer hv.Destroy(context.Background(), spec.GetId())
		// A fresh plugin instance finds the VM again.
		hv2 := s.configured(t, runDir)
		rec, err := hv2.Recover(ctx, h)
		if err != nil || !rec.GetRunning() {
			t.Fatalf("Recover = %v, %v", rec, err)
		}
		st, err := hv2.Stats(ctx, spec.GetId())
		if err != nil || st.GetRssBytes() <= 0 {
			t.Fatalf("Stats = %v, %v", st, err)
		}
		fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
		defer fcancel()
		got := make(chan struct{})
		go func() {
			hv2.Console(fctx, &pluginv1.ConsoleRequest{Id: spec.GetId(), Follow: true}, func(l *pluginv1.ConsoleLine) error {
				if strings.Contains(l.GetText(), s.Marker) {
					select {
					case <-got:
					default:
						close(got)
					}
				}
				return nil
			})
		}()
		select {
		case <-got:
		case <-fctx.Done():
			t.Fatal("console follow did not deliver the marker")
		}
		if err := hv2.Stop(ctx, spec.GetId(), 5*time.Second); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		ex, err := hv2.Wait(ctx, spec.GetId())
		if err != nil || (ex.GetSignal() == 0 && ex.GetCode() == 0) {
			t.Fatalf("Wait after Stop = %v, %v", ex, err)
		}
		if alive(int(h.GetPid())) {
			t.Fatal("guest process still alive after Stop")
		}
		if err := hv2.Destroy(ctx, spec.GetId()); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
	})

	t.Run("StartIsIdempotent", func(t *testing.T) {
		// A Start repeated with the same id (petreld repeats one that a
		// crash of the plugin cut short) adopts the run the first made.
		hv := s.configured(t, runDir)
		spec := s.spec(t, s.Image(t), s.RunForever)
		h, err := hv.Start(ctx, spec)
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		defer hv.Destroy(context.Background(), spec.GetId())
		again, err := s.configured(t, runDir).Start(ctx, spec)
		if err != nil || again.GetPid() != h.GetPid() || again.GetShimPid() != h.GetShimPid() {
			t.Fatalf("Start again = %v, %v; want the first run (pid %d, shim %d)", again, err, h.GetPid(), h.GetShimPid())
		}
		// A directory left by a Start cut short before anything ran
		// there does not stop the next one.
		empty := s.spec(t, s.Image(t), s.RunForever)
		if err := os.Mkdir(filepath.Join(runDir, empty.GetId()), 0o700); err != nil {
			t.Fatal(err)
		}
		h2, err := hv.Start(ctx, empty)
		if err != nil || h2.GetPid() == 0 || !alive(int(h2.GetPid())) {
			t.Fatalf("Start in a directory an interrupted Start left = %v, %v", h2, err)
		}
		if err := hv.Destroy(ctx, empty.GetId()); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
	})

	t.Run("DestroyRunning", func(t *testing.T) {
		hv := s.configured(t, runDir)
		spec := s.spec(t, s.Image(t), s.RunForever)
		h, err := hv.Start(ctx, spec)
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		if err := hv.Destroy(ctx, spec.GetId()); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for alive(int(h.GetPid())) || alive(int(h.GetShimPid())) {
			if time.Now().After(deadline) {
				t.Fatal("guest or shim alive after Destroy")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := os.Stat(filepath.Join(runDir, spec.GetId())); !os.IsNotExist(err) {
			t.Fatal("runtime directory left after Destroy")
		}
	})
}

// alive reports whether pid is a live, non-zombie process.
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(string(b[i+1:])), "Z")
}
