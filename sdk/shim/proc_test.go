package shim

import (
	"os"
	"os/exec"
	"testing"
)

// TestParseProcStat parses a stat line whose command name holds spaces
// and parentheses.
func TestParseProcStat(t *testing.T) {
	line := []byte("4242 (a) b (c)) S 17 4242 4242 0 -1 4194304 120 0 3 0 250 75 0 0 20 0 3 0 9876 123456789 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
	ps, err := parseProcStat("/proc/4242/stat", line)
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{state: 'S', ppid: 17, minflt: 120, majflt: 3, utime: 250, stime: 75, threads: 3, startTicks: 9876, vsizeBytes: 123456789}
	if ps != want {
		t.Fatalf("parsed %+v, want %+v", ps, want)
	}
	if _, err := parseProcStat("x", []byte("1 (a) S 2 3")); err == nil {
		t.Fatal("a short stat line parsed")
	}
	if _, err := parseProcStat("x", []byte("1 a S 2 3")); err == nil {
		t.Fatal("a stat line without a command name parsed")
	}
}

// TestStatsOfChildTree samples a process with a child: the child's
// figures are added, and a pid that is not the named parent's child is
// refused.
func TestStatsOfChildTree(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	var st Stats
	for i := 0; i < 100; i++ {
		r := procReader{buf: make([]byte, 512)}
		if len(r.descendants(pid, procStat{threads: 1})) > 0 {
			break
		}
		exec.Command("sleep", "0.02").Run()
	}
	st, err := statsOf(pid, os.Getpid(), "/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	if st.Threads != 2 || st.RSSBytes <= 0 || st.ShimRSSBytes <= 0 || st.StartedAt.IsZero() {
		t.Fatalf("stats of sh and its sleep: %+v", st)
	}
	if _, err := statsOf(pid, 1, "/proc/self/statm"); err != errNotChild {
		t.Fatalf("stats of a process that is not init's child: %v", err)
	}
}

// BenchmarkReadStats samples a running VM whose tender keeps a child
// process, as the built-in spt tender keeps its guest: what a plugin
// spends on one VM per statistics collection.
func BenchmarkReadStats(b *testing.B) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		b.Skipf("no sh to spawn a child process: %v", err)
	}
	cfg := testConfig(b)
	cfg.Argv = []string{sh, "-c", "sleep 30 & echo $!; wait"}
	p := launch(b, cfg)
	waitLines(b, Dial(p.Dir), 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ReadStats(p.Dir); err != nil {
			b.Fatal(err)
		}
	}
}
