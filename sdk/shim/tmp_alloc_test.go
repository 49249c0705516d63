package shim

import (
	"context"
	"log"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestTmpAlloc(t *testing.T) {
	dir := t.TempDir()
	s, err := start(options{dir: dir, consoleLines: 1000, consoleBytes: 1 << 20, lineMax: 4096, argv: []string{"sh", "-c", "for i in $(seq 200); do echo line $i; done; sleep 3"}}, log.New(io.Discard, "", 0))
	if err != nil { t.Fatal(err) }
	sigs := make(chan os.Signal)
	go s.run(sigs)
	time.Sleep(300 * time.Millisecond)
	c := Dial(dir)
	_ = filepath.Join
	for _, op := range []string{"stats", "console", "info"} {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for i := 0; i < 20; i++ {
			switch op {
			case "stats": c.Stats(context.Background())
			case "console": c.Console(context.Background(), time.Time{}, 0, false, func(Line) error { return nil })
			case "info": c.Info(context.Background())
			}
		}
		runtime.ReadMemStats(&m1)
		t.Logf("%s: %d bytes/op %d allocs/op (client+server)", op, (m1.TotalAlloc-m0.TotalAlloc)/20, (m1.Mallocs-m0.Mallocs)/20)
	}
}
