// Package testservers starts real servers from Debian's packages for
// tests: a throwaway InfluxDB 1.x and Prometheus, listening on loopback
// only, with their data in test directories, killed at cleanup. A test
// whose server is not installed is skipped with a message naming the
// package. It also hands out the loopback ports such servers listen on,
// never the same one twice in a process.
package testservers

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreeAddr returns a loopback TCP address nobody listens on right now.
func FreeAddr(t testing.TB) string {
	return "127.0.0.1:" + strconv.Itoa(FreePort(t, "tcp"))
}

// Influxd is a throwaway InfluxDB 1.x server on loopback ports, with its
// data in a test directory. It can be stopped and started again on the
// same ports and data.
type Influxd struct {
	t      testing.TB
	bin    string
	config string
	// HTTPAddr and UDPAddr are the loopback listeners.
	HTTPAddr string
	UDPAddr  string
	cmd      *exec.Cmd
	exited   chan struct{}
}

// handed holds the ports FreePort has returned in this process, by
// network.
var (
	handedMu sync.Mutex
	handed   = map[string]bool{}
)

// FreePort returns a loopback port nobody listens on right now, and one
// it has not returned before in this process. Tests running in parallel
// each start servers on ports of their own; were two handed the same
// port, the server that failed to bind it would seem ready, answered by
// the other test's.
func FreePort(t testing.TB, network string) int {
	t.Helper()
	handedMu.Lock()
	defer handedMu.Unlock()
	// Ports already handed out stay bound until one that was not comes
	// back, so the kernel offers a new one each time.
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 100 {
		var port int
		switch network {
		case "udp":
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatalf("reserve udp port: %v", err)
			}
			held, port = append(held, c), c.LocalAddr().(*net.UDPAddr).Port
		default:
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatalf("reserve tcp port: %v", err)
			}
			held, port = append(held, l), l.Addr().(*net.TCPAddr).Port
		}
		key := network + ":" + strconv.Itoa(port)
		if !handed[key] {
			handed[key] = true
			return port
		}
	}
	t.Fatalf("no %s port on loopback that was not handed out before", network)
	return 0
}

// StartInfluxd starts Debian's influxd with only loopback listeners: HTTP,
// the backup RPC service and a UDP line-protocol listener writing to udpDB.
func StartInfluxd(t testing.TB, udpDB string) *Influxd {
	t.Helper()
	bin, err := exec.LookPath("influxd")
	if err != nil {
		t.Skip("influxd not installed (Debian package influxdb); skipping the InfluxDB tests")
	}
	dir := t.TempDir()
	d := &Influxd{
		t:        t,
		bin:      bin,
		config:   filepath.Join(dir, "influxdb.conf"),
		HTTPAddr: "127.0.0.1:" + strconv.Itoa(FreePort(t, "tcp")),
		UDPAddr:  "127.0.0.1:" + strconv.Itoa(FreePort(t, "udp")),
	}
	conf := fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = %q
  logging-enabled = false
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = %q
  log-enabled = false
[ifql]
  enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
[[udp]]
  enabled = true
  bind-address = %q
  database = %q
  precision = "n"
  batch-size = 100
  batch-timeout = "50ms"
`, FreePort(t, "tcp"), filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), d.HTTPAddr, d.UDPAddr, udpDB)
	if err := os.WriteFile(d.config, []byte(conf), 0o644); err != nil {
		t.Fatalf("write influxd config: %v", err)
	}
	t.Cleanup(d.Stop)
	d.Start()
	return d
}

// Start runs influxd and waits until /ping answers.
func (d *Influxd) Start() {
	d.t.Helper()
	d.cmd = exec.Command(d.bin, "-config", d.config)
	d.cmd.Stdout, d.cmd.Stderr = nil, nil
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("start influxd: %v", err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(d.cmd, d.exited)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + d.HTTPAddr + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return
			}
		}
		select {
		case <-d.exited:
			d.t.Fatalf("influxd exited during start-up (config %s)", d.config)
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("influxd did not answer /ping on %s within 20 s", d.HTTPAddr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends influxd and waits for it; a no-op when it is not running.
func (d *Influxd) Stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
}

// Query runs an InfluxQL statement and returns the rows of the first
// series of the first result (nil if there is none).
func (d *Influxd) Query(db, q string) ([][]any, error) {
	v := url.Values{"q": {q}}
	if db != "" {
		v.Set("db", db)
	}
	resp, err := http.PostForm("http://"+d.HTTPAddr+"/query", v)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", q, err)
	}
	defer resp.Body.Close()
	var r struct {
		Results []struct {
			Error  string
			Series []struct {
				Columns []string
				Values  [][]any
			}
		}
		Error string
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("query %q: decode: %w", q, err)
	}
	if r.Error != "" {
		return nil, fmt.Errorf("query %q: %s", q, r.Error)
	}
	if len(r.Results) == 0 {
		return nil, nil
	}
	if r.Results[0].Error != "" {
		return nil, fmt.Errorf("query %q: %s", q, r.Results[0].Error)
	}
	if len(r.Results[0].Series) == 0 {
		return nil, nil
	}
	return r.Results[0].Series[0].Values, nil
}

// CreateDB creates a database.
func (d *Influxd) CreateDB(name string) {
	d.t.Helper()
	if _, err := d.Query("", "CREATE DATABASE "+strconv.Quote(name)); err != nil {
		d.t.Fatal(err)
	}
}

// WaitRows polls q until it returns rows whose values are all set, or
// the deadline passes.
func (d *Influxd) WaitRows(t testing.TB, db, q string, within time.Duration) [][]any {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		rows, err := d.Query(db, q)
		if err != nil {
			t.Fatal(err)
		}
		if (len(rows) > 0 && complete(rows)) || time.Now().After(deadline) {
			return rows
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartPrometheus starts Debian's prometheus scraping target every second,
// with its storage in a test directory and its web listener on loopback.
// It returns the base URL of its API; the server is killed at cleanup.
func StartPrometheus(t testing.TB, target string) string {
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
	web := FreeAddr(t)
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

// InstantQuery runs a PromQL query and returns each result's value.
func InstantQuery(t testing.TB, base, q string) []float64 {
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

// WaitQuery polls q until ok accepts its result.
func WaitQuery(t testing.TB, base, q string, ok func([]float64) bool) []float64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		vals := InstantQuery(t, base, q)
		if ok(vals) {
			return vals
		}
		if time.Now().After(deadline) {
			t.Fatalf("query %s: got %v after 15 s", q, vals)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// complete tells whether every value of rows is set: a point whose
// fields arrive in several UDP packets is seen with some of them null
// until the last one is stored.
func complete(rows [][]any) bool {
	for _, r := range rows {
		for _, v := range r {
			if v == nil {
				return false
			}
		}
	}
	return true
}
