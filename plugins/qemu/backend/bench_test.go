package backend

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/plugins/qemu/testguest"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// BenchmarkCreateToMarker measures the time from Start to the guest's
// marker on the console through the backend (gRPC, shim, console ring),
// against the same QEMU command run directly with its output read from a
// pipe, and reports both and their ratio.
func BenchmarkCreateToMarker(b *testing.B) {
	b.Run("virtio", func(b *testing.B) {
		needQEMU(b)
		benchMarker(b, func() *pluginv1.VMSpec { return virtioSpec(testguest.VirtioRunForever) }, testguest.VirtioMarker)
	})
	b.Run("linux", func(b *testing.B) {
		needLinux(b)
		benchMarker(b, func() *pluginv1.VMSpec { return linuxSpec() }, testguest.LinuxMarker)
	})
}

func benchMarker(b *testing.B, spec func() *pluginv1.VMSpec, marker string) {
	hv, _ := served(b, runDir(b), nil)
	var viaBackend, direct time.Duration
	for i := 0; i < b.N; i++ {
		s := spec()
		d, argv := backendToMarker(b, hv, s, marker)
		viaBackend += d
		direct += directToMarker(b, argv, marker)
	}
	n := float64(b.N)
	b.ReportMetric(float64(viaBackend.Milliseconds())/n, "backend-ms/op")
	b.ReportMetric(float64(direct.Milliseconds())/n, "direct-ms/op")
	b.ReportMetric(float64(viaBackend)/float64(direct), "backend/direct")
}

// backendToMarker starts spec through hv and returns the time until the
// marker appeared and QEMU's command line.
func backendToMarker(b *testing.B, hv hypervisor.Hypervisor, spec *pluginv1.VMSpec, marker string) (time.Duration, []string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	h, err := hv.Start(ctx, spec)
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	errFound := errors.New("found")
	err = hv.Console(ctx, &pluginv1.ConsoleRequest{Id: spec.GetId(), Follow: true}, func(l *pluginv1.ConsoleLine) error {
		if strings.Contains(l.GetText(), marker) {
			return errFound
		}
		return nil
	})
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), errFound.Error()) {
		b.Fatalf("no marker through the backend: %v", err)
	}
	if err := hv.Destroy(context.Background(), spec.GetId()); err != nil {
		b.Fatalf("Destroy: %v", err)
	}
	return took, h.GetArgv()
}

// directToMarker runs argv (with its QMP socket moved to a temporary
// directory) and returns the time until marker appeared on its output.
func directToMarker(b *testing.B, argv []string, marker string) time.Duration {
	b.Helper()
	argv = append([]string(nil), argv...)
	for i, a := range argv {
		if strings.HasPrefix(a, "unix:") && strings.Contains(a, QMPSocket) {
			argv[i] = fmt.Sprintf("unix:%s,server=on,wait=off", filepath.Join(b.TempDir(), QMPSocket))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		b.Fatalf("run QEMU: %v", err)
	}
	found := make(chan time.Duration, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), marker) {
				found <- time.Since(start)
				break
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	var took time.Duration
	select {
	case took = <-found:
	case <-ctx.Done():
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	_ = pw.Close()
	if took == 0 {
		b.Fatal("no marker from QEMU run directly")
	}
	return took
}
