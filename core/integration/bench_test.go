package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/internal/pluginhost"
	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// benchEnv starts petreld for a benchmark and returns a client.
func benchEnv(b *testing.B) (*env, *client.Client, string) {
	e := newEnvTB(b)
	tmpfsRunDir(b, e)
	e.start()
	c, err := client.Dial(e.socket)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	img := e.image("bench.hvt", solo5.TargetHVT)
	ref, err := c.UploadImageFile(context.Background(), img, nil)
	if err != nil {
		b.Fatal(err)
	}
	return e, c, ref.GetSha256()
}

// tmpfsRunDir moves the runtime directory to tmpfs, as /run is on a
// standard host (the state store stays on disk, with real fsyncs).
func tmpfsRunDir(b *testing.B, e *env) {
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		b.Log("no /dev/shm: the runtime directory stays on disk")
		return
	}
	dir, err := os.MkdirTemp("/dev/shm", "pt")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		b.Fatal(err)
	}
	old := e.runDir
	e.runDir = filepath.Join(dir, "run")
	e.socket = filepath.Join(e.runDir, "petreld.sock")
	if err := os.WriteFile(e.config, []byte(strings.Replace(string(cfg), fmt.Sprintf("run_dir = %q", old), fmt.Sprintf("run_dir = %q", e.runDir), 1)), 0o600); err != nil {
		b.Fatal(err)
	}
}

// firstLine waits for the first console line of name through petreld.
func firstLine(ctx context.Context, c *client.Client, name string) error {
	stream, err := c.API.Console(ctx, &daemonv1.ConsoleRequest{Name: name, Follow: true})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// bareFirstLine runs the tender directly and waits for its first line.
func bareFirstLine(tender, image string) (time.Duration, error) {
	start := time.Now()
	cmd := exec.Command(tender, "--mem=32", "--", image, "lines=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(out)
	sc.Scan()
	d := time.Since(start)
	for sc.Scan() {
	}
	return d, cmd.Wait()
}

// BenchmarkDeploy measures create → first console line through petreld
// against running the same tender directly, alternating the two in one
// run; it reports both, their ratio and the overhead.
func BenchmarkDeploy(b *testing.B) {
	e, c, sha := benchEnv(b)
	tender := filepath.Join(e.dir, "solo5-hvt")
	image := filepath.Join(e.dir, "bench.hvt")
	ctx := context.Background()
	var bare, viaPetreld time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := bareFirstLine(tender, image)
		if err != nil {
			b.Fatal(err)
		}
		bare += d
		name := fmt.Sprintf("bench%d", i)
		start := time.Now()
		if _, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: name, ImageSha256: sha, MemoryMb: 32, Args: []string{"lines=1", "run=forever"}}); err != nil {
			b.Fatal(err)
		}

		if err := firstLine(ctx, c, name); err != nil {
			b.Fatal(err)
		}
		viaPetreld += time.Since(start)
		b.StopTimer()

		if _, err := c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: name}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(bare.Microseconds())/n/1000, "bare-ms/op")
	b.ReportMetric(float64(viaPetreld.Microseconds())/n/1000, "petreld-ms/op")
	b.ReportMetric(float64(viaPetreld)/float64(bare), "ratio")
	b.ReportMetric(float64((viaPetreld-bare).Microseconds())/n/1000, "overhead-ms/op")
}

// BenchmarkDaemonRPC measures a round trip that crosses petreld and the
// plugin (Info of one VM is daemon-only; restart-free Stats would need
// the metrics issue), reporting p50 and p99 of the daemon API round trip.
func BenchmarkDaemonRPC(b *testing.B) {
	_, c, sha := benchEnv(b)
	ctx := context.Background()
	if _, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: "rpc", ImageSha256: sha, MemoryMb: 32, Args: []string{"run=forever"}}); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := c.API.Plugins(ctx, &daemonv1.PluginsRequest{}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat, "rpc")
	c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: "rpc"})
}

func reportPercentiles(b *testing.B, lat []time.Duration, what string) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))].Microseconds())
	}
	b.ReportMetric(p(0.50), what+"-p50-us")
	b.ReportMetric(p(0.99), what+"-p99-us")
}

// rssKB reads a process's resident set size.
func rssKB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// BenchmarkDensity runs 200 VMs (fake tender) and reports petreld's and
// the plugins' RSS, and the mean shim RSS per VM.
func BenchmarkDensity(b *testing.B) {
	const vms = 200
	for i := 0; i < b.N; i++ {
		e, c, sha := benchEnv(b)
		ctx := context.Background()
		for j := 0; j < vms; j++ {
			if _, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: fmt.Sprintf("d%d", j), ImageSha256: sha, MemoryMb: 32, Args: []string{"run=forever"}}); err != nil {
				b.Fatal(err)
			}
		}
		res, err := c.API.Info(ctx, &daemonv1.InfoRequest{})
		if err != nil {
			b.Fatal(err)
		}
		shimTotal := 0
		for _, vm := range res.GetVms() {
			shimTotal += rssKB(int(vm.GetShimPid()))
		}
		daemonKB := rssKB(e.pid())
		pluginKB := 0
		for _, p := range children(e.pid(), "petrel-plugin-") {
			pluginKB += rssKB(p)
		}
		b.ReportMetric(float64(daemonKB)/1024, "petreld-MB")
		b.ReportMetric(float64(pluginKB)/1024, "plugins-MB")
		b.ReportMetric(float64(daemonKB+pluginKB)/1024, "petreld+plugins-MB")
		b.ReportMetric(float64(shimTotal)/float64(len(res.GetVms()))/1024, "shim-MB/VM")
		for j := 0; j < vms; j++ {
			c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: fmt.Sprintf("d%d", j)})
		}
	}
}

// BenchmarkPluginRPC measures petreld's calls into a real plugin process
// over go-plugin's gRPC connection (Capabilities, which does no work in
// the plugin), reporting p50 and p99.
func BenchmarkPluginRPC(b *testing.B) {
	dir := b.TempDir()
	host := pluginhost.New(pluginhost.Options{PluginDir: binDir, RunDir: dir})
	defer host.Close()
	if err := host.AddHypervisor("spt", map[string]string{"tender": "/bin/true"}); err != nil {
		b.Fatal(err)
	}
	hv, err := host.Hypervisor("spt")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := hv.Capabilities(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat, "plugin-rpc")
}

// BenchmarkBlockUpload uploads a 64 MB file into a block device through
// petreld and, as the baseline in the same run, copies the same file to
// another file on the same file system; it reports both rates and their
// ratio.
func BenchmarkBlockUpload(b *testing.B) {
	e, c, _ := benchEnv(b)
	ctx := context.Background()
	const size = 64 << 20
	src := filepath.Join(e.dir, "src.img")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		b.Fatal(err)
	}
	if _, err := c.API.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "bench", SizeMb: 64}); err != nil {
		b.Fatal(err)
	}
	var viaPetreld, plain time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := c.UploadBlockFile(ctx, "bench", src, false, nil); err != nil {
			b.Fatal(err)
		}
		viaPetreld += time.Since(start)
		start = time.Now()
		if err := copyFileSync(src, filepath.Join(e.dataDir, "copy.tmp.img")); err != nil {
			b.Fatal(err)
		}
		plain += time.Since(start)
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mbps(viaPetreld), "petreld-MB/s")
	b.ReportMetric(mbps(plain), "copy-MB/s")
	b.ReportMetric(mbps(viaPetreld)/mbps(plain), "ratio")
}

// copyFileSync is the baseline: a plain copy, fsynced like an upload.
func copyFileSync(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer os.Remove(dst)
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Sync()
}

// cpuTime is the user+system CPU time of pids, from /proc.
func cpuTime(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100
}

// BenchmarkStatsCost runs 500 VMs (the idle guest on the built-in spt
// tender: a tender and a guest process each) and measures the CPU time
// petreld, its plugins and the shims spend per statistics collection,
// per VM: CPU over a window with collections every 500 ms, minus the
// same window with collection effectively off (the baseline, measured in
// the same run on the same VMs).
func BenchmarkStatsCost(b *testing.B) {
	const vms = 500
	const window = 5 * time.Second
	e := newEnvTB(b)
	tmpfsRunDir(b, e)
	e.useBuiltinTenders()
	base, _ := os.ReadFile(e.config)
	setInterval := func(d string) {
		os.WriteFile(e.config, append(append([]byte{}, base...), []byte(fmt.Sprintf("stats_interval = %q\n", d))...), 0o600)
	}
	setInterval("1h")
	e.start()
	c, err := client.Dial(e.socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	sha := uploadIdle(b, c)
	var shims []int
	for i := 0; i < vms; i++ {
		vm, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: fmt.Sprintf("s%d", i), ImageSha256: sha, MemoryMb: 16})
		if err != nil {
			b.Fatal(err)
		}
		shims = append(shims, int(vm.GetShimPid()))
	}
	// measure returns the CPU time of petreld, of its plugins and of the
	// shims over the window.
	measure := func() [3]time.Duration {
		groups := [3][]int{{e.pid()}, children(e.pid(), "petrel-plugin-"), shims}
		var before, out [3]time.Duration
		for i, g := range groups {
			before[i] = cpuTime(g)
		}
		time.Sleep(window)
		for i, g := range groups {
			out[i] = cpuTime(g) - before[i]
		}
		return out
	}
	sum := func(d [3]time.Duration) time.Duration { return d[0] + d[1] + d[2] }
	b.ResetTimer()
	idle := measure()
	e.stop() // VMs keep running; the next petreld reattaches
	setInterval("500ms")
	e.start()
	time.Sleep(time.Second) // let reattachment settle
	busy := measure()
	b.StopTimer()
	collections := float64(window / (500 * time.Millisecond))
	perVM := func(busy, idle time.Duration) float64 {
		return float64((busy - idle).Microseconds()) / collections / vms
	}
	b.ReportMetric(float64(sum(idle).Milliseconds()), "idle-cpu-ms/5s")
	b.ReportMetric(float64(sum(busy).Milliseconds()), "collecting-cpu-ms/5s")
	b.ReportMetric(perVM(sum(busy), sum(idle)), "cpu-us/VM/collection")
	b.ReportMetric(perVM(busy[0], idle[0]), "petreld-us/VM")
	b.ReportMetric(perVM(busy[1], idle[1]), "plugins-us/VM")
	b.ReportMetric(perVM(busy[2], idle[2]), "shims-us/VM")
	for i := 0; i < vms; i++ {
		c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: fmt.Sprintf("s%d", i)})
	}
}

// BenchmarkConsoleThroughput streams a chatty guest's console (100 000
// lines, printed as fast as the tender can) to a follower through shim,
// plugin and petreld, and, as the baseline in the same run, reads the same
// tender's output from a pipe directly. It reports the lines delivered per
// second (from the first line received to the end of the stream), the
// lines the follower lost (counted from the markers and checked against
// the lines received), and the ratio of the two rates. The follower
// attaches before the guest prints (delay=), so that every line can reach
// it.
func BenchmarkConsoleThroughput(b *testing.B) {
	const lines = 100000
	const delay = 300 * time.Millisecond
	e, c, sha := benchEnv(b)
	tender := filepath.Join(e.dir, "solo5-hvt")
	image := filepath.Join(e.dir, "bench.hvt")
	ctx := context.Background()
	var via, bare time.Duration
	var got, lost, bytes int64
	var used [4]time.Duration // petreld, plugin, shim, follower
	var msgs int64            // messages the follower received
	for i := 0; i < b.N; i++ {
		start := time.Now()
		cmd := exec.Command(tender, "--mem=32", "--", image, fmt.Sprintf("lines=%d", lines))
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
		bare += time.Since(start)

		name := fmt.Sprintf("chatty%d", i)
		vm, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: name, ImageSha256: sha, MemoryMb: 32,
			Args: []string{"delay=" + delay.String(), fmt.Sprintf("lines=%d", lines)}})
		if err != nil {
			b.Fatal(err)
		}
		daemons := []int{e.pid()}
		plugins := children(e.pid(), "petrel-plugin-hvt")
		cpu0 := [3]time.Duration{cpuTime(daemons), cpuTime(plugins), selfCPU()}
		shimCPU := pollCPU(int(vm.GetShimPid()))
		stream, err := c.API.Console(ctx, &daemonv1.ConsoleRequest{Name: name, Follow: true, Batch: true, Packed: true})
		if err != nil {
			b.Fatal(err)
		}
		var first time.Time
		var n, missed int64
		var ls []client.ConsoleLine
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if first.IsZero() {
				first = time.Now()
			}
			msgs++
			if ls, err = client.AppendConsoleLines(ls[:0], m); err != nil {
				b.Fatal(err)
			}
			for _, l := range ls {
				if l.Dropped > 0 {
					missed += int64(l.Dropped)
					continue
				}
				if strings.HasPrefix(l.Text, "line ") {
					n++
					bytes += int64(len(l.Text) + 1)
				}
			}
		}
		via += time.Since(first)
		used[0] += cpuTime(daemons) - cpu0[0]
		used[1] += cpuTime(plugins) - cpu0[1]
		used[2] += shimCPU()
		used[3] += selfCPU() - cpu0[2]
		got += n
		lost += lines - n
		if missed < lines-n {
			b.Errorf("run %d: %d lines missing, only %d reported by markers", i, lines-n, missed)
		}
		c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: name})
	}
	rate, bareRate := float64(got)/via.Seconds(), float64(lines*b.N)/bare.Seconds()
	b.ReportMetric(rate, "lines/s")
	b.ReportMetric(float64(bytes)/via.Seconds()/(1<<20), "MB/s")
	b.ReportMetric(float64(lost)/float64(b.N), "lost-lines/op")
	b.ReportMetric(bareRate, "bare-lines/s")
	b.ReportMetric(rate/bareRate, "ratio")
	perLine := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(lines*b.N) }
	b.ReportMetric(perLine(used[0]+used[1]+used[2]+used[3]), "path-cpu-ns/line")
	b.ReportMetric(perLine(used[0]), "petreld-ns/line")
	b.ReportMetric(perLine(used[1]), "plugin-ns/line")
	b.ReportMetric(perLine(used[2]), "shim-ns/line")
	b.ReportMetric(perLine(used[3]), "follower-ns/line")
	b.ReportMetric(float64(got)/float64(msgs), "lines/message")
}

// selfCPU is the user+system CPU time of this process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pollCPU follows the CPU time of pid, a process that may exit before it
// can be read a last time, and returns a function that stops following
// and returns the CPU time used since the call, as last read.
func pollCPU(pid int) func() time.Duration {
	start := cpuTime([]int{pid})
	last := start
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if d := cpuTime([]int{pid}); d > last {
				last = d
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() time.Duration {
		close(stop)
		<-done
		return last - start
	}
}
