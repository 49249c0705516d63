package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// The benchmarks below measure Petrel as its users meet it: through the
// petrel command, one process per command, against a petreld running the
// real built-in spt tender (spt works with or without KVM). Each reports
// its baseline measured in the same run, alternating with it.

// cliBenchEnv starts petreld with the built-in tenders and the runtime
// directory on tmpfs, and returns it with a client and the path of the
// spt build of guest name (skipping when that guest was not built).
func cliBenchEnv(b *testing.B, guestName string) (*env, *client.Client, string) {
	b.Helper()
	image := guestFor(b, guestName, "spt")
	if _, err := os.Stat(image); err != nil {
		b.Skipf("guest %s.spt missing (%v): run make guests", guestName, err)
	}
	e := newEnvTB(b)
	e.useBuiltinTenders()
	tmpfsRunDir(b, e)
	e.start()
	c, err := client.Dial(e.socket)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return e, c, image
}

// timeRun runs argv to its exit and returns how long that took from exec.
func timeRun(b *testing.B, argv ...string) time.Duration {
	b.Helper()
	start := time.Now()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%v: %v\n%s", argv, err, out)
	}
	return d
}

// median returns the middle of ds (which it sorts).
func median(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// ms is d in milliseconds, for ReportMetric.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkCLIDeploy measures a deploy as a user types it, `petrel create
// --force NAME hello.spt` then `petrel console --follow NAME` until the
// guest's exit, against the bare built-in spt tender's exec → exit of the
// same image. The CLI's own start (exec → exit of `petrel --help`, which
// dials nothing) is measured in the same run and taken off once per
// command, as the goal (within 1.2 × bare + 2 ms) is about Petrel's path,
// not the Go runtime's start. Medians are reported, as this shared host's
// outliers would swamp means.
func BenchmarkCLIDeploy(b *testing.B) {
	e, c, hello := cliBenchEnv(b, "hello")
	petrel := filepath.Join(binDir, "petrel")
	tender := append(builtinTender("spt"), "--mem=32", "--", hello)
	// The first create stores the image; the measured ones find it there.
	e.mustPetrel("create", "--force", "--backend", "spt", "cli", hello)
	var bare, start, deploy []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bare = append(bare, timeRun(b, tender...))
		start = append(start, timeRun(b, petrel, "--help"))
		t0 := time.Now()
		timeRun(b, petrel, "--socket", e.socket, "create", "--force", "--backend", "spt", "cli", hello)
		timeRun(b, petrel, "--socket", e.socket, "console", "--follow", "cli")
		deploy = append(deploy, time.Since(t0))
	}
	b.StopTimer()
	if _, err := c.API.Destroy(context.Background(), &daemonv1.DestroyRequest{Name: "cli"}); err != nil {
		b.Fatal(err)
	}
	mb, ms0, md := median(bare), median(start), median(deploy)
	net := md - 2*ms0
	b.ReportMetric(ms(mb), "bare-ms")
	b.ReportMetric(ms(ms0), "cli-start-ms")
	b.ReportMetric(ms(md), "cli-ms")
	b.ReportMetric(ms(net), "cli-less-start-ms")
	b.ReportMetric(float64(net)/float64(mb), "ratio")
	b.ReportMetric(ms(time.Duration(1.2*float64(mb))+2*time.Millisecond), "target-ms")
}

// BenchmarkCLIStart measures `petrel info NAME` against a running petreld,
// exec → exit, against exec → exit of /bin/true (the cost of any process
// start on this host), of petrel-shim without arguments (a small Go
// program that prints a usage error: the Go runtime's own start, which
// bounds any Go CLI) and of `petrel --help` (the CLI without a daemon
// call), alternating the four; it reports their medians.
func BenchmarkCLIStart(b *testing.B) {
	e, c, hello := cliBenchEnv(b, "hello")
	if _, err := os.Stat("/bin/true"); err != nil {
		b.Skipf("no /bin/true for the baseline: %v", err)
	}
	ctx := context.Background()
	ref, err := c.UploadImageFile(ctx, hello, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: "info", ImageSha256: ref.GetSha256(), MemoryMb: 32, Backend: "spt"}); err != nil {
		b.Fatal(err)
	}
	petrel := filepath.Join(binDir, "petrel")
	shim := filepath.Join(binDir, "petrel-shim")
	var trueRun, goRun, help, info []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		trueRun = append(trueRun, timeRun(b, "/bin/true"))
		start := time.Now()
		if err := exec.Command(shim).Run(); err == nil {
			b.Fatal("petrel-shim without arguments succeeded; it should refuse with a usage error")
		}
		goRun = append(goRun, time.Since(start))
		help = append(help, timeRun(b, petrel, "--help"))
		info = append(info, timeRun(b, petrel, "--socket", e.socket, "info", "info"))
	}
	b.StopTimer()
	b.ReportMetric(ms(median(trueRun)), "true-ms")
	b.ReportMetric(ms(median(goRun)), "go-start-ms")
	b.ReportMetric(ms(median(help)), "help-ms")
	b.ReportMetric(ms(median(info)), "info-ms")
	b.ReportMetric(ms(median(info)-median(trueRun)), "info-over-true-ms")
}

// BenchmarkFollowExitLatency measures how long `petrel console --follow`
// takes to end after the guest exits: sleep.spt prints a line, sleeps
// 20 ms and exits; once the follower has printed the first line (so it
// is attached) the time from the guest's exit, as its shim recorded it,
// to the follower's exit as its parent sees it is the latency. The
// baseline is the bare tender's: from its last line to its exit as its
// parent sees it.
func BenchmarkFollowExitLatency(b *testing.B) {
	e, c, sleep := cliBenchEnv(b, "sleep")
	ctx := context.Background()
	ref, err := c.UploadImageFile(ctx, sleep, nil)
	if err != nil {
		b.Fatal(err)
	}
	petrel := filepath.Join(binDir, "petrel")
	tender := append(builtinTender("spt"), "--mem=32", "--", sleep, "20")
	var bare, follow []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := lastLineToExit(tender)
		if err != nil {
			b.Fatal(err)
		}
		bare = append(bare, d)

		name := fmt.Sprintf("f%d", i)
		if _, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: name, ImageSha256: ref.GetSha256(), MemoryMb: 32, Backend: "spt", Args: []string{"20"}}); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(petrel, "--socket", e.socket, "console", "--follow", "--no-timestamps", name)
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		ended := time.Now()
		res, err := c.API.Info(ctx, &daemonv1.InfoRequest{Name: name})
		if err != nil || len(res.GetVms()) != 1 || res.GetVms()[0].GetExitedAtNs() == 0 {
			b.Fatalf("info %s after its follower ended: %v %v", name, res, err)
		}
		exited := time.Unix(0, res.GetVms()[0].GetExitedAtNs())
		if started := time.Unix(0, res.GetVms()[0].GetStartedAtNs()); exited.Sub(started) < 15*time.Millisecond {
			b.Fatalf("%s ran %v, not the 20 ms it sleeps", name, exited.Sub(started))
		}
		follow = append(follow, ended.Sub(exited))
		b.StopTimer()
		if _, err := c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: name}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(follow, func(i, j int) bool { return follow[i] < follow[j] })
	b.ReportMetric(ms(median(bare)), "bare-ms")
	b.ReportMetric(ms(follow[len(follow)/2]), "follow-p50-ms")
	b.ReportMetric(ms(follow[len(follow)*9/10]), "follow-p90-ms")
	b.ReportMetric(ms(follow[len(follow)-1]), "follow-max-ms")
}

// lastLineToExit runs a tender and returns the time from its last line of
// output to its exit as the parent sees it.
func lastLineToExit(argv []string) (time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	var last time.Time
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		last = time.Now()
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("%v: %w", argv, err)
	}
	return time.Since(last), nil
}
