package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/contrib/testservers"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestMetricsToRealServers: petreld with the Influx and Prometheus sinks
// writes its VMs' statistics to Debian's influxd, into a database the
// sink creates, and has them scraped by Debian's prometheus. Then influxd
// stops for 10 s under load (a batch every 200 ms): petreld and the VM
// carry on, the influx plugin reports itself degraded with the error and
// keeps the batches on disk, and in the middle of the outage its plugin
// is killed (petreld restarts it) and petreld itself is restarted. Once
// influxd is back, every batch petreld wrote meanwhile, as recorded by a
// third sink (the example jsonl plugin, which stayed up), is in InfluxDB,
// and petrel_sink says none was lost.
func TestMetricsToRealServers(t *testing.T) {
	needPlugins(t, "influx", "prometheus")
	if _, err := os.Stat(filepath.Join(binDir, "petrel-plugin-jsonl")); err != nil {
		t.Skip("needs the example metrics plugin built as petrel-plugin-jsonl in", binDir)
	}
	influx := testservers.StartInfluxd(t, "petrel_udp")
	promAddr := testservers.FreeAddr(t)
	prom := testservers.StartPrometheus(t, promAddr)

	e := newEnv(t)
	written := filepath.Join(e.dir, "written.jsonl")
	cfg, _ := os.ReadFile(e.config)
	cfg = append(cfg, []byte(fmt.Sprintf(`stats_interval = "200ms"
metrics "influx" {
  settings = { protocol = "http", url = "http://%s", db = "petrel", timeout = "1s" }
}
metrics "prometheus" {
  settings = { address = %q }
}
metrics "jsonl" {
  settings = { path = %q }
}
`, influx.HTTPAddr, promAddr, written))...)
	os.WriteFile(e.config, cfg, 0o600)
	e.start()
	img := e.image("m.hvt", solo5.TargetHVT)
	e.mustPetrel("create", "team:web", img, "--arg", "run=forever", "--mem", "16")
	vm := e.info("team:web")

	rows := influx.WaitRows(t, "petrel", `SELECT "rss_bytes", "memory_bytes" FROM "petrel_vm" WHERE "vm" = 'team:web' AND "path" = 'team' ORDER BY time DESC LIMIT 1`, 15*time.Second)
	if len(rows) != 1 || fmt.Sprint(rows[0][2]) != fmt.Sprint(16<<20) || fmt.Sprint(rows[0][1]) == "0" {
		t.Fatalf("influx rows: %v", rows)
	}
	vals := testservers.WaitQuery(t, prom, `petrel_vm_resident_memory_bytes{vm="team:web"}`, func(v []float64) bool { return len(v) == 1 && v[0] > 1<<20 })
	t.Logf("prometheus sees %.1f MB resident for team:web", vals[0]/(1<<20))
	if v := testservers.WaitQuery(t, prom, `petrel_build_info{version!="",goversion=~"go.+"}`, func(v []float64) bool { return len(v) == 1 }); v[0] != 1 {
		t.Fatalf("petrel_build_info = %v", v)
	}

	// InfluxDB goes away.
	influx.Stop()
	outage := time.Now()
	waitFor(t, "the influx plugin to report failing writes", 10*time.Second, func() bool {
		p := e.plugin("influx")
		return p.Health == "degraded" && strings.Contains(p.Description, "connection refused") && p.Attributes["buffer.queued_batches"] != "0"
	})
	t.Logf("petrel plugins: influx %s: %s", e.plugin("influx").Health, e.plugin("influx").Description)
	if r := e.petrel("info", "team:web"); r.code != 0 {
		t.Fatalf("petreld unhappy while influxd is down: %s", r.err)
	}
	// The plugin crashes, between two writes.
	time.Sleep(2 * time.Second)
	batches := len(readDaemonTimes(t, written))
	waitFor(t, "a batch in the jsonl sink", 5*time.Second, func() bool { return len(readDaemonTimes(t, written)) > batches })
	time.Sleep(100 * time.Millisecond)
	pids := children(e.pid(), "petrel-plugin-influx")
	if len(pids) != 1 {
		t.Fatalf("influx plugin processes: %v", pids)
	}
	syscall.Kill(pids[0], syscall.SIGKILL)
	time.Sleep(3 * time.Second)
	// petreld restarts.
	e.stop()
	e.start()
	time.Sleep(2 * time.Second)
	p := e.plugin("influx")
	queued, _ := strconv.Atoi(p.Attributes["buffer.queued_batches"])
	queuedBytes, _ := strconv.Atoi(p.Attributes["buffer.queued_bytes"])
	bufDir := filepath.Join(e.dataDir, "plugins", "influx", "buffer")
	onDisk := allocated(t, bufDir)
	t.Logf("after %s of outage: %d batches queued, %d bytes counted, %d bytes allocated in %s (%d per batch)",
		time.Since(outage).Round(time.Second), queued, queuedBytes, onDisk, bufDir, onDisk/int64(max(queued, 1)))
	if p.Health != "degraded" || queued < 20 {
		t.Fatalf("influx plugin after restarts during the outage: %+v", p)
	}
	if again := e.info("team:web"); again.Pid != vm.Pid || again.State != "running" {
		t.Fatalf("VM affected by influxd outage: %+v", again)
	}
	for time.Since(outage) < 10*time.Second {
		time.Sleep(100 * time.Millisecond)
	}

	influx.Start()
	back := time.Now()
	waitFor(t, "the influx plugin to deliver what it kept", 30*time.Second, func() bool {
		p := e.plugin("influx")
		return p.Health == "healthy" && p.Attributes["buffer.queued_batches"] == "0"
	})
	t.Logf("kept batches delivered %s after influxd came back", time.Since(back).Round(time.Millisecond))
	// Compare what petreld wrote with what InfluxDB has, up to a moment
	// both sinks are surely past.
	time.Sleep(time.Second)
	cut := time.Now().Add(-500 * time.Millisecond).UnixNano()
	var want []int64
	for _, ns := range readDaemonTimes(t, written) {
		if ns <= cut {
			want = append(want, ns)
		}
	}
	rows = influx.WaitRows(t, "petrel", fmt.Sprintf(`SELECT "vms" FROM "petrel_daemon" WHERE time <= %d`, cut), 0)
	stored := map[int64]bool{}
	for _, r := range rows {
		ts, err := time.Parse(time.RFC3339Nano, r[0].(string))
		if err != nil {
			t.Fatal(err)
		}
		stored[ts.UnixNano()] = true
	}
	var missing []string
	during := 0
	for _, ns := range want {
		if ns > outage.UnixNano() && ns < back.UnixNano() {
			during++
		}
		if !stored[ns] {
			missing = append(missing, time.Unix(0, ns).UTC().Format(time.RFC3339Nano))
		}
	}
	t.Logf("%d batches written (%d while influxd was down), %d stored, %d missing", len(want), during, len(stored), len(missing))
	if len(missing) > 0 || len(stored) != len(want) || during < 30 {
		t.Fatalf("%d batches written, %d stored; missing: %v", len(want), len(stored), missing)
	}
	lost := influx.WaitRows(t, "petrel", `SELECT max("queued_batches"), max("dropped_batches") FROM "petrel_sink" WHERE "sink" = 'influx'`, 0)
	if len(lost) != 1 || fmt.Sprint(lost[0][2]) != "0" || fmt.Sprint(lost[0][1]) == "0" {
		t.Fatalf("petrel_sink for influx: %v; want the outage's queue and nothing lost", lost)
	}
	t.Logf("petrel_sink for influx: at most %v batches queued, %v lost", lost[0][1], lost[0][2])
	if v := testservers.WaitQuery(t, prom, `petrel_sink_dropped_batches_total{sink="prometheus"}`, func(v []float64) bool { return len(v) == 1 }); v[0] != 0 {
		t.Fatalf("prometheus sink lost %v batches", v)
	}
	e.mustPetrel("destroy", "team:web")
}

// pluginState is one plugin as `petrel plugins --json` lists it.
type pluginState struct {
	Name        string            `json:"name"`
	Health      string            `json:"health"`
	Description string            `json:"description"`
	Attributes  map[string]string `json:"attributes"`
	Restarts    int               `json:"restarts"`
}

// plugin returns the named plugin's state as petreld reports it.
func (e *env) plugin(name string) pluginState {
	e.t.Helper()
	var list []pluginState
	out := e.mustPetrel("plugins", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		e.t.Fatalf("plugins --json: %v\n%s", err, out)
	}
	for _, p := range list {
		if p.Name == name {
			return p
		}
	}
	e.t.Fatalf("no plugin %s in %s", name, out)
	return pluginState{}
}

// readDaemonTimes returns the times of the petrel_daemon points in a
// jsonl sink's file, one per batch, in order.
func readDaemonTimes(t *testing.T, path string) []int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []int64
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var p struct {
			Time        time.Time `json:"time"`
			Measurement string    `json:"measurement"`
		}
		if json.Unmarshal(sc.Bytes(), &p) != nil || p.Measurement != "petrel_daemon" {
			continue
		}
		out = append(out, p.Time.UnixNano())
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// allocated is the disk space of the files in dir.
func allocated(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("buffer directory: %v", err)
	}
	var total int64
	for _, en := range entries {
		if fi, err := en.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
	}
	return total
}
