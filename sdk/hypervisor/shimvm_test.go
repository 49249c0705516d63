package hypervisor

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

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
