package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/sdktest/servers"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestMetricsToRealServers: petreld with the Influx and Prometheus sinks
// writes its VMs' statistics to Debian's influxd and has them scraped by
// Debian's prometheus; stopping influxd touches neither petreld nor VMs,
// its lost batches are counted, and data flows again once it returns.
func TestMetricsToRealServers(t *testing.T) {
	influx := servers.StartInfluxd(t, "petrel_udp")
	influx.CreateDB("petrel")
	promAddr := servers.FreeAddr(t)
	prom := servers.StartPrometheus(t, promAddr)

	e := newEnv(t)
	cfg, _ := os.ReadFile(e.config)
	cfg = append(cfg, []byte(fmt.Sprintf(`stats_interval = "500ms"
metrics "influx" {
  settings = { protocol = "http", url = "http://%s", db = "petrel", timeout = "1s" }
}
metrics "prometheus" {
  settings = { address = %q }
}
`, influx.HTTPAddr, promAddr))...)
	os.WriteFile(e.config, cfg, 0o600)
	e.start()
	img := e.image("m.hvt", solo5.TargetHVT)
	e.mustPetrel("create", "team:web", img, "--arg", "run=forever", "--mem", "16")
	vm := e.info("team:web")

	rows := influx.WaitRows(t, "petrel", `SELECT "rss_bytes", "memory_bytes" FROM "petrel_vm" WHERE "vm" = 'team:web' AND "path" = 'team' ORDER BY time DESC LIMIT 1`, 15*time.Second)
	if len(rows) != 1 || fmt.Sprint(rows[0][2]) != fmt.Sprint(16<<20) || fmt.Sprint(rows[0][1]) == "0" {
		t.Fatalf("influx rows: %v", rows)
	}
	vals := servers.WaitQuery(t, prom, `petrel_vm_resident_memory_bytes{vm="team:web"}`, func(v []float64) bool { return len(v) == 1 && v[0] > 1<<20 })
	t.Logf("prometheus sees %.1f MB resident for team:web", vals[0]/(1<<20))

	// InfluxDB goes away: petreld and the VM carry on, batches are lost
	// and counted, and once it is back data flows again.
	influx.Stop()
	time.Sleep(3 * time.Second)
	if r := e.petrel("info", "team:web"); r.code != 0 {
		t.Fatalf("petreld unhappy while influxd is down: %s", r.err)
	}
	if again := e.info("team:web"); again.Pid != vm.Pid || again.State != "running" {
		t.Fatalf("VM affected by influxd outage: %+v", again)
	}
	influx.Start()
	since := time.Now().UnixNano()
	rows = influx.WaitRows(t, "petrel", fmt.Sprintf(`SELECT "rss_bytes" FROM "petrel_vm" WHERE "vm" = 'team:web' AND time > %d`, since), 15*time.Second)
	if len(rows) == 0 {
		t.Fatal("no data after influxd came back")
	}
	lost := influx.WaitRows(t, "petrel", fmt.Sprintf(`SELECT "dropped_batches" FROM "petrel_daemon" WHERE time > %d AND "dropped_batches" > 0 LIMIT 1`, since), 15*time.Second)
	if len(lost) == 0 {
		t.Fatal("batches lost during the outage were not counted")
	}
	t.Logf("batches lost while influxd was down: %v", lost[0][1])
	if out := e.mustPetrel("plugins"); !strings.Contains(out, "influx") || !strings.Contains(out, "prometheus") {
		t.Fatalf("plugins:\n%s", out)
	}
	e.mustPetrel("destroy", "team:web")
}
