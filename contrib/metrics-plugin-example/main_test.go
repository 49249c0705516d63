package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	"github.com/petrel-vmm/petrel/sdk/metrics/buffer"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// line is one JSON line as the plugin writes it.
type line struct {
	Time        time.Time
	Measurement string
	Tags        map[string]string
	Fields      map[string]any
}

// readLines parses every line of the file; each must be a JSON object.
func readLines(t *testing.T, path string) []line {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []line
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", len(out)+1, err, sc.Text())
		}
		out = append(out, l)
	}
	return out
}

// checkBatch checks that the file holds the sample batch written at ns.
func checkBatch(t *testing.T, path string, ns int64) {
	t.Helper()
	n := 0
	for _, l := range readLines(t, path) {
		if l.Time.UnixNano() != ns {
			continue
		}
		n++
		if l.Measurement == metrics.MeasurementVM && l.Tags["vm"] == "web:app" &&
			(l.Tags["path"] != "web" || l.Fields["rss_bytes"] != float64(12_345_678) || l.Fields["cpu_user_seconds"] != 1.5) {
			t.Fatalf("petrel_vm line %+v", l)
		}
	}
	if want := len(metrics.Points(sdktest.SampleBatch(time.Unix(0, ns)))); n != want {
		t.Fatalf("%d lines for the batch at %d; want %d", n, ns, want)
	}
}

func TestSinkSuite(t *testing.T) {
	sdktest.SinkSuite{
		New: func(*testing.T) metrics.Sink { return buffer.Wrap(&sink{}, buffer.Options{}) },
		Settings: func(t *testing.T) map[string]string {
			return map[string]string{"path": filepath.Join(t.TempDir(), "m.jsonl")}
		},
		Invalid: []map[string]string{{}, {"path": "/nonexistent-dir/m.jsonl"}},
		Delivered: func(t *testing.T, settings map[string]string, b *pluginv1.Batch) {
			checkBatch(t, settings["path"], b.GetTimeNs())
		},
	}.Run(t)
}

// TestFullDisk: batches that cannot be appended (here to /dev/full) are
// kept, health says why, and once the sink appends to a file that takes
// them they arrive first, in order.
func TestFullDisk(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full to fill")
	}
	sk := sdktest.ServeMetrics(t, buffer.Wrap(&sink{}, buffer.Options{}))
	ctx := context.Background()
	if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{"path": "/dev/full"}}); err != nil {
		t.Fatal(err)
	}
	var times []int64
	for range 3 {
		b := sdktest.SampleBatch(time.Now())
		times = append(times, b.GetTimeNs())
		if err := sk.Write(ctx, b); err != nil {
			t.Fatalf("Write to a full disk = %v; want the batch kept", err)
		}
	}
	fp, err := sk.Fingerprint(ctx)
	if err != nil || fp.GetHealth() != pluginv1.Health_HEALTH_DEGRADED || !strings.Contains(fp.GetDescription(), "no space left") {
		t.Fatalf("Fingerprint = %v, %v", fp, err)
	}
	path := filepath.Join(t.TempDir(), "m.jsonl")
	if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{"path": path}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []int64
		if _, err := os.Stat(path); err == nil {
			for _, l := range readLines(t, path) {
				if l.Measurement == metrics.MeasurementDaemon {
					got = append(got, l.Time.UnixNano())
				}
			}
		}
		if len(got) == len(times) {
			for i := range got {
				if got[i] != times[i] {
					t.Fatalf("batches appended in the order %v; want %v", got, times)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("appended %d of %d kept batches", len(got), len(times))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, ns := range times {
		checkBatch(t, path, ns)
	}
}

// TestBuiltPlugin builds the plugin as its README says and drives it
// through go-plugin the way petreld does.
func TestBuiltPlugin(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go toolchain not on PATH; skipping the build test")
	}
	bin := filepath.Join(t.TempDir(), "petrel-plugin-jsonl")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	client := plugin.NewClient(petrelplugin.ClientConfig(bin, petrelplugin.MetricsPluginSets(nil), hclog.NewNullLogger()))
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("start plugin: %v", err)
	}
	raw, err := rpc.Dispense(petrelplugin.MetricsService)
	if err != nil {
		t.Fatalf("dispense: %v", err)
	}
	sk := raw.(metrics.Sink)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "metrics.jsonl")
	if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{"path": path}}); err != nil {
		t.Fatal(err)
	}
	var times []int64
	for i := 0; i < 3; i++ {
		b := sdktest.SampleBatch(time.Now())
		times = append(times, b.GetTimeNs())
		if err := sk.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := sk.Write(ctx, sdktest.OddBatch(time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := sk.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ns := range times {
		checkBatch(t, path, ns)
	}
	t.Logf("%d JSON lines written", len(readLines(t, path)))
}

// TestImportsOnlySDK is the proof the example exists for: a plugin needs
// nothing of Petrel but sdk/.
func TestImportsOnlySDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Skipf("go list unavailable: %v\n%s", err, out)
	}
	const module = "github.com/petrel-vmm/petrel/"
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, module) && !strings.HasPrefix(dep, module+"sdk/") && dep != module+"contrib/metrics-plugin-example" {
			t.Errorf("the example depends on %s; third-party plugins may only use sdk/", dep)
		}
	}
}
