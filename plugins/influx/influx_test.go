package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest"
)

var invalidSettings = []map[string]string{
	{"protocol": "carrier-pigeon"},
	{"protocol": "http"},
	{"db": "petrel", "url": "ftp://example"},
	{"db": "petrel", "url": "http://127.0.0.1:8086?db=x"},
	{"db": "petrel", "precision": "fortnights"},
	{"db": "petrel", "timeout": "soon"},
	{"db": "petrel", "timeout": "-1s"},
	{"db": "petrel", "password": "secret"},
	{"db": "petrel", "address": "127.0.0.1:8089"},
	{"db": "petrel", "dbname": "typo"},
	{"protocol": "udp"},
	{"protocol": "udp", "address": "no-port"},
	{"protocol": "udp", "address": "127.0.0.1:8089", "db": "petrel"},
	{"protocol": "udp", "address": "127.0.0.1:8089", "udp_payload": "100"},
	{"protocol": "tcp", "address": "127.0.0.1:8094", "udp_payload": "1400"},
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(map[string]string{"db": "petrel"})
	if err != nil {
		t.Fatal(err)
	}
	if c.protocol != "http" || c.url.String() != "http://127.0.0.1:8086" || c.timeout != 5*time.Second ||
		c.precision != lineprotocol.Nanosecond || c.precisionParam != "n" {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = parseConfig(map[string]string{"protocol": "UDP", "address": "[::1]:8089", "precision": "ms", "udp_payload": "9000", "timeout": "250ms"})
	if err != nil {
		t.Fatal(err)
	}
	if c.protocol != "udp" || c.udpPayload != 9000 || c.precisionParam != "ms" || c.timeout != 250*time.Millisecond {
		t.Fatalf("udp: %+v", c)
	}
	for _, s := range invalidSettings {
		if _, err := parseConfig(s); !errors.Is(err, metrics.ErrInvalid) {
			t.Errorf("parseConfig(%v) = %v; want ErrInvalid", s, err)
		}
	}
}

// decodeLines parses line protocol into points keyed by measurement.
func decodeLines(t *testing.T, data []byte) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	dec := lineprotocol.NewDecoderWithBytes(data)
	for dec.Next() {
		m, err := dec.Measurement()
		if err != nil {
			t.Fatalf("measurement: %v", err)
		}
		p := map[string]any{}
		prev := ""
		for {
			k, v, err := dec.NextTag()
			if err != nil {
				t.Fatalf("tag: %v", err)
			}
			if k == nil {
				break
			}
			if string(k) <= prev {
				t.Fatalf("tags out of order: %q after %q", k, prev)
			}
			prev = string(k)
			p["tag:"+string(k)] = string(v)
		}
		for {
			k, v, err := dec.NextField()
			if err != nil {
				t.Fatalf("field: %v", err)
			}
			if k == nil {
				break
			}
			p[string(k)] = v.Interface()
		}
		ts, err := dec.Time(lineprotocol.Nanosecond, time.Time{})
		if err != nil {
			t.Fatalf("time: %v", err)
		}
		p["time"] = ts
		out[string(m)] = append(out[string(m)], p)
	}
	return out
}

func TestEncode(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	lines, skipped, err := encode(metrics.Points(sdktest.SampleBatch(at)), lineprotocol.Nanosecond)
	if skipped != 0 || err != nil {
		t.Fatalf("skipped %d: %v", skipped, err)
	}
	got := decodeLines(t, lines)
	vm := got["petrel_vm"][0]
	if vm["tag:vm"] != "web:app" || vm["tag:path"] != "web" || vm["tag:backend"] != "hvt" || vm["tag:host"] != "petrel-test" ||
		vm["rss_bytes"] != int64(12_345_678) || vm["cpu_user_seconds"] != 1.5 || vm["memory_bytes"] != int64(64<<20) ||
		!vm["time"].(time.Time).Equal(at) {
		t.Fatalf("petrel_vm: %v", vm)
	}
	if db := got["petrel_vm"][1]; db["tag:path"] != ":" || db["restarts"] != int64(3) {
		t.Fatalf("second VM: %v", db)
	}
	ifc := got["petrel_vm_interface"][0]
	if ifc["tag:interface"] != "service" || ifc["tag:host_if"] != "tap0" || ifc["tag:bridge"] != "br0" || ifc["rx_bytes"] != int64(10240) || ifc["tx_dropped"] != int64(4) {
		t.Fatalf("petrel_vm_interface: %v", ifc)
	}
	if len(got["petrel_host"]) != 1 || len(got["petrel_daemon"]) != 1 || len(got["petrel_vms"]) != 2 || len(got["petrel_plugin"]) != 2 {
		t.Fatalf("measurements: %v", got)
	}
	if got["petrel_daemon"][0]["vms"] != int64(2) || got["petrel_host"][0]["load1"] != 0.75 {
		t.Fatalf("host/daemon: %v %v", got["petrel_host"], got["petrel_daemon"])
	}

	// Second precision: timestamps are whole seconds.
	lines, _, _ = encode(metrics.Points(sdktest.SampleBatch(at)), lineprotocol.Second)
	dec := lineprotocol.NewDecoderWithBytes(lines)
	dec.Next()
	dec.Measurement()
	for k, _, _ := dec.NextTag(); k != nil; k, _, _ = dec.NextTag() {
	}
	for k, _, _ := dec.NextField(); k != nil; k, _, _ = dec.NextField() {
	}
	if ts, err := dec.Time(lineprotocol.Second, time.Time{}); err != nil || ts.Unix() != 1700000000 {
		t.Fatalf("second precision time %v %v", ts, err)
	}
}

func TestEncodeOddBatch(t *testing.T) {
	pts := metrics.Points(sdktest.OddBatch(time.Now()))
	lines, skipped, err := encode(pts, lineprotocol.Nanosecond)
	if skipped != 0 {
		t.Fatalf("skipped %d points: %v", skipped, err)
	}
	got := decodeLines(t, lines)
	n := 0
	for _, ps := range got {
		n += len(ps)
	}
	if n != len(pts) {
		t.Fatalf("%d lines decode from %d points:\n%s", n, len(pts), lines)
	}
	if vm := got["petrel_vm"][0]; vm["tag:vm"] != `odd vm,"x"=y` || vm["tag:state"] != "running failed" {
		t.Fatalf("odd tags: %v", vm)
	}
}

func TestDatagrams(t *testing.T) {
	lines := []byte("aaaa\nbbbb\ncccccccccccc\ndd\n")
	got := datagrams(lines, 10)
	want := []string{"aaaa\nbbbb\n", "cccccccccccc\n", "dd\n"}
	if len(got) != len(want) {
		t.Fatalf("datagrams = %q", got)
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Fatalf("datagram %d = %q, want %q", i, got[i], want[i])
		}
	}
	if len(datagrams(nil, 10)) != 0 {
		t.Fatal("datagrams of nothing")
	}
}

// lineReceiver is a TCP line-protocol receiver like Telegraf's
// socket_listener: it records every line it gets.
type lineReceiver struct {
	l     net.Listener
	mu    sync.Mutex
	lines []string
	conns []net.Conn
	wg    sync.WaitGroup
}

func newLineReceiver(t *testing.T) *lineReceiver {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	r := &lineReceiver{l: l}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns = append(r.conns, c)
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				sc := bufio.NewScanner(c)
				sc.Buffer(nil, 1<<20)
				for sc.Scan() {
					r.mu.Lock()
					r.lines = append(r.lines, sc.Text())
					r.mu.Unlock()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		r.dropConns()
		r.wg.Wait()
	})
	return r
}

// dropConns closes every accepted connection, as a restarting receiver would.
func (r *lineReceiver) dropConns() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

// waitFor waits until a received line ends with the given timestamp.
func (r *lineReceiver) waitFor(t *testing.T, ns int64) {
	t.Helper()
	suffix := " " + strconv.FormatInt(ns, 10)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, l := range r.lines {
			if len(l) > len(suffix) && l[len(l)-len(suffix):] == suffix {
				r.mu.Unlock()
				return
			}
		}
		r.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no line with timestamp %d arrived", ns)
}

func TestSinkSuiteTCP(t *testing.T) {
	recv := newLineReceiver(t)
	sdktest.SinkSuite{
		New: func(*testing.T) metrics.Sink { return newSink() },
		Settings: func(*testing.T) map[string]string {
			return map[string]string{"protocol": "tcp", "address": recv.l.Addr().String()}
		},
		Invalid: invalidSettings,
		Delivered: func(t *testing.T, _ map[string]string, b *pluginv1.Batch) {
			recv.waitFor(t, b.GetTimeNs())
		},
	}.Run(t)
}

// TestTCPReconnect checks that a receiver dropping the connection costs no
// batch: the next Write notices and redials.
func TestTCPReconnect(t *testing.T) {
	recv := newLineReceiver(t)
	sk := sdktest.ServeMetrics(t, newSink())
	ctx := context.Background()
	if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{"protocol": "tcp", "address": recv.l.Addr().String()}}); err != nil {
		t.Fatal(err)
	}
	defer sk.Close(ctx)
	for i := 0; i < 3; i++ {
		b := sdktest.SampleBatch(time.Now())
		if err := sk.Write(ctx, b); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		recv.waitFor(t, b.GetTimeNs())
		recv.dropConns()
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWriteTimeout checks that a destination that accepts a request and
// never answers costs one timeout, not a stuck plugin.
func TestWriteTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	sk := sdktest.ServeMetrics(t, newSink())
	ctx := context.Background()
	if err := sk.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{"url": srv.URL, "db": "petrel", "timeout": "300ms"}}); err != nil {
		t.Fatal(err)
	}
	defer sk.Close(ctx)
	start := time.Now()
	err := sk.Write(ctx, sdktest.SampleBatch(time.Now()))
	took := time.Since(start)
	if !errors.Is(err, metrics.ErrUnavailable) || took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Write to a hanging server = %v after %s; want ErrUnavailable after about 300ms", err, took)
	}
	t.Logf("Write to a hanging server failed after %s: %v", took.Round(time.Millisecond), err)
	fp, err := sk.Fingerprint(ctx)
	if err != nil || fp.GetHealth() != pluginv1.Health_HEALTH_DEGRADED {
		t.Fatalf("Fingerprint of a hanging server = %v, %v; want degraded", fp, err)
	}
}

// fakeInflux answers /write with 404 "database not found" until a
// CREATE DATABASE over /query succeeds, which it allows only to admin
// (basic auth admin:secret) when auth is on, answering others as
// InfluxDB 1.x does.
type fakeInflux struct {
	auth    bool
	mu      sync.Mutex
	created bool
	creates int
	writes  int
}

func (f *fakeInflux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	user, pass, _ := r.BasicAuth()
	admin := !f.auth || (user == "admin" && pass == "secret")
	switch r.URL.Path {
	case "/query":
		r.ParseForm()
		if r.Form.Get("q") != `CREATE DATABASE "pet\\rel\"s"` {
			http.Error(w, `{"error":"unexpected query"}`, http.StatusBadRequest)
			return
		}
		f.creates++
		if !admin {
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf("error authorizing query: %s not authorized to execute statement '%s', requires admin privilege", user, r.Form.Get("q"))})
			return
		}
		f.created = true
		w.Write([]byte(`{"results":[{"statement_id":0}]}`))
	case "/write":
		if !f.created {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]string{"error": `database not found: "pet\rel"s"`})
			return
		}
		f.writes++
		w.WriteHeader(http.StatusNoContent)
	}
}

// TestDatabaseCreatedWhenMissing: the first write to a database that does
// not exist creates it and lands; where the user may not create it, the
// write fails with an error that may pass (the batch is kept) and says
// what to run.
func TestDatabaseCreatedWhenMissing(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		fake     *fakeInflux
		settings map[string]string
		ok       bool
	}{
		{"open server", &fakeInflux{}, nil, true},
		{"admin", &fakeInflux{auth: true}, map[string]string{"username": "admin", "password": "secret"}, true},
		{"writer only", &fakeInflux{auth: true}, map[string]string{"username": "bob", "password": "pw"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.fake)
			defer srv.Close()
			s := newSink()
			settings := map[string]string{"url": srv.URL, "db": `pet\rel"s`}
			for k, v := range tc.settings {
				settings[k] = v
			}
			if err := s.Configure(ctx, &pluginv1.ConfigureRequest{Settings: settings}); err != nil {
				t.Fatal(err)
			}
			defer s.Close(ctx)
			err := s.Write(ctx, sdktest.SampleBatch(time.Now()))
			if tc.ok {
				if err != nil || tc.fake.creates != 1 || tc.fake.writes != 1 {
					t.Fatalf("Write = %v after %d creates, %d writes", err, tc.fake.creates, tc.fake.writes)
				}
				if err := s.Write(ctx, sdktest.SampleBatch(time.Now())); err != nil || tc.fake.creates != 1 {
					t.Fatalf("second Write = %v after %d creates; want no second create", err, tc.fake.creates)
				}
				return
			}
			if !errors.Is(err, metrics.ErrUnavailable) || !strings.Contains(err.Error(), `user "bob" may not create it`) ||
				!strings.Contains(err.Error(), "requires admin privilege") || !strings.Contains(err.Error(), `influx -execute 'CREATE DATABASE "pet\\rel\"s"'`) {
				t.Fatalf("Write = %v; want an actionable ErrUnavailable", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestRefusedContent: a batch InfluxDB refuses for its content is not
// worth keeping; credentials it refuses are (an operator fixes them).
func TestRefusedContent(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusBadRequest)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
		w.Write([]byte(`{"error":"partial write: field type conflict"}`))
	}))
	defer srv.Close()
	s := newSink()
	ctx := context.Background()
	if err := s.Configure(ctx, &pluginv1.ConfigureRequest{Settings: map[string]string{"url": srv.URL, "db": "petrel"}}); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	err := s.Write(ctx, sdktest.SampleBatch(time.Now()))
	if err == nil || errors.Is(err, metrics.ErrUnavailable) || !strings.Contains(err.Error(), "field type conflict") {
		t.Fatalf("Write = %v; want InfluxDB's refusal, not ErrUnavailable", err)
	}
	status.Store(http.StatusUnauthorized)
	if err := s.Write(ctx, sdktest.SampleBatch(time.Now())); !errors.Is(err, metrics.ErrUnavailable) || !strings.Contains(err.Error(), "username and password") {
		t.Fatalf("Write = %v; want ErrUnavailable naming the credentials", err)
	}
}

// BenchmarkEncode500 measures turning a 500-VM batch into line protocol,
// the plugin's share of each interval's work.
func BenchmarkEncode500(b *testing.B) {
	batch := sdktest.SampleBatch(time.Now())
	for len(batch.Vms) < 500 {
		vm := proto.Clone(batch.Vms[0]).(*pluginv1.VMSample)
		vm.Name = "bench:vm" + strconv.Itoa(len(batch.Vms))
		batch.Vms = append(batch.Vms, vm)
	}
	b.ReportAllocs()
	for b.Loop() {
		lines, _, _ := encode(metrics.Points(batch), lineprotocol.Nanosecond)
		b.SetBytes(int64(len(lines)))
	}
}
