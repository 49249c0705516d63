package hypervisor

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/shim"
)

// TestShimHelpersOnLostShim covers a VM whose shim was killed: its socket
// is left with nobody listening and there is no exit record.
func TestShimHelpersOnLostShim(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, shim.SocketName)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// Closing the listener without unlinking leaves the socket file
	// behind, as a killed shim does.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	ctx := context.Background()
	lines := 0
	if err := ShimConsole(ctx, dir, &pluginv1.ConsoleRequest{Follow: true}, func(*pluginv1.ConsoleLine) error { lines++; return nil }); err != nil || lines != 0 {
		t.Fatalf("ShimConsole of a lost shim = %d lines, %v", lines, err)
	}
	if _, err := ShimStats(dir); err == nil {
		t.Fatal("ShimStats of a lost shim succeeded")
	}
	st, _, err := WaitShim(ctx, dir)
	if err != nil || !st.GetLost() || st.GetMessage() == "" {
		t.Fatalf("WaitShim of a lost shim = %v, %v", st, err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("the lost shim's socket is left: %v", err)
	}
}

// TestRemoveWaitsForStartingShim: a run directory held by a launch in
// progress (a shim that does not answer yet) is not removed under it;
// once nothing holds it, it is.
func TestRemoveWaitsForStartingShim(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, shim.LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := RemoveShimVM(ctx, dir); err == nil {
		t.Fatal("RemoveShimVM removed a directory whose shim is starting")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the directory is gone: %v", err)
	}
	f.Close()
	if err := RemoveShimVM(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the directory is left: %v", err)
	}
}
