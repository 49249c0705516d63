package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/contrib/testservers"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// num converts a JSON number from /query to float64.
func num(t *testing.T, v any) float64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%v (%T) is not a number", v, v)
	}
	f, err := n.Float64()
	if err != nil {
		t.Fatalf("%v: %v", v, err)
	}
	return f
}

// checkStored checks that InfluxDB holds the sample batch written at ns.
func checkStored(t *testing.T, d *testservers.Influxd, db string, ns int64, within time.Duration) {
	t.Helper()
	rows := d.WaitRows(t, db, fmt.Sprintf(`SELECT "rss_bytes", "cpu_user_seconds", "memory_bytes", "uptime_seconds" FROM "petrel_vm" WHERE "vm" = 'web:app' AND "path" = 'web' AND "backend" = 'hvt' AND time = %d`, ns), within)
	if len(rows) != 1 {
		t.Fatalf("petrel_vm for web:app at %d: %v", ns, rows)
	}
	r := rows[0]
	if num(t, r[1]) != 12_345_678 || num(t, r[2]) != 1.5 || num(t, r[3]) != 64<<20 || num(t, r[4]) != 42.5 {
		t.Fatalf("petrel_vm row %v", r)
	}
	rows = d.WaitRows(t, db, fmt.Sprintf(`SELECT "rx_bytes", "tx_bytes" FROM "petrel_vm_interface" WHERE "vm" = 'web:app' AND "interface" = 'service' AND "bridge" = 'br0' AND "host_if" = 'tap0' AND time = %d`, ns), within)
	if len(rows) != 1 || num(t, rows[0][1]) != 10_240 || num(t, rows[0][2]) != 20_480 {
		t.Fatalf("petrel_vm_interface rows %v", rows)
	}
	rows = d.WaitRows(t, db, fmt.Sprintf(`SELECT "count" FROM "petrel_vms" WHERE "state" = 'running' AND time = %d`, ns), within)
	if len(rows) != 1 || num(t, rows[0][1]) != 1 {
		t.Fatalf("petrel_vms rows %v", rows)
	}
}

func TestSinkSuiteInfluxDB(t *testing.T) {
	d := testservers.StartInfluxd(t, "udp")
	d.CreateDB("petrel")
	sdktest.SinkSuite{
		New: func(*testing.T) metrics.Sink { return newPlugin() },
		Settings: func(*testing.T) map[string]string {
			return map[string]string{"url": "http://" + d.HTTPAddr, "db": "petrel"}
		},
		Invalid: invalidSettings,
		Delivered: func(t *testing.T, _ map[string]string, b *pluginv1.Batch) {
			checkStored(t, d, "petrel", b.GetTimeNs(), 0)
		},
	}.Run(t)
}

// TestInfluxDB writes over HTTP and UDP to a real InfluxDB, then stops it
// mid-run, when the batch is kept and health says why, and starts it
// again, when the batch arrives.
func TestInfluxDB(t *testing.T) {
	d := testservers.StartInfluxd(t, "petrel_udp")
	d.CreateDB("petrel")
	d.CreateDB("petrel_udp")
	ctx := context.Background()

	httpSink := sdktest.ServeMetrics(t, newPlugin())
	if err := httpSink.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{
		"url": "http://" + d.HTTPAddr, "db": "petrel", "rp": "autogen", "timeout": "2s"}, StateDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	defer httpSink.Close(ctx)
	fp, err := httpSink.Fingerprint(ctx)
	if err != nil || fp.GetHealth() != pluginv1.Health_HEALTH_HEALTHY || fp.GetAttributes()["influxdb.version"] == "" {
		t.Fatalf("Fingerprint = %v, %v", fp, err)
	}
	t.Logf("fingerprint: %s", fp.GetDescription())

	b := sdktest.SampleBatch(time.Now())
	start := time.Now()
	if err := httpSink.Write(ctx, b); err != nil {
		t.Fatalf("http Write: %v", err)
	}
	t.Logf("http Write of %d points took %s", len(metrics.Points(b)), time.Since(start).Round(time.Microsecond))
	checkStored(t, d, "petrel", b.GetTimeNs(), 0)
	rows := d.WaitRows(t, "petrel", `SHOW MEASUREMENTS`, 0)
	if len(rows) != 7 {
		t.Fatalf("measurements %v; want the seven of sdk/metrics", rows)
	}

	t.Run("UDP", func(t *testing.T) {
		udpSink := sdktest.ServeMetrics(t, newSink())
		if err := udpSink.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{
			"protocol": "udp", "address": d.UDPAddr, "udp_payload": "512"}}); err != nil {
			t.Fatal(err)
		}
		defer udpSink.Close(ctx)
		b := sdktest.SampleBatch(time.Now())
		if err := udpSink.Write(ctx, b); err != nil {
			t.Fatalf("udp Write: %v", err)
		}
		checkStored(t, d, "petrel_udp", b.GetTimeNs(), 10*time.Second)
	})

	t.Run("StopAndRestart", func(t *testing.T) {
		d.Stop()
		b := sdktest.SampleBatch(time.Now())
		start := time.Now()
		err := httpSink.Write(ctx, b)
		if err != nil || time.Since(start) > 2500*time.Millisecond {
			t.Fatalf("Write with InfluxDB down = %v after %s; want the batch kept within the 2s timeout", err, time.Since(start))
		}
		fp, _ := httpSink.Fingerprint(ctx)
		if fp.GetHealth() != pluginv1.Health_HEALTH_DEGRADED || fp.GetAttributes()["last_error"] == "" || fp.GetAttributes()["buffer.queued_batches"] != "1" {
			t.Fatalf("Fingerprint with InfluxDB down = %v", fp)
		}
		t.Logf("fingerprint with InfluxDB down: %s", fp.GetDescription())
		d.Start()
		checkStored(t, d, "petrel", b.GetTimeNs(), 15*time.Second)
		waitHealthy(t, httpSink)
	})
}

// waitHealthy waits until the sink has delivered what it kept and says it
// is healthy.
func waitHealthy(t *testing.T, sk metrics.Sink) *pluginv1.FingerprintResponse {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		fp, err := sk.Fingerprint(context.Background())
		if err == nil && fp.GetHealth() == pluginv1.Health_HEALTH_HEALTHY && fp.GetAttributes()["buffer.queued_batches"] == "0" {
			return fp
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink not healthy and empty after 30 s: %v, %v", fp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDatabaseCreatedRealServer: following the README against a fresh
// InfluxDB, where no database exists yet, the first batch creates it and
// lands.
func TestDatabaseCreatedRealServer(t *testing.T) {
	d := testservers.StartInfluxd(t, "udp")
	ctx := context.Background()
	sk := sdktest.ServeMetrics(t, newPlugin())
	if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{"url": "http://" + d.HTTPAddr, "db": "petrel"}, StateDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	defer sk.Close(ctx)
	b := sdktest.SampleBatch(time.Now())
	if err := sk.Write(ctx, b); err != nil {
		t.Fatalf("first Write to a server without the database: %v", err)
	}
	checkStored(t, d, "petrel", b.GetTimeNs(), 0)
	if fp := waitHealthy(t, sk); fp.GetAttributes()["last_error"] != "" {
		t.Fatalf("fingerprint %v", fp)
	}
}

// TestOutageLosesNothing stops the real InfluxDB for a while under load
// (a batch every 50 ms), restarts the plugin (a new sink on the same state
// directory) in the middle of the outage, starts InfluxDB again and
// compares the batches written with the points stored: none may be
// missing, none duplicated, and the stored petrel_sink series shows the
// queue the outage built up.
func TestOutageLosesNothing(t *testing.T) {
	const (
		every  = 50 * time.Millisecond
		outage = 10 * time.Second
	)
	d := testservers.StartInfluxd(t, "udp")
	state := t.TempDir()
	ctx := context.Background()
	open := func() metrics.Sink {
		sk := sdktest.ServeMetrics(t, newPlugin())
		if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{
			"url": "http://" + d.HTTPAddr, "db": "petrel", "timeout": "1s"}, StateDir: state}); err != nil {
			t.Fatal(err)
		}
		return sk
	}
	sk := open()
	var sent []int64
	maxQueued, maxBytes := 0, 0
	writeFor := func(how time.Duration) {
		t.Helper()
		end := time.Now().Add(how)
		for time.Now().Before(end) {
			b := sdktest.SampleBatch(time.Now())
			b.Sink = &pluginv1.SinkSample{Name: "influx"}
			if err := sk.Write(ctx, b); err != nil {
				t.Fatalf("Write %d: %v", len(sent), err)
			}
			sent = append(sent, b.GetTimeNs())
			time.Sleep(every)
		}
	}
	queued := func() {
		fp, _ := sk.Fingerprint(ctx)
		var n, by int
		fmt.Sscan(fp.GetAttributes()["buffer.queued_batches"], &n)
		fmt.Sscan(fp.GetAttributes()["buffer.queued_bytes"], &by)
		if n > maxQueued {
			maxQueued, maxBytes = n, by
		}
	}

	writeFor(time.Second)
	d.Stop()
	writeFor(outage / 2)
	queued()
	// The plugin restarts in the middle of the outage.
	if err := sk.Close(ctx); err != nil {
		t.Fatal(err)
	}
	sk = open()
	writeFor(outage / 2)
	queued()
	fp, _ := sk.Fingerprint(ctx)
	if fp.GetHealth() != pluginv1.Health_HEALTH_DEGRADED {
		t.Fatalf("fingerprint during the outage: %v", fp)
	}
	t.Logf("during the outage: %s", fp.GetDescription())
	du := diskUsage(t, filepath.Join(state, "buffer"))
	d.Start()
	writeFor(time.Second)
	waitHealthy(t, sk)
	sk.Close(ctx)

	rows := d.WaitRows(t, "petrel", `SELECT "rss_bytes" FROM "petrel_vm" WHERE "vm" = 'web:app'`, 10*time.Second)
	stored := map[int64]int{}
	for _, r := range rows {
		ts, err := time.Parse(time.RFC3339Nano, r[0].(string))
		if err != nil {
			t.Fatal(err)
		}
		stored[ts.UnixNano()]++
	}
	missing := 0
	for _, ns := range sent {
		if stored[ns] != 1 {
			missing++
			if missing <= 5 {
				t.Errorf("batch of %s stored %d times", time.Unix(0, ns).UTC().Format(time.RFC3339Nano), stored[ns])
			}
		}
	}
	t.Logf("%d batches written over %s with InfluxDB down for %s (plugin restarted halfway), %d points of web:app stored, %d missing",
		len(sent), outage+3*time.Second, outage, len(rows), missing)
	t.Logf("at most %d batches queued at once, %d bytes counted (%d per batch), %d bytes allocated on disk before replay",
		maxQueued, maxBytes, maxBytes/max(maxQueued, 1), du)
	if len(rows) != len(sent) || missing != 0 {
		t.Fatalf("%d batches written, %d stored, %d missing", len(sent), len(rows), missing)
	}
	q := d.WaitRows(t, "petrel", `SELECT max("queued_batches"), max("dropped_batches") FROM "petrel_sink" WHERE "sink" = 'influx'`, 0)
	if len(q) != 1 || num(t, q[0][1]) < float64(maxQueued/2) || num(t, q[0][2]) != 0 {
		t.Fatalf("petrel_sink over the outage: %v; want the queue's growth and no drops", q)
	}
}

// diskUsage is the space allocated to the files in dir.
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
	}
	return total
}
