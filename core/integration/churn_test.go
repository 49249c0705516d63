package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// usage is what one process holds: resident memory, open file
// descriptors and OS threads (petreld exposes no goroutine count; its
// threads and descriptors grow with leaked goroutines blocked in
// syscalls and with leaked connections).
type usage struct {
	rssKB, fds, threads int
}

func sampleUsage(pid int) usage {
	return usage{rssKB: procStatus(pid, "VmRSS"), fds: openFDs(pid), threads: procStatus(pid, "Threads")}
}

func (u usage) String() string {
	return fmt.Sprintf("RSS %.1f MB, %d fds, %d threads", float64(u.rssKB)/1024, u.fds, u.threads)
}

// TestChurn: many create/destroy cycles (fake tender, through the Go
// client) leave petreld's and the hvt plugin's memory, file descriptors
// and threads where they were after a warm-up, and leave nothing behind.
// PETREL_CHURN_CYCLES sets the number of cycles (default 1000, 200 with
// -short; the reliability target is 10000).
func TestChurn(t *testing.T) {
	def := int64(1000)
	if testing.Short() {
		def = 200
	}
	cycles := int(envInt(t, "PETREL_CHURN_CYCLES", def))
	const warmup = 100
	const maxRSSGrowthKB = 20 << 10
	const fdMargin, threadMargin = 3, 4

	e := newEnv(t)
	e.start()
	c := e.client()
	img := e.image("churn.hvt", solo5.TargetHVT)
	run := func(from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			name := fmt.Sprintf("churn:vm%d", i%5)
			if err := c.create(name, img); err != nil {
				t.Fatalf("cycle %d: create: %v", i, err)
			}
			if err := c.destroy(name); err != nil {
				t.Fatalf("cycle %d: destroy: %v", i, err)
			}
		}
	}
	plugin := func() int {
		p := children(e.pid(), "petrel-plugin-hvt")
		if len(p) != 1 {
			t.Fatalf("hvt plugin processes: %v", p)
		}
		return p[0]
	}

	run(0, warmup)
	hvt := plugin()
	daemonBefore, pluginBefore := sampleUsage(e.pid()), sampleUsage(hvt)
	start := time.Now()
	run(warmup, cycles)
	elapsed := time.Since(start)
	// Descriptors of the last destroy may close a moment after it returned.
	var daemonAfter, pluginAfter usage
	deadline := time.Now().Add(5 * time.Second)
	for {
		daemonAfter, pluginAfter = sampleUsage(e.pid()), sampleUsage(hvt)
		if daemonAfter.fds <= daemonBefore.fds+fdMargin && pluginAfter.fds <= pluginBefore.fds+fdMargin || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d create/destroy cycles in %v (%.1f ms each)", cycles, elapsed.Round(time.Millisecond), float64(elapsed.Microseconds())/float64(cycles)/1000)
	t.Logf("petreld: before %v, after %v", daemonBefore, daemonAfter)
	t.Logf("hvt plugin: before %v, after %v", pluginBefore, pluginAfter)

	if hvt != plugin() {
		t.Fatal("the hvt plugin was restarted during the churn")
	}
	for _, p := range []struct {
		what          string
		before, after usage
	}{{"petreld", daemonBefore, daemonAfter}, {"hvt plugin", pluginBefore, pluginAfter}} {
		if g := p.after.rssKB - p.before.rssKB; g > maxRSSGrowthKB {
			t.Errorf("%s RSS grew by %.1f MB over %d cycles (bound %d MB)", p.what, float64(g)/1024, cycles, maxRSSGrowthKB>>10)
		}
		if p.after.fds > p.before.fds+fdMargin {
			t.Errorf("%s leaks file descriptors: %d before, %d after %d cycles", p.what, p.before.fds, p.after.fds, cycles)
		}
		if p.after.threads > p.before.threads+threadMargin {
			t.Errorf("%s threads grew: %d before, %d after %d cycles", p.what, p.before.threads, p.after.threads, cycles)
		}
	}
	m := newModel()
	for i := 0; i < 5; i++ {
		m.destroyed(fmt.Sprintf("churn:vm%d", i), 0)
	}
	checkInvariants(t, e, m, 10*time.Second)
	if left := e.runDirEntries(); len(left) != 0 {
		t.Fatalf("runtime files left: %v", left)
	}
}
