package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/sdktest/servers"

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
func checkStored(t *testing.T, d *servers.Influxd, db string, ns int64, within time.Duration) {
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
	d := servers.StartInfluxd(t, "udp")
	d.CreateDB("petrel")
	sdktest.SinkSuite{
		New: func(*testing.T) metrics.Sink { return newSink() },
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
// mid-run and starts it again.
func TestInfluxDB(t *testing.T) {
	d := servers.StartInfluxd(t, "petrel_udp")
	d.CreateDB("petrel")
	d.CreateDB("petrel_udp")
	ctx := context.Background()

	httpSink := sdktest.ServeMetrics(t, newSink())
	if err := httpSink.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{
		"url": "http://" + d.HTTPAddr, "db": "petrel", "rp": "autogen", "timeout": "2s"}}); err != nil {
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
	if len(rows) != 6 {
		t.Fatalf("measurements %v; want the six of sdk/metrics", rows)
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
		start := time.Now()
		err := httpSink.Write(ctx, sdktest.SampleBatch(time.Now()))
		took := time.Since(start)
		if !errors.Is(err, metrics.ErrUnavailable) || took > 2500*time.Millisecond {
			t.Fatalf("Write with InfluxDB down = %v after %s; want ErrUnavailable within the 2s timeout", err, took)
		}
		t.Logf("Write with InfluxDB down failed after %s: %v", took.Round(time.Microsecond), err)
		if fp, _ := httpSink.Fingerprint(ctx); fp.GetHealth() != pluginv1.Health_HEALTH_DEGRADED {
			t.Fatalf("Fingerprint with InfluxDB down = %v", fp)
		}
		d.Start()
		restarted := time.Now()
		var last *pluginv1.Batch
		for {
			last = sdktest.SampleBatch(time.Now())
			err := httpSink.Write(ctx, last)
			if err == nil {
				break
			}
			if !errors.Is(err, metrics.ErrUnavailable) || time.Since(restarted) > 15*time.Second {
				t.Fatalf("Write after restart: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("writes flowed again %s after InfluxDB answered", time.Since(restarted).Round(time.Millisecond))
		checkStored(t, d, "petrel", last.GetTimeNs(), 0)
		checkStored(t, d, "petrel", b.GetTimeNs(), 0)
	})
}
