package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// influxd is a throwaway InfluxDB 1.x server on loopback ports, with its
// data in a test directory. It can be stopped and started again on the
// same ports and data.
type influxd struct {
	t        *testing.T
	bin      string
	config   string
	httpAddr string
	udpAddr  string
	cmd      *exec.Cmd
	exited   chan struct{}
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t *testing.T, network string) int {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("reserve udp port: %v", err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("reserve tcp port: %v", err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
}

// startInfluxd starts Debian's influxd with only loopback listeners: HTTP,
// the backup RPC service and a UDP line-protocol listener writing to udpDB.
func startInfluxd(t *testing.T, udpDB string) *influxd {
	t.Helper()
	bin, err := exec.LookPath("influxd")
	if err != nil {
		t.Skip("influxd not installed (Debian package influxdb); skipping the InfluxDB tests")
	}
	dir := t.TempDir()
	d := &influxd{
		t:        t,
		bin:      bin,
		config:   filepath.Join(dir, "influxdb.conf"),
		httpAddr: "127.0.0.1:" + strconv.Itoa(freePort(t, "tcp")),
		udpAddr:  "127.0.0.1:" + strconv.Itoa(freePort(t, "udp")),
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
`, freePort(t, "tcp"), filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), d.httpAddr, d.udpAddr, udpDB)
	if err := os.WriteFile(d.config, []byte(conf), 0o644); err != nil {
		t.Fatalf("write influxd config: %v", err)
	}
	t.Cleanup(d.stop)
	d.start()
	return d
}

// start runs influxd and waits until /ping answers.
func (d *influxd) start() {
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
		resp, err := http.Get("http://" + d.httpAddr + "/ping")
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
			d.t.Fatalf("influxd did not answer /ping on %s within 20 s", d.httpAddr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends influxd and waits for it; a no-op when it is not running.
func (d *influxd) stop() {
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

// query runs an InfluxQL statement and returns the rows of the first
// series of the first result (nil if there is none).
func (d *influxd) query(db, q string) ([][]any, error) {
	v := url.Values{"q": {q}}
	if db != "" {
		v.Set("db", db)
	}
	resp, err := http.PostForm("http://"+d.httpAddr+"/query", v)
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

// createDB creates a database.
func (d *influxd) createDB(name string) {
	d.t.Helper()
	if _, err := d.query("", "CREATE DATABASE "+strconv.Quote(name)); err != nil {
		d.t.Fatal(err)
	}
}

// waitRows polls q until it returns rows or the deadline passes.
func (d *influxd) waitRows(t *testing.T, db, q string, within time.Duration) [][]any {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		rows, err := d.query(db, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) > 0 || time.Now().After(deadline) {
			return rows
		}
		time.Sleep(50 * time.Millisecond)
	}
}
