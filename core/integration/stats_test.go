package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// TestStatsAndSinks: petreld samples VMs and their interfaces, `petrel
// stats` shows them, a third-party metrics plugin (the contrib example,
// importing only sdk/) receives one batch per interval, and a sink killed
// with SIGKILL is restarted and resumes without touching VMs.
func TestStatsAndSinks(t *testing.T) {
	if _, err := os.Stat(filepath.Join(binDir, "petrel-plugin-jsonl")); err != nil {
		t.Skip("needs the example metrics plugin built as petrel-plugin-jsonl in", binDir)
	}
	e := newEnv(t)
	e.inNetns()
	out := filepath.Join(e.dir, "metrics.jsonl")
	cfg, _ := os.ReadFile(e.config)
	cfg = append(cfg, []byte(fmt.Sprintf("stats_interval = \"200ms\"\nmetrics \"jsonl\" {\n  settings = { path = %q }\n}\n", out))...)
	os.WriteFile(e.config, cfg, 0o600)
	e.start()
	img := e.image("s.hvt", solo5.TargetHVT, netImage...)
	e.mustPetrel("create", "team:web", img, "--net", "service0:br0", "--arg", "run=forever", "--mem", "16")
	vm := e.info("team:web")

	var batch struct {
		VMs []struct {
			Name       string `json:"name"`
			State      string `json:"state"`
			RSS        string `json:"rss_bytes"`
			Interfaces []struct {
				Name string `json:"name"`
			} `json:"interfaces"`
		} `json:"vms"`
	}
	waitFor(t, "stats of the VM", 10*time.Second, func() bool {
		r := e.petrel("stats", "team", "--json")
		return r.code == 0 && json.Unmarshal([]byte(strings.TrimSpace(r.out)), &batch) == nil &&
			len(batch.VMs) == 1 && batch.VMs[0].RSS != "" && batch.VMs[0].RSS != "0"
	})
	if batch.VMs[0].Name != "team:web" || len(batch.VMs[0].Interfaces) != 1 || batch.VMs[0].Interfaces[0].Name != "service0" {
		t.Fatalf("stats: %+v", batch)
	}
	if table := e.mustPetrel("stats"); !strings.Contains(table, "team:web") || !strings.Contains(table, "service0") {
		t.Fatalf("stats table:\n%s", table)
	}

	countVMPoints := func() int {
		f, err := os.Open(out)
		if err != nil {
			return 0
		}
		defer f.Close()
		n := 0
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"petrel_vm"`) && strings.Contains(sc.Text(), "team:web") {
				n++
			}
		}
		return n
	}
	waitFor(t, "batches in the sink", 10*time.Second, func() bool { return countVMPoints() >= 3 })
	sinks := children(e.pid(), "petrel-plugin-jsonl")
	if len(sinks) != 1 {
		t.Fatalf("sink processes: %v", sinks)
	}
	syscall.Kill(sinks[0], syscall.SIGKILL)
	before := countVMPoints()
	waitFor(t, "the sink to resume", 15*time.Second, func() bool { return countVMPoints() >= before+3 })
	if again := e.info("team:web"); again.Pid != vm.Pid || again.State != "running" {
		t.Fatalf("VM touched by a sink crash: %+v", again)
	}
	e.mustPetrel("destroy", "team:web")
}
