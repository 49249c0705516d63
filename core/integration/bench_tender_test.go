package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/client"
	"github.com/petrel-vmm/petrel/sdk/kvm"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// builtinTender is the command line of a backend's built-in tender.
func builtinTender(backend string) []string {
	return []string{filepath.Join(binDir, "petrel-plugin-"+backend), "tender"}
}

// runTender runs a built-in tender on a guest to its exit and returns how
// long that took from exec.
func runTender(tb testing.TB, backend, image string, args ...string) time.Duration {
	tb.Helper()
	argv := append(builtinTender(backend), append([]string{"--mem=32", "--", image}, args...)...)
	start := time.Now()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		tb.Fatalf("%v: %v\n%s", argv, err, out)
	}
	return d
}

// BenchmarkBuiltinTenders measures exec → exit of hello on the built-in
// spt tender and, where KVM is usable, on the built-in hvt tender,
// alternating the two in one run; it reports both and spt's time as a
// ratio of hvt's.
func BenchmarkBuiltinTenders(b *testing.B) {
	spt := guestFor(b, "hello", "spt")
	hvt := ""
	if err := kvm.Probe(); err == nil {
		hvt = guestFor(b, "hello", "hvt")
	} else {
		b.Logf("KVM unusable (%v): spt alone", err)
	}
	var tSPT, tHVT time.Duration
	for i := 0; i < b.N; i++ {
		tSPT += runTender(b, "spt", spt)
		if hvt != "" {
			tHVT += runTender(b, "hvt", hvt)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(tSPT.Microseconds())/n/1000, "spt-ms/op")
	if hvt != "" {
		b.ReportMetric(float64(tHVT.Microseconds())/n/1000, "hvt-ms/op")
		b.ReportMetric(float64(tSPT)/float64(tHVT), "spt/hvt")
	}
}

// mapping is one line of /proc/PID/smaps with its proportional set size.
type mapping struct {
	start, end uint64
	pssKB      int64
}

// smaps reads the mappings of pid with their Pss.
func smaps(tb testing.TB, pid int) []mapping {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		tb.Fatal(err)
	}
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(f[0], "-"); ok && !strings.HasSuffix(f[0], ":") {
			s, err1 := strconv.ParseUint(lo, 16, 64)
			e, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				out = append(out, mapping{start: s, end: e})
				continue
			}
		}
		if f[0] == "Pss:" && len(out) > 0 && len(f) >= 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			out[len(out)-1].pssKB += v
		}
	}
	return out
}

// idleGuest starts the net guest on a built-in tender with a tap in a
// throwaway network namespace, where it idles waiting for frames, and
// returns the tender's process; the namespace and the tender go at the
// end of the benchmark.
func idleGuest(b *testing.B, backend string, memMB int) *exec.Cmd {
	b.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		b.Skip("needs ip (iproute2) for a tap in a network namespace")
	}
	ns := fmt.Sprintf("petrel-bench-%d-%s", os.Getpid(), backend)
	for _, args := range [][]string{{"netns", "add", ns}, {"-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap"}, {"-n", ns, "link", "set", "tap0", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	b.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	argv := append([]string{"netns", "exec", ns}, builtinTender(backend)...)
	argv = append(argv, fmt.Sprintf("--mem=%d", memMB), "--net:service0=tap0", "--", guestFor(b, "net", backend), "10.0.0.2")
	cmd := exec.Command("ip", argv...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("net guest on %s: %v", backend, err)
	}
	b.Logf("%s: %s", backend, strings.TrimSpace(line))
	time.Sleep(200 * time.Millisecond) // let start-up pages settle
	return cmd
}

// BenchmarkTenderMemory measures, while the net guest idles on each
// built-in tender, the proportional set size of every process the tender
// adds (for spt: the tender, which waits, and the guest's child process;
// for hvt: the tender) split into the guest's own memory and the rest,
// which is the tender's cost per VM. On spt, guest memory is [0x10000,
// mem) of the guest's process only: the waiting tender may map something
// of its own at those addresses.
func BenchmarkTenderMemory(b *testing.B) {
	const memMB = 32
	backends := []string{"spt"}
	if kvm.Probe() == nil {
		backends = append(backends, "hvt")
	}
	for _, backend := range backends {
		b.Run(backend, func(b *testing.B) {
			cmd := idleGuest(b, backend, memMB)
			var guestKB, tenderKB int64
			for i := 0; i < b.N; i++ {
				guestKB, tenderKB = 0, 0
				pids := append([]int{cmd.Process.Pid}, descendantsOf(cmd.Process.Pid)...)
				for _, pid := range pids {
					name := strings.TrimSpace(string(readProc(pid, "comm")))
					if name == "ip" {
						continue // ip netns exec has exec'd; this is the tender
					}
					guestProcess := len(descendantsOf(pid)) == 0
					for _, m := range smaps(b, pid) {
						isGuest := false
						switch backend {
						case "spt": // guest memory is [0x10000, mem) of the guest process, which has no child
							isGuest = guestProcess && m.end <= memMB<<20 && m.start >= 0x10000
						}
						if isGuest {
							guestKB += m.pssKB
						} else {
							tenderKB += m.pssKB
						}
					}
				}
			}
			if backend == "hvt" {
				// hvt's guest memory is a mapping of the tender's like its
				// others, so only the total is reported.
				b.ReportMetric(float64(tenderKB)/1024, "total-PSS-MB")
				return
			}
			b.ReportMetric(float64(guestKB)/1024, "guest-PSS-MB")
			b.ReportMetric(float64(tenderKB)/1024, "tender-PSS-MB")
		})
	}
}

// descendantsOf lists the live processes below pid.
func descendantsOf(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, t := range tasks {
			for _, f := range strings.Fields(string(readProc(p, "task/"+t.Name()+"/children"))) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
					queue = append(queue, c)
				}
			}
		}
	}
	return out
}

// BenchmarkDeploySPT measures create → first console line of the real
// hello.spt through petreld against the bare built-in spt tender's exec →
// first line, alternating the two; it reports the medians of both (this
// shared host's outliers would swamp means), their ratio, the overhead,
// the goal's target (1.2 × bare + 2 ms) and, to tell where the time goes,
// the median of the Create call alone.
func BenchmarkDeploySPT(b *testing.B) {
	hello := guestFor(b, "hello", "spt")
	e := newEnvTB(b)
	e.useBuiltinTenders()
	tmpfsRunDir(b, e)
	e.start()
	c, err := client.Dial(e.socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	ref, err := c.UploadImageFile(ctx, hello, nil)
	if err != nil {
		b.Fatal(err)
	}
	var bare, viaPetreld, created []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		argv := append(builtinTender("spt"), "--mem=32", "--", hello)
		start := time.Now()
		cmd := exec.Command(argv[0], argv[1:]...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		sc.Scan()
		bare = append(bare, time.Since(start))
		for sc.Scan() {
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}

		name := fmt.Sprintf("spt%d", i)
		start = time.Now()
		if _, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: name, ImageSha256: ref.GetSha256(), MemoryMb: 32}); err != nil {
			b.Fatal(err)
		}
		created = append(created, time.Since(start))
		if err := firstLine(ctx, c, name); err != nil {
			b.Fatal(err)
		}
		viaPetreld = append(viaPetreld, time.Since(start))
		b.StopTimer()
		if _, err := c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: name}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	mb, mp := median(bare), median(viaPetreld)
	b.ReportMetric(ms(mb), "bare-ms")
	b.ReportMetric(ms(mp), "petreld-ms")
	b.ReportMetric(ms(median(created)), "create-rpc-ms")
	b.ReportMetric(float64(mp)/float64(mb), "ratio")
	b.ReportMetric(ms(mp-mb), "overhead-ms")
	b.ReportMetric(ms(time.Duration(1.2*float64(mb))+2*time.Millisecond), "target-ms")
}
