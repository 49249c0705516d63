package activation

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// envHelper makes the test binary act as an activated daemon: it takes
// its listener from systemd's variables, accepts one connection and
// answers with the environment it sees.
const envHelper = "PETREL_ACTIVATION_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) == "1" {
		os.Exit(helper())
	}
	os.Exit(m.Run())
}

func helper() int {
	lis, err := Listener(Systemd)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer lis.Close()
	c, err := lis.Accept()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	fmt.Fprintf(c, "accepted LISTEN_PID=%q LISTEN_FDS=%q\n", os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"))
	return 0
}

// TestInheritedSocket passes a bound socket as file descriptor 3 the way
// systemd does (LISTEN_PID set to the final process by a shell that execs
// it) and checks the child serves on it and hides the variables.
func TestInheritedSocket(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("sh not found: needed to set LISTEN_PID to the child's pid")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	f, err := lis.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(sh, "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -test.run=NONE`, os.Args[0])
	cmd.Env = append(os.Environ(), envHelper+"=1")
	cmd.ExtraFiles = []*os.File{f}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
	}()
	// Close our copies so that only the child accepts.
	f.Close()
	c, err := net.DialTimeout("tcp", lis.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from activated child: %v (stderr: %s)", err, stderr.String())
	}
	if want := "accepted LISTEN_PID=\"\" LISTEN_FDS=\"\"\n"; line != want {
		t.Fatalf("child said %q, want %q", line, want)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("child: %v (stderr: %s)", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("child did not exit")
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		pid, fds string
		want     string
	}{
		{"", "", "not set"},
		{"42", "", "not set"},
		{"41", "1", "not this process"},
		{"x", "1", "not this process"},
		{"42", "0", "passes no socket"},
		{"42", "two", "passes no socket"},
		{"42", "2", "exactly one"},
	} {
		err := check(tc.pid, tc.fds, 42)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("check(%q, %q) = %v, want an error containing %q", tc.pid, tc.fds, err, tc.want)
		}
	}
	if err := check("42", "1", 42); err != nil {
		t.Errorf("valid activation refused: %v", err)
	}
}

func TestListenerNotActivated(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	if lis, err := Listener(Systemd); err == nil {
		lis.Close()
		t.Fatal("a LISTEN_PID naming another process was accepted")
	}
}

func TestListenerTCP(t *testing.T) {
	lis, err := Listener("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if _, ok := lis.(*net.TCPListener); !ok {
		t.Fatalf("got %T, want a TCP listener", lis)
	}
	if _, err := Listener("127.0.0.1:notaport"); err == nil {
		t.Fatal("a bad address was accepted")
	}
}
