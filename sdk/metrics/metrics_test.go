package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

func TestParentPath(t *testing.T) {
	for name, want := range map[string]string{"a:b:vm": "a:b", "vm": ":", ":vm": ":", "a:vm": "a", "": ":"} {
		if got := metrics.ParentPath(name); got != want {
			t.Errorf("ParentPath(%q) = %q; want %q", name, got, want)
		}
	}
}

func TestPoints(t *testing.T) {
	at := time.Unix(1700000000, 5)
	pts := metrics.Points(sdktest.SampleBatch(at))
	var names []string
	for _, p := range pts {
		names = append(names, p.Measurement)
		if !p.Time.Equal(at) || p.Tag("host") != "petrel-test" {
			t.Errorf("%s: time %v host %q", p.Measurement, p.Time, p.Tag("host"))
		}
		for i := 1; i < len(p.Tags); i++ {
			if p.Tags[i-1].Key >= p.Tags[i].Key {
				t.Errorf("%s: tags not sorted: %v", p.Measurement, p.Tags)
			}
		}
		for _, f := range p.Fields {
			switch f.Value.(type) {
			case int64, float64:
			default:
				t.Errorf("%s.%s is %T", p.Measurement, f.Key, f.Value)
			}
		}
	}
	want := "petrel_vm petrel_vm_interface petrel_vm petrel_host petrel_daemon petrel_vms petrel_vms petrel_plugin petrel_plugin petrel_sink"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("measurements %q; want %q", got, want)
	}
	vm := pts[0]
	for key, want := range map[string]any{
		"cpu_user_seconds": 1.5, "cpu_system_seconds": 0.25, "rss_bytes": int64(12_345_678),
		"vsize_bytes": int64(98_765_432), "shim_rss_bytes": int64(2 << 20), "minor_faults": int64(1001),
		"major_faults": int64(3), "voluntary_context_switches": int64(4004), "involuntary_context_switches": int64(55),
		"threads": int64(2), "uptime_seconds": 42.5, "restarts": int64(1), "memory_bytes": int64(64 << 20),
	} {
		if got := vm.Field(key); got != want {
			t.Errorf("petrel_vm %s = %v (%T); want %v", key, got, got, want)
		}
	}
	if len(vm.Fields) != 13 || vm.Tag("vm") != "web:app" || vm.Tag("path") != "web" || vm.Tag("backend") != "hvt" || vm.Tag("state") != "running" {
		t.Errorf("petrel_vm %+v", vm)
	}
	ifc := pts[1]
	if ifc.Tag("interface") != "service" || ifc.Tag("host_if") != "tap0" || ifc.Tag("bridge") != "br0" || ifc.Field("tx_dropped") != int64(4) || len(ifc.Fields) != 8 {
		t.Errorf("petrel_vm_interface %+v", ifc)
	}
	if pts[2].Tag("path") != ":" {
		t.Errorf("root VM path %q", pts[2].Tag("path"))
	}
	if d := pts[4]; d.Field("vms") != int64(2) || d.Field("dropped_batches") != int64(5) || d.Field("collect_seconds") != 0.00125 {
		t.Errorf("petrel_daemon %+v", d)
	}
	if s := pts[5]; s.Tag("state") != "exited" || s.Field("count") != int64(1) {
		t.Errorf("petrel_vms %+v", s)
	}
	if p := pts[8]; p.Tag("plugin") != "influx" || p.Field("restarts") != int64(2) {
		t.Errorf("petrel_plugin %+v", p)
	}
	if s := pts[9]; s.Tag("sink") != "test" || s.Field("dropped_batches") != int64(7) || s.Field("queued_batches") != int64(3) || s.Field("queued_bytes") != int64(12288) {
		t.Errorf("petrel_sink %+v", s)
	}
	if d := metrics.SinkDropped(&pluginv1.SinkSample{DroppedBatches: math.MaxUint64 - 1, BufferDroppedBatches: 5}); d != math.MaxUint64 {
		t.Errorf("SinkDropped wrapped to %d", d)
	}
	if metrics.Points(nil) != nil || len(metrics.Points(&pluginv1.Batch{})) != 0 {
		t.Error("an empty batch has points")
	}
}

func TestPointsOdd(t *testing.T) {
	for _, p := range metrics.Points(sdktest.OddBatch(time.Now())) {
		for _, tag := range p.Tags {
			if tag.Value == "" {
				t.Errorf("%s: empty tag %s", p.Measurement, tag.Key)
			}
		}
		for _, f := range p.Fields {
			if v, ok := f.Value.(float64); ok && (math.IsNaN(v) || math.IsInf(v, 0)) {
				t.Errorf("%s.%s is %v", p.Measurement, f.Key, v)
			}
			if v, ok := f.Value.(int64); ok && v < 0 && f.Key != "rss_bytes" {
				t.Errorf("%s.%s wrapped to %d", p.Measurement, f.Key, v)
			}
		}
		if _, err := json.Marshal(p); err != nil {
			t.Errorf("%s: %v", p.Measurement, err)
		}
	}
}

func TestPointJSON(t *testing.T) {
	p := metrics.Points(sdktest.SampleBatch(time.Unix(1700000000, 0)))[1]
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"2023-11-14T22:13:20Z","measurement":"petrel_vm_interface","tags":{"bridge":"br0","host":"petrel-test","host_if":"tap0","interface":"service","path":"web","vm":"web:app"},"fields":{"rx_bytes":10240,"rx_dropped":2,"rx_errors":1,"rx_packets":80,"tx_bytes":20480,"tx_dropped":4,"tx_errors":3,"tx_packets":160}}`
	if string(b) != want {
		t.Fatalf("JSON\n%s\nwant\n%s", b, want)
	}
}

// failing is a sink whose calls fail with a chosen error.
type failing struct{ err error }

func (f failing) Info(context.Context) (*pluginv1.PluginInfo, error) { return nil, f.err }
func (f failing) Configure(context.Context, *pluginv1.ConfigureRequest) error {
	return f.err
}
func (f failing) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	return nil, f.err
}
func (f failing) Write(context.Context, *pluginv1.Batch) error { return f.err }
func (f failing) Close(context.Context) error                  { return f.err }

func TestErrorClassesCrossGRPC(t *testing.T) {
	ctx := context.Background()
	for _, class := range []error{metrics.ErrInvalid, metrics.ErrUnavailable, metrics.ErrNotConfigured, context.DeadlineExceeded} {
		sk := sdktest.ServeMetrics(t, failing{fmt.Errorf("influx: db missing: %w", class)})
		err := sk.Write(ctx, &pluginv1.Batch{})
		if !errors.Is(err, class) || !strings.Contains(err.Error(), "influx: db missing") {
			t.Errorf("Write error %v; want class %v with the message", err, class)
		}
		if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{}); !errors.Is(err, class) {
			t.Errorf("Configure error %v; want class %v", err, class)
		}
	}
	sk := sdktest.ServeMetrics(t, failing{errors.New("disk on fire")})
	err := sk.Close(ctx)
	if err == nil || err.Error() != "disk on fire" || errors.Is(err, metrics.ErrUnavailable) {
		t.Errorf("unclassified error became %v", err)
	}
	if err := sk.Write(ctx, nil); !errors.Is(err, metrics.ErrInvalid) {
		t.Errorf("Write(nil) = %v; want ErrInvalid", err)
	}
}
