package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/sdktest/ptytest"
)

// TestProgressOnTerminalsOnly: transfers draw a progress bar on a
// terminal, ending its line when they end or fail, and nothing at all
// where standard error is a file or a pipe, as in scripts.
func TestProgressOnTerminalsOnly(t *testing.T) {
	var buf bytes.Buffer
	if p := (&app{errw: &buf}).progressBar("uploading web.hvt"); p != nil {
		t.Error("a progress bar for a standard error that is not a terminal")
	}
	f, err := os.Create(t.TempDir() + "/stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if p := (&app{errw: f}).progressBar("uploading web.hvt"); p != nil {
		t.Error("a progress bar for a standard error that is a file")
	}

	ptmx, tty := ptytest.Open(t)
	a := &app{errw: tty}
	p := a.progressBar("uploading web.hvt")
	if p == nil {
		t.Fatal("no progress bar on a terminal")
	}
	p(0, 4<<20)
	time.Sleep(progressInterval)
	p(1<<20, 4<<20)
	if !a.midLine {
		t.Error("an unfinished bar is not recorded as such")
	}
	p(4<<20, 4<<20)
	if a.midLine {
		t.Error("a finished bar is recorded as unfinished")
	}
	fail := a.progressBar("downloading disk")
	time.Sleep(progressInterval)
	fail(1<<20, 4<<20)
	a.endProgress()
	tty.Close()
	out := ptytest.ReadAll(ptmx)
	for _, want := range []string{"\ruploading web.hvt [       ", " 25.0%", "\ruploading web.hvt [==============================] 100.0%", "\r\n",
		"\rdownloading disk [=======                       ]  25.0%"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output %q lacks %q", out, want)
		}
	}
	if !strings.HasSuffix(out, "\r\n") {
		t.Errorf("the failed transfer's line is not ended: %q", out)
	}
}
