package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// densityEnv is a fresh installation whose spt backend runs the built-in
// tender, with the runtime directory on tmpfs, and the idle guest
// (idle.spt) uploaded: the VMs of the density benchmarks are real
// unikernels that wait, as deployed services do, so that a thousand of
// them cost the host little beyond what Petrel adds.
func densityEnv(b *testing.B) (*env, *client.Client, string) {
	e, c := densityDaemon(b)
	return e, c, uploadIdle(b, c)
}

// densityDaemon starts densityEnv's installation, without image.
func densityDaemon(b *testing.B) (*env, *client.Client) {
	e := newEnvTB(b)
	tmpfsRunDir(b, e)
	e.useBuiltinTenders()
	e.start()
	c, err := client.Dial(e.socket)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return e, c
}

// uploadIdle uploads the idle guest and returns its digest.
func uploadIdle(b *testing.B, c *client.Client) string {
	ref, err := c.UploadImageFile(context.Background(), guestFor(b, "idle", "spt"), nil)
	if err != nil {
		b.Fatal(err)
	}
	return ref.GetSha256()
}

// createIdle creates VMs d0…d(n-1) of the idle guest.
func createIdle(b *testing.B, c *client.Client, sha string, n int) {
	b.Helper()
	for j := 0; j < n; j++ {
		if _, err := c.API.Create(context.Background(), &daemonv1.CreateRequest{Name: fmt.Sprintf("d%d", j), ImageSha256: sha, MemoryMb: 16}); err != nil {
			b.Fatalf("VM %d: %v", j, err)
		}
	}
}

// destroyIdle destroys what createIdle created.
func destroyIdle(c *client.Client, n int) {
	for j := 0; j < n; j++ {
		c.API.Destroy(context.Background(), &daemonv1.DestroyRequest{Name: fmt.Sprintf("d%d", j)})
	}
}

// BenchmarkDensityScale runs 1, 100 and 1000 VMs of the idle guest on
// the built-in spt tender and reports petreld's and the plugins' RSS, and
// per VM the proportional set size (PSS, from smaps_rollup) of the shim
// and of the tender's processes (the waiting tender and the guest's
// process, guest pages included), and their sum: what a VM costs the host
// beyond its guest memory. The targets at 1000 VMs are petreld +
// plugins ≤ 100 MB and shim + tender ≤ 4 MB per VM. PETREL_DENSITY_HOLD
// (a duration) keeps the VMs running that long after measuring, to look
// at the processes.
func BenchmarkDensityScale(b *testing.B) {
	for _, vms := range []int{1, 100, 1000} {
		b.Run(strconv.Itoa(vms), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				densityAt(b, vms)
			}
		})
	}
}

// densityAt starts vms VMs in a fresh installation, reports the memory
// figures, and removes them.
func densityAt(b *testing.B, vms int) {
	began := time.Now()
	e, c, sha := densityEnv(b)
	ctx := context.Background()
	start := time.Now()
	createIdle(b, c, sha, vms)
	deploy := time.Since(start)
	defer destroyIdle(c, vms)
	res, err := c.API.Info(ctx, &daemonv1.InfoRequest{})
	if err != nil {
		b.Fatal(err)
	}
	// Let the last start-ups settle, and measure the steady state: once
	// petreld and the plugins have given back their start-up text pages
	// (10 s after they started).
	time.Sleep(max(time.Second, time.Until(began.Add(12*time.Second))))
	var shimKB, tenderKB int
	for _, vm := range res.GetVms() {
		shimKB += pssKB(int(vm.GetShimPid()))
		for _, pid := range append([]int{int(vm.GetPid())}, descendantsOf(int(vm.GetPid()))...) {
			tenderKB += pssKB(pid)
		}
	}
	daemonKB := rssKB(e.pid())
	pluginKB := 0
	for _, p := range children(e.pid(), "petrel-plugin-") {
		pluginKB += rssKB(p)
	}
	n := float64(len(res.GetVms()))
	b.ReportMetric(float64(daemonKB)/1024, "petreld-MB")
	b.ReportMetric(float64(pluginKB)/1024, "plugins-MB")
	b.ReportMetric(float64(daemonKB+pluginKB)/1024, "petreld+plugins-MB")
	b.ReportMetric(float64(shimKB)/n/1024, "shim-PSS-MB/VM")
	b.ReportMetric(float64(tenderKB)/n/1024, "tender-PSS-MB/VM")
	b.ReportMetric(float64(shimKB+tenderKB)/n/1024, "per-VM-PSS-MB")
	b.ReportMetric(float64(deploy.Microseconds())/n/1000, "create-ms/VM")
	if d, err := time.ParseDuration(os.Getenv("PETREL_DENSITY_HOLD")); err == nil {
		// Time to look at the processes (smaps, pprof) before the VMs go.
		b.Logf("holding %v: petreld is pid %d, config %s", d, e.pid(), e.config)
		time.Sleep(d)
	}
}

// pssKB is a process's proportional set size, or 0 if it is gone.
func pssKB(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "Pss:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// BenchmarkRestartReattach runs 1000 VMs of the idle guest, then stops
// petreld (the VMs keep running) and starts it again, and reports how
// long the new petreld takes from exec until it answers on its socket
// with every VM reattached and running. The baseline, measured in the
// same run before any VM exists, is the same restart of an empty
// petreld. The target is 1 s at 1000 VMs.
func BenchmarkRestartReattach(b *testing.B) {
	const vms = 1000
	e, c := densityDaemon(b)
	restart := func(want int) time.Duration {
		e.stop()
		start := time.Now()
		e.startQuiet()
		ready := time.Since(start)
		waitRunning(b, e, want)
		if d := time.Since(start); d > ready {
			ready = d
		}
		return ready
	}
	empty := time.Duration(0)
	for i := 0; i < 3; i++ {
		empty += restart(0)
	}
	empty /= 3
	sha := uploadIdle(b, c)
	createIdle(b, c, sha, vms)
	waitRunning(b, e, vms)
	var full time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		full += restart(vms)
	}
	b.StopTimer()
	full /= time.Duration(b.N)
	b.ReportMetric(float64(full.Microseconds())/1000, "ready-ms")
	b.ReportMetric(float64(empty.Microseconds())/1000, "empty-ready-ms")
	b.ReportMetric(float64(full)/float64(empty), "ratio")
	c2, err := client.Dial(e.socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c2.Close()
	destroyIdle(c2, vms)
}

// waitRunning waits until petreld lists want VMs, every one running with
// its tender's pid (a VM not yet reattached has none).
func waitRunning(b *testing.B, e *env, want int) {
	b.Helper()
	c, err := client.Dial(e.socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := c.API.Info(context.Background(), &daemonv1.InfoRequest{})
		if err == nil {
			running := 0
			for _, vm := range res.GetVms() {
				if vm.GetState() == "running" && vm.GetPid() > 0 {
					running++
				}
			}
			if running == want && len(res.GetVms()) == want {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d VMs running after restart", running, want)
			}
		} else if time.Now().After(deadline) {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startQuiet starts petreld as start does, but polls its socket every
// millisecond, so that the time it takes to come up is measured closely;
// petreld logs at info level, as on a host.
func (e *env) startQuiet() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = &bytes.Buffer{}
	cmd := exec.Command(filepath.Join(binDir, "petreld"), "--config", e.config, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = e.log, e.log
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.cmd = cmd
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", e.socket); err == nil {
			c.Close()
			return
		}
		time.Sleep(time.Millisecond)
	}
	e.t.Fatalf("petreld did not come up:\n%s", e.log)
}
