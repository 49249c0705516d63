package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

// startPrometheus starts Debian's prometheus scraping target every second,
// with its storage in a test directory and its web listener on loopback.
// It returns the base URL of its API; the server is killed at cleanup.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (Debian package prometheus); skipping the Prometheus server test")
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: petrel
    static_configs:
      - targets: [%q]
`, target)), 0o644); err != nil {
		t.Fatalf("write prometheus config: %v", err)
	}
	web := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	base := "http://" + web
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(logPath)
			t.Fatalf("prometheus exited during start-up:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready on %s within 20 s", web)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// instantQuery runs a PromQL query and returns each result's value.
func instantQuery(t *testing.T, base, q string) []float64 {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?" + url.Values{"query": {q}}.Encode())
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("query %s: decode: %v", q, err)
	}
	if r.Status != "success" {
		t.Fatalf("query %s: %s", q, r.Error)
	}
	var out []float64
	for _, res := range r.Data.Result {
		s, _ := res.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("query %s: value %v: %v", q, res.Value[1], err)
		}
		out = append(out, v)
	}
	return out
}

// waitQuery polls q until ok accepts its result.
func waitQuery(t *testing.T, base, q string, ok func([]float64) bool) []float64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		vals := instantQuery(t, base, q)
		if ok(vals) {
			return vals
		}
		if time.Now().After(deadline) {
			t.Fatalf("query %s: got %v after 15 s", q, vals)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPrometheusServer has a real Prometheus scrape the plugin, and checks
// that a destroyed VM's series end when it leaves the batch.
func TestPrometheusServer(t *testing.T) {
	addr := freeAddr(t)
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
	base := startPrometheus(t, addr)
	start := time.Now()
	vals := waitQuery(t, base, `petrel_vm_resident_memory_bytes{vm="web:app"}`, func(v []float64) bool { return len(v) == 1 })
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
	}
	for q, want := range checks {
		if got := instantQuery(t, base, q); len(got) != 1 || got[0] != want {
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
	waitQuery(t, base, `petrel_vm_info{vm="db"}`, func(v []float64) bool { return len(v) == 0 })
	if got := instantQuery(t, base, `petrel_vm_info{vm="web:app"}`); len(got) != 1 {
		t.Fatalf("web:app vanished too: %v", got)
	}
}
