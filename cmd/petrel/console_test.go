package main

import (
	"strings"
	"testing"
	"time"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"10m", now.Add(-10 * time.Minute)},
		{"1h30m", now.Add(-90 * time.Minute)},
		{"90s", now.Add(-90 * time.Second)},
		{"2d", now.Add(-48 * time.Hour)},
		{"1d12h", now.Add(-36 * time.Hour)},
		{"0s", now},
		{"2026-11-24T10:00:00Z", time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)},
		{"2026-11-24T10:00:00.5+01:00", time.Date(2026, 11, 24, 9, 0, 0, 5e8, time.UTC)},
	} {
		got, err := parseSince(c.in, now)
		if err != nil || !got.Equal(c.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"yesterday", "-10m", "10", "2026-11-24", "d", "1d-2h"} {
		if _, err := parseSince(bad, now); err == nil || !strings.Contains(err.Error(), "neither a duration back from now") {
			t.Errorf("parseSince(%q): %v, want a refusal saying what is accepted", bad, err)
		}
	}
}

// TestConsoleFlags checks the request and output of the spellings docker
// and kubectl users type: --tail (or -n) for --count, --since with a
// duration, and timestamps on by default, off with --no-timestamps or
// --timestamps=false.
func TestConsoleFlags(t *testing.T) {
	stamp := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	d := &stubDaemon{lines: []*daemonv1.ConsoleLine{{TimeNs: stamp.UnixNano(), Text: "Hello from Petrel"}}}
	sock := startStub(t, d)
	console := func(args ...string) (*daemonv1.ConsoleRequest, string) {
		t.Helper()
		code, out, errText := runPetrel(append([]string{"--socket", sock, "console", "web"}, args...)...)
		if code != exitOK {
			t.Fatalf("petrel console web %v: exit %d: %s", args, code, errText)
		}
		return d.lastConsole(), out
	}
	for _, args := range [][]string{{"--count", "7"}, {"--tail", "7"}, {"-n", "7"}, {"--tail=7", "--count=7"}} {
		if req, _ := console(args...); req.GetCount() != 7 {
			t.Errorf("console %v: count %d, want 7", args, req.GetCount())
		}
	}
	if req, _ := console("--tail", "all"); req.GetCount() != 0 {
		t.Errorf("console --tail all: count %d, want 0", req.GetCount())
	}
	before := time.Now()
	req, _ := console("--since", "10m")
	after := time.Now()
	if since := time.Unix(0, req.GetSinceNs()); since.Before(before.Add(-10*time.Minute)) || since.After(after.Add(-10*time.Minute)) {
		t.Errorf("console --since 10m: since %v, want 10 minutes before %v", since, before)
	}
	withStamp := "2026-11-24T10:00:00.000Z Hello from Petrel\n"
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, withStamp},
		{[]string{"--timestamps"}, withStamp},
		{[]string{"-t"}, withStamp},
		{[]string{"--no-timestamps=false"}, withStamp},
		{[]string{"--no-timestamps"}, "Hello from Petrel\n"},
		{[]string{"--timestamps=false"}, "Hello from Petrel\n"},
		{[]string{"--timestamps=false", "--no-timestamps"}, "Hello from Petrel\n"},
	} {
		if _, out := console(c.args...); out != c.want {
			t.Errorf("console %v printed %q, want %q", c.args, out, c.want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tail", "3", "--count", "4"}, "--count and --tail are one setting"},
		{[]string{"--tail", "-1"}, "must not be negative"},
		{[]string{"--count", "x"}, "--count x: not a number of lines"},
		{[]string{"--since", "yesterday"}, "neither a duration back from now"},
		{[]string{"--timestamps", "--no-timestamps"}, "contradict each other"},
	} {
		code, _, errText := runPetrel(append([]string{"--socket", sock, "console", "web"}, c.args...)...)
		if code != exitUsage || !strings.Contains(errText, c.want) {
			t.Errorf("console %v: exit %d %q, want %d and %q", c.args, code, errText, exitUsage, c.want)
		}
	}
}

// TestConsolePacked: petrel console asks for packed lines and prints
// them, the marker of lost lines in place, as it prints plain ones.
func TestConsolePacked(t *testing.T) {
	stamp := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC).UnixNano()
	d := &stubDaemon{lines: []*daemonv1.ConsoleLine{
		{Packed: &daemonv1.PackedConsoleLines{Count: 2, StartNs: stamp, Deltas: []int64{1e9}, Text: "one\ntwo"}},
		{Packed: &daemonv1.PackedConsoleLines{Count: 1, Dropped: 5, StartNs: stamp + 2e9, Text: "three", Truncated: []uint32{0}}},
		{TimeNs: stamp + 3e9, Text: "four"},
	}}
	sock := startStub(t, d)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "2026-11-24T10:00:00.000Z one\n2026-11-24T10:00:01.000Z two\n[petrel: 5 lines missed]\n2026-11-24T10:00:02.000Z three\n2026-11-24T10:00:03.000Z four\n"},
		{[]string{"--no-timestamps"}, "one\ntwo\n[petrel: 5 lines missed]\nthree\nfour\n"},
		{[]string{"--json"}, `{"dropped":0,"text":"one","time":"2026-11-24T10:00:00Z","truncated":false}` + "\n" +
			`{"dropped":0,"text":"two","time":"2026-11-24T10:00:01Z","truncated":false}` + "\n" +
			`{"dropped":5,"text":"","time":"2026-11-24T10:00:02Z","truncated":false}` + "\n" +
			`{"dropped":0,"text":"three","time":"2026-11-24T10:00:02Z","truncated":true}` + "\n" +
			`{"dropped":0,"text":"four","time":"2026-11-24T10:00:03Z","truncated":false}` + "\n"},
	} {
		code, out, errText := runPetrel(append([]string{"--socket", sock, "console", "web"}, c.args...)...)
		if code != exitOK {
			t.Fatalf("petrel console web %v: exit %d: %s", c.args, code, errText)
		}
		if out != c.want {
			t.Errorf("console %v printed\n%s\nwant\n%s", c.args, out, c.want)
		}
	}
	if !d.lastConsole().GetPacked() {
		t.Error("petrel console did not ask for packed lines")
	}
}
