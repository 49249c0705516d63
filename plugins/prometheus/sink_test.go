package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/contrib/testservers"
	"github.com/petrel-vmm/petrel/sdk/metrics"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// scrape fetches the metrics page in Prometheus's text format.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v\n%s", url, resp.Status, err, body)
	}
	return string(body)
}

// promtoolCheck runs `promtool check metrics` on a scraped page and fails
// on any complaint.
func promtoolCheck(t *testing.T, page string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus); skipping the lint check")
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(page)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() != 0 {
		t.Fatalf("promtool check metrics: %v\n%s\npage:\n%s", err, out.String(), page)
	}
}

var invalidSettings = []map[string]string{
	{"address": "nowhere"},
	{"address": "127.0.0.1:"},
	{"path": "metrics"},
	{"path": "/metrics?x=1"},
	{"listen": "127.0.0.1:9464"},
}

func TestSinkSuite(t *testing.T) {
	sdktest.SinkSuite{
		New: func(*testing.T) metrics.Sink { return newSink() },
		Settings: func(t *testing.T) map[string]string {
			return map[string]string{"address": testservers.FreeAddr(t), "path": "/custom"}
		},
		Invalid: invalidSettings,
		Delivered: func(t *testing.T, settings map[string]string, b *pluginv1.Batch) {
			page := scrape(t, "http://"+settings["address"]+"/custom")
			for _, want := range []string{
				`petrel_vm_resident_memory_bytes{vm="web:app"} 1.2345678e+07`,
				`petrel_vm_cpu_user_seconds_total{vm="web:app"} 1.5`,
				`petrel_vm_interface_receive_bytes_total{interface="service",vm="web:app"} 10240`,
				`petrel_vm_info{backend="hvt",path="web",state="running",vm="web:app"} 1`,
				`petrel_vms{state="exited"} 1`,
				`petrel_sink_dropped_batches_total{sink="test"} 7`,
				`petrel_sink_queued_batches{sink="test"} 3`,
				`petrel_sink_queued_bytes{sink="test"} 12288`,
				`petrel_build_info{goarch="` + runtime.GOARCH + `",goos="` + runtime.GOOS + `",goversion="go1.26.8",plugin_version="` + version + `",version="1.2.3"} 1`,
			} {
				if !strings.Contains(page, want) {
					t.Fatalf("scrape lacks %q:\n%s", want, page)
				}
			}
		},
	}.Run(t)
}

// serve configures a sink through the gRPC harness on a free port and
// returns it with its metrics URL.
func serve(t *testing.T) (metrics.Sink, string) {
	t.Helper()
	sk := sdktest.ServeMetrics(t, newSink())
	addr := testservers.FreeAddr(t)
	ctx := context.Background()
	if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{"address": addr}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sk.Close(context.Background()) })
	return sk, "http://" + addr + "/metrics"
}

func TestPromtoolClean(t *testing.T) {
	sk, url := serve(t)
	for _, b := range []*pluginv1.Batch{sdktest.SampleBatch(time.Now()), sdktest.OddBatch(time.Now()), {}} {
		if err := sk.Write(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		promtoolCheck(t, scrape(t, url))
	}
}

// TestSnapshotReplaced checks that a VM missing from the latest batch
// (destroyed) is gone from the next scrape.
func TestSnapshotReplaced(t *testing.T) {
	sk, url := serve(t)
	ctx := context.Background()
	b := sdktest.SampleBatch(time.Now())
	if err := sk.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	if page := scrape(t, url); !strings.Contains(page, `vm="db"`) {
		t.Fatalf("first scrape lacks db:\n%s", page)
	}
	b.Vms = b.Vms[:1]
	b.Daemon = nil
	if err := sk.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	page := scrape(t, url)
	if strings.Contains(page, `vm="db"`) || strings.Contains(page, "petrel_vms") || !strings.Contains(page, `vm="web:app"`) {
		t.Fatalf("second scrape still shows db or daemon, or lost web:app:\n%s", page)
	}
}

func TestDuplicatesKeepFirst(t *testing.T) {
	b := sdktest.SampleBatch(time.Now())
	dup := proto.Clone(b.Vms[0]).(*pluginv1.VMSample)
	dup.RssBytes = 1
	b.Vms = append(b.Vms, dup)
	snap := buildSnapshot(b)
	if snap.skipped != 1 {
		t.Fatalf("skipped %d; want the duplicate VM", snap.skipped)
	}
}

func TestAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sk := sdktest.ServeMetrics(t, newSink())
	err = sk.Configure(context.Background(), &pluginv1.ConfigureRequest{Settings: map[string]string{"address": l.Addr().String()}})
	if !errors.Is(err, metrics.ErrUnavailable) || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("Configure on a taken port = %v; want ErrUnavailable naming the address", err)
	}
}

func TestDefaults(t *testing.T) {
	addr, path, err := parseSettings(nil)
	if err != nil || addr != defaultAddress || path != defaultPath {
		t.Fatalf("defaults %q %q %v", addr, path, err)
	}
}

// BenchmarkSnapshot500 measures building the snapshot of a 500-VM batch
// (done once per Write) and serving it (once per scrape).
func BenchmarkSnapshot500(b *testing.B) {
	batch := sdktest.SampleBatch(time.Now())
	for len(batch.Vms) < 500 {
		vm := proto.Clone(batch.Vms[0]).(*pluginv1.VMSample)
		vm.Name = "bench:vm" + strconv.Itoa(len(batch.Vms))
		batch.Vms = append(batch.Vms, vm)
	}
	s := newSink()
	b.Run("Write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.current.Store(buildSnapshot(batch))
		}
	})
	b.Run("Gather", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.reg.Gather(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
