package fdpass

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// serve starts a Registry on a socket in a temporary directory and
// returns it with the socket's path; it is closed when the test ends.
func serve(t *testing.T) (*Registry, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "petreld.sock.files")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRegistry(lis)
	t.Cleanup(func() { r.Close() })
	return r, path
}

// tempFile returns a file holding content, opened with flag.
func tempFile(t *testing.T, content string, flag int) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("counting descriptors needs /proc: %v", err)
	}
	return len(ents)
}

// settledFDs waits for this process's open descriptors to number want,
// for up to two seconds (the Registry closes a connection after it has
// answered), and returns the last count.
func settledFDs(t *testing.T, want int) int {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := openFDs(t)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPassAndTake: a passed file is the caller's own file description
// (its offset is shared, so progress can be followed), and its token
// names it once.
func TestPassAndTake(t *testing.T) {
	r, sock := serve(t)
	f := tempFile(t, "0123456789", os.O_RDWR)
	tok, err := Send(context.Background(), sock, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != 32 {
		t.Fatalf("token %q: want 32 hex digits", tok)
	}
	g, err := r.Take(tok)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	buf := make([]byte, 4)
	if _, err := g.Read(buf); err != nil || string(buf) != "0123" {
		t.Fatalf("read through the passed file: %q, %v", buf, err)
	}
	if off, err := Offset(f); err != nil || off != 4 {
		t.Fatalf("the sender's offset after petreld read 4 bytes: %d, %v", off, err)
	}
	if n, err := Readable(g); err != nil || n != 6 {
		t.Fatalf("Readable after 4 of 10 bytes: %d, %v; want 6", n, err)
	}
	if _, err := r.Take(tok); err == nil {
		t.Fatal("a token was taken twice")
	}
	if _, err := r.Take("0123"); err == nil {
		t.Fatal("an unknown token was taken")
	}
}

// passedOnClock serves a Registry whose clock the test moves (and which
// sweeps every sweepEvery, when not zero), passes it a file, and checks
// that the file is held: it returns the Registry, the token, the
// descriptors open before, and a function that moves the clock past
// TokenTTL.
func passedOnClock(t *testing.T, sweepEvery time.Duration) (r *Registry, tok string, before int, expire func()) {
	t.Helper()
	r, sock := serve(t)
	var mu sync.Mutex
	now := time.Now()
	r.mu.Lock()
	r.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	if sweepEvery > 0 {
		r.sweepEvery = sweepEvery
	}
	r.mu.Unlock()
	f := tempFile(t, "x", os.O_RDONLY)
	before = openFDs(t)
	tok, err := Send(context.Background(), sock, f)
	if err != nil {
		t.Fatal(err)
	}
	if got := settledFDs(t, before+1); got != before+1 {
		t.Fatalf("%d descriptors after passing one, want %d", got, before+1)
	}
	return r, tok, before, func() {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(TokenTTL + time.Second)
	}
}

// TestExpiry: a file whose transfer never comes is closed after TokenTTL.
func TestExpiry(t *testing.T) {
	r, tok, before, expire := passedOnClock(t, 0)
	expire()
	if _, err := r.Take(tok); err == nil {
		t.Fatal("an expired token was taken")
	}
	if got := settledFDs(t, before); got != before {
		t.Fatalf("%d descriptors after expiry, want %d: the passed file stayed open", got, before)
	}
}

// TestExpiryUnattended: a file whose transfer never comes is closed
// after TokenTTL even when no other file is passed or taken.
func TestExpiryUnattended(t *testing.T) {
	r, _, before, expire := passedOnClock(t, 20*time.Millisecond)
	expire()
	if got := settledFDs(t, before); got != before {
		t.Fatalf("%d descriptors once the token expired, want %d: the passed file stayed open", got, before)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sweep != nil {
		t.Error("the sweep stays armed with no file waiting")
	}
}

// TestBound: no more than maxPending files wait at once, and Close
// closes them all.
func TestBound(t *testing.T) {
	r, sock := serve(t)
	f := tempFile(t, "x", os.O_RDONLY)
	before := openFDs(t)
	for i := 0; i < maxPending; i++ {
		if _, err := Send(context.Background(), sock, f); err != nil {
			t.Fatalf("pass %d: %v", i, err)
		}
	}
	_, err := Send(context.Background(), sock, f)
	if err == nil || !strings.Contains(err.Error(), "already wait") {
		t.Fatalf("pass %d: %v, want a refusal", maxPending+1, err)
	}
	if got := settledFDs(t, before+maxPending); got != before+maxPending {
		t.Fatalf("%d descriptors open, want %d", got, before+maxPending)
	}
	r.Close()
	// Close closes the listening socket too.
	if got := settledFDs(t, before-1); got != before-1 {
		t.Fatalf("%d descriptors after Close, want %d", got, before-1)
	}
	if _, err := Send(context.Background(), sock, f); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("pass after Close: %v, want ErrUnavailable", err)
	}
}

// TestMalformed: a message without the magic or with other than one
// descriptor is refused, and no descriptor it carried stays open.
func TestMalformed(t *testing.T) {
	_, sock := serve(t)
	a := tempFile(t, "a", os.O_RDONLY)
	b := tempFile(t, "b", os.O_RDONLY)
	before := openFDs(t)
	for _, c := range []struct {
		what string
		msg  string
		fds  []int
	}{
		{"no descriptor", Magic, nil},
		{"two descriptors", Magic, []int{int(a.Fd()), int(b.Fd())}},
		{"wrong magic", "petrel-fd/0", []int{int(a.Fd())}},
	} {
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		var oob []byte
		if c.fds != nil {
			oob = unix.UnixRights(c.fds...)
		}
		if _, _, err := conn.WriteMsgUnix([]byte(c.msg), oob, nil); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		n, _ := conn.Read(buf)
		conn.Close()
		if !strings.HasPrefix(string(buf[:n]), "error ") {
			t.Errorf("%s: answered %q, want an error", c.what, buf[:n])
		}
	}
	if got := settledFDs(t, before); got != before {
		t.Fatalf("%d descriptors after refused messages, want %d", got, before)
	}
}

// TestUnavailable: without a files socket Send says so, for the client
// to send the content instead.
func TestUnavailable(t *testing.T) {
	f := tempFile(t, "x", os.O_RDONLY)
	_, err := Send(context.Background(), filepath.Join(t.TempDir(), "none"), f)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Send to no socket: %v, want ErrUnavailable", err)
	}
}

// TestChecks: Readable and Writable accept only regular files open the
// right way.
func TestChecks(t *testing.T) {
	rd := tempFile(t, "abc", os.O_RDONLY)
	wr := tempFile(t, "abc", os.O_WRONLY)
	rw := tempFile(t, "abc", os.O_RDWR)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	for _, c := range []struct {
		what     string
		f        *os.File
		readable bool
		writable bool
	}{
		{"read-only file", rd, true, false},
		{"write-only file", wr, false, true},
		{"read-write file", rw, true, true},
		{"pipe", pr, false, false},
		{"directory", dir, false, false},
	} {
		if _, err := Readable(c.f); (err == nil) != c.readable {
			t.Errorf("%s: Readable: %v, want readable %v", c.what, err, c.readable)
		}
		if err := Writable(c.f); (err == nil) != c.writable {
			t.Errorf("%s: Writable: %v, want writable %v", c.what, err, c.writable)
		}
	}
}
