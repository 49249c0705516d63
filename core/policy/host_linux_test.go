package policy

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestHostBridges(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"eth0", "br0/bridge", "virbr1/bridge", "lo", "bad:name/bridge"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "eth0", "bridge"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old := sysClassNet
	sysClassNet = dir
	defer func() { sysClassNet = old }()
	got, err := hostBridges()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"br0", "virbr1"}) {
		t.Errorf("hostBridges() = %q", got)
	}
}
