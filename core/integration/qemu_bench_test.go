package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/plugins/qemu/testguest"
	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// BenchmarkQEMUDeploy measures create → the guest's first console marker
// for a Solo5 virtio unikernel on the qemu backend through petreld, and,
// as the baseline in the same run, the same QEMU command line run
// directly (taken from `petrel info`, with its QMP socket moved to a
// scratch directory).
func BenchmarkQEMUDeploy(b *testing.B) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		b.Skip("needs qemu-system-x86_64 (Debian package qemu-system-x86)")
	}
	e := newEnvTB(b)
	tmpfsRunDir(b, e)
	e.start()
	c, err := client.Dial(e.socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	img := filepath.Join(e.dir, "virtio.img")
	if err := testguest.WriteVirtioImage(img); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ref, err := c.UploadImageFile(ctx, img, nil)
	if err != nil {
		b.Fatal(err)
	}
	var via, direct time.Duration
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("q%d", i)
		start := time.Now()
		vm, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: name, ImageSha256: ref.GetSha256(), Backend: "qemu", MemoryMb: 32})
		if err != nil {
			b.Fatal(err)
		}
		stream, err := c.API.Console(ctx, &daemonv1.ConsoleRequest{Name: name, Follow: true})
		if err != nil {
			b.Fatal(err)
		}
		for {
			l, err := stream.Recv()
			if err != nil {
				b.Fatalf("console of %s ended before the marker: %v", name, err)
			}
			if strings.Contains(l.GetText(), testguest.VirtioMarker) {
				break
			}
		}
		via += time.Since(start)
		argv := vm.GetArgv()
		if _, err := c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: name}); err != nil {
			b.Fatal(err)
		}
		direct += qemuToMarker(b, argv, testguest.VirtioMarker)
	}
	n := float64(b.N)
	b.ReportMetric(float64(via.Milliseconds())/n, "petreld-ms/op")
	b.ReportMetric(float64(direct.Milliseconds())/n, "direct-ms/op")
	b.ReportMetric(float64(via)/float64(direct), "ratio")
}

// qemuToMarker runs a QEMU command line directly until marker appears.
func qemuToMarker(b *testing.B, argv []string, marker string) time.Duration {
	b.Helper()
	argv = append([]string(nil), argv...)
	for i, a := range argv {
		if strings.HasPrefix(a, "unix:") && strings.Contains(a, "qmp") {
			argv[i] = "unix:" + filepath.Join(b.TempDir(), "qmp.sock") + ",server=on,wait=off"
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("run QEMU: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), marker) {
			took := time.Since(start)
			go io.Copy(io.Discard, out)
			return took
		}
	}
	b.Fatalf("no marker from QEMU run directly (%v)", argv)
	return 0
}
