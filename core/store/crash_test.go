package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv names the data directory a re-executed test binary writes
// to in TestCrashDurability.
const crashChildEnv = "PETREL_STORE_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		if err := crashChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild increments the counter record until it is killed, printing
// each value after Put has acknowledged it.
func crashChild(dir string) error {
	s, err := Open(dir)
	if err != nil {
		return err
	}
	defer s.Close()
	var r rec
	if err := s.Get("crash", "counter", &r); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if _, err := os.Stdout.WriteString("ready\n"); err != nil {
		return err
	}
	for i := r.Count + 1; ; i++ {
		if err := s.Put("crash", "counter", rec{Name: "counter", Count: i}); err != nil {
			return err
		}
		if _, err := os.Stdout.WriteString(strconv.Itoa(i) + "\n"); err != nil {
			return err
		}
	}
}

func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary; skipped with -short")
	}
	dir := filepath.Join(t.TempDir(), "data")
	const rounds = 20
	total, prev := 0, 0
	for round := 0; round < rounds; round++ {
		last := runAndKill(t, dir, time.Duration(1+rand.IntN(50))*time.Millisecond)
		s, err := Open(dir)
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		var r rec
		err = s.Get("crash", "counter", &r)
		s.Close()
		if err != nil && !(errors.Is(err, ErrNotFound) && last == 0) {
			t.Fatalf("round %d: read after SIGKILL: %v", round, err)
		}
		if r.Count < last || r.Count < prev || r.Count > max(last, prev)+1 {
			t.Fatalf("round %d: stored %d, last acknowledged %d, previously stored %d", round, r.Count, last, prev)
		}
		prev = r.Count
		if last > 0 {
			total++
		}
		matches, _ := filepath.Glob(filepath.Join(dir, "crash", "*.tmp"))
		if len(matches) != 0 {
			t.Fatalf("round %d: Open left temporary files %q", round, matches)
		}
	}
	if total == 0 {
		t.Fatal("no round acknowledged a write before the kill")
	}
	t.Logf("%d/%d rounds were killed after at least one acknowledged write", total, rounds)
}

// runAndKill runs crashChild on dir, SIGKILLs it delay after it reports
// ready and returns the last value it acknowledged (0 if none).
func runAndKill(t *testing.T, dir string, delay time.Duration) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	watchdog := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer watchdog.Stop()

	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		cmd.Wait()
		t.Fatalf("child did not start: %q, stderr: %s", sc.Text(), stderr.String())
	}
	time.Sleep(delay)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	last := 0
	for sc.Scan() {
		n, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatalf("child printed %q", sc.Text())
		}
		last = n
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child ended with %v, stderr: %s", err, stderr.String())
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v before it was killed, stderr: %s", err, stderr.String())
	}
	return last
}
