package main

import (
	"context"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/contrib/testservers"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// TestPrometheusServer has a real Prometheus scrape the plugin, and checks
// that a destroyed VM's series end when it leaves the batch.
func TestPrometheusServer(t *testing.T) {
	addr := testservers.FreeAddr(t)
	sk := sdktest.ServeMetrics(t, newSink())
	ctx := context.Background()
	if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{"address": addr}}); err != nil {
		t.Fatal(err)
	}
	defer sk.Close(ctx)
	b := sdktest.SampleBatch(time.Now())
	if err := sk.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	base := testservers.StartPrometheus(t, addr)
	start := time.Now()
	vals := testservers.WaitQuery(t, base, `petrel_vm_resident_memory_bytes{vm="web:app"}`, func(v []float64) bool { return len(v) == 1 })
	if vals[0] != 12_345_678 {
		t.Fatalf("petrel_vm_resident_memory_bytes = %v; want 12345678", vals)
	}
	t.Logf("first scraped sample queryable %s after Prometheus was ready", time.Since(start).Round(time.Millisecond))
	checks := map[string]float64{
		`petrel_vm_cpu_user_seconds_total{vm="web:app"}`:                                   1.5,
		`petrel_vm_interface_transmit_bytes_total{vm="web:app",interface="service"}`:       20_480,
		`petrel_vm_restarts_total{vm="db"}`:                                                3,
		`petrel_vms{state="running"}`:                                                      1,
		`petrel_vm_interface_info{vm="web:app",bridge="br0",host_if="tap0"}`:               1,
		`petrel_vm_memory_size_bytes * on(vm) group_left(backend) petrel_vm_info{vm="db"}`: 32 << 20,
		`up{job="petrel"}`: 1,
		`petrel_sink_dropped_batches_total{sink="test"}`:          7,
		`petrel_sink_queued_batches{sink="test"}`:                 3,
		`petrel_build_info{version="1.2.3",goversion="go1.26.8"}`: 1,
	}
	for q, want := range checks {
		if got := testservers.InstantQuery(t, base, q); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %v; want %v", q, got, want)
		}
	}

	// Destroy db: the next scrape lacks it and Prometheus marks its series
	// stale, so an instant query no longer returns it.
	b = sdktest.SampleBatch(time.Now())
	b.Vms = b.Vms[:1]
	if err := sk.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	testservers.WaitQuery(t, base, `petrel_vm_info{vm="db"}`, func(v []float64) bool { return len(v) == 0 })
	if got := testservers.InstantQuery(t, base, `petrel_vm_info{vm="web:app"}`); len(got) != 1 {
		t.Fatalf("web:app vanished too: %v", got)
	}
}
