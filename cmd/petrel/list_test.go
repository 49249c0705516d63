package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of TestListOutput from the CLI's output")

// listStub is a daemon with something of every kind the list commands
// show: VMs running and exited (by code and by signal) with devices and a
// registry image, plugins with attributes, devices in use or not, bridges
// up and down, policies of every origin.
func listStub() *stubDaemon {
	code, sig := int32(3), int32(9)
	return &stubDaemon{
		vms: []*daemonv1.VM{
			{Name: "web", State: "running", Backend: "hvt", ImageName: "web.hvt", MemoryMb: 64, Cpus: []uint32{0, 2}, Pid: 4242, ShimPid: 4241,
				Restarts: 1, Restart: &daemonv1.RestartPolicy{OnFailure: true, ExitCodes: []int32{2}}, CreatedAtNs: 1_700_000_000_000_000_000,
				StartedAtNs: 1_700_000_001_000_000_000, ImageRef: "registry.lan/web:1", ImageDigest: "sha256:abc", Args: []string{"--port=80"},
				Nets:   []*daemonv1.NetAttachment{{Name: "service0", Bridge: "br0", Mac: "02:00:00:00:00:01", HostIf: "ptap1"}},
				Blocks: []*daemonv1.BlockAttachment{{Name: "storage", Device: "team:data", SectorSize: 512}}},
			{Name: "team:db", State: "exited", Backend: "spt", ImageName: "db.spt", MemoryMb: 32, HasExit: true, ExitCode: code,
				Message: "exited with code 3"},
			{Name: "team:cache", State: "failed", Backend: "qemu", ImageName: "cache.virtio", MemoryMb: 128, HasExit: true, ExitSignal: sig,
				Message: "killed by signal 9"},
		},
		plugins: []*daemonv1.Plugin{
			{Name: "hvt", Kind: "hypervisor", Version: "1.0", Path: "/usr/libexec/petrel/petrel-plugin-hvt", Health: "healthy",
				Description: "Solo5 hvt", Attributes: map[string]string{"tender": "solo5-hvt", "kvm": "usable"}},
			{Name: "influx", Kind: "metrics", Health: "not enabled", Restarts: 2},
		},
		devices: []*daemonv1.BlockInfo{{Name: "disk", SizeMb: 64}, {Name: "team:data", SizeMb: 1024, InUseBy: "web"}},
		orphans: []string{"stray.tmp"},
		bridges: []*daemonv1.HostBridge{{Name: "br0", Mtu: 1500, Mac: "02:00:00:00:00:ff", Up: true, Members: []string{"ptap1", "eth0"}},
			{Name: "br1", Mtu: 9000, Mac: "02:00:00:00:01:ff"}},
		policies: []*daemonv1.PolicyEntry{
			{Path: ":", Policy: &daemonv1.Policy{Vms: 100, MemoryMb: 8192, Cpus: []int32{0, 1, 2, 3}, Bridges: []string{"br0", "br1"}},
				UsedVms: 3, UsedMemoryMb: 224, UsedImagesMb: 12},
			{Path: "team", Policy: &daemonv1.Policy{Vms: 4, MemoryMb: 512, Cpus: []int32{1}, BlockMb: proto.Int64(2048), ImagesMb: proto.Int64(64), Bridges: []string{"br0"}},
				Local:       &daemonv1.Policy{Vms: 4, MemoryMb: 512, Cpus: []int32{1}, BlockMb: proto.Int64(2048), ImagesMb: proto.Int64(64), Bridges: []string{"br0"}},
				Certificate: &daemonv1.Policy{Vms: 8, MemoryMb: 1024, Cpus: []int32{1, 2}, Bridges: []string{"br0"}},
				UsedVms:     2, UsedMemoryMb: 160, UsedBlockMb: 1024, UsedImagesMb: 5},
		},
	}
}

// TestListOutput pins what every list command prints, as a table and
// with --json, on stdout and stderr, of listStub and of a daemon with
// nothing to list, to the golden files in testdata/list (go test -run
// TestListOutput -update rewrites them): scripts parse both forms, so
// neither may change by accident.
func TestListOutput(t *testing.T) {
	full, empty := startStub(t, listStub()), startStub(t, &stubDaemon{})
	for _, c := range []struct{ prefix, sock string }{{"", full}, {"empty_", empty}} {
		testListOutput(t, c.sock, c.prefix)
	}
}

// TestListOutputDelegate pins what `petrel plugins` prints to a caller
// petreld keeps its full plugin list from (a delegate through
// petrel-endpoint): its health summary, and a line on stderr saying what
// is missing.
func TestListOutputDelegate(t *testing.T) {
	d := listStub()
	d.pluginsDenied = true
	d.summary = []*daemonv1.PluginHealthEntry{
		{Name: "hvt", Kind: "hypervisor", Health: "healthy", Targets: []string{"hvt"}},
		{Name: "qemu", Kind: "hypervisor", Health: "unhealthy"},
		{Name: "influx", Kind: "metrics", Health: "down"},
	}
	testListOutput(t, startStub(t, d), "delegate_", []string{"plugins"})
	testListOutput(t, startStub(t, &stubDaemon{pluginsDenied: true}), "delegate_empty_", []string{"plugins"})
}

// TestPluginsRefusedByOlderDaemon: a petreld without PluginHealth that
// keeps Plugins to its owner leaves the refusal as the answer (exit 8).
func TestPluginsRefusedByOlderDaemon(t *testing.T) {
	sock := startStub(t, &stubDaemon{pluginsDenied: true, noSummary: true})
	code, out, errText := runPetrel("--socket", sock, "plugins")
	if code != exitDenied || out != "" || !strings.Contains(errText, "reserved to its owner") {
		t.Errorf("petrel plugins: exit %d, stdout %q, stderr %q; want exit %d and the refusal", code, out, errText, exitDenied)
	}
}

func testListOutput(t *testing.T, sock, prefix string, commands ...[]string) {
	t.Helper()
	if len(commands) == 0 {
		commands = [][]string{{"info"}, {"plugins"}, {"block"}, {"bridges"}, {"policy"}}
	}
	for _, args := range commands {
		for _, extra := range [][]string{nil, {"--json"}} {
			argv := append(append([]string{}, args...), extra...)
			code, out, errText := runPetrel(append([]string{"--socket", sock}, argv...)...)
			if code != exitOK {
				t.Fatalf("petrel %s: exit %d: %s", strings.Join(argv, " "), code, errText)
			}
			got := out
			if errText != "" {
				got += "--- stderr\n" + errText
			}
			golden := filepath.Join("testdata", "list", prefix+strings.Join(argv, "_")+".golden")
			if *updateGolden {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("petrel %s printed\n%s\nwant (%s)\n%s", strings.Join(argv, " "), got, golden, want)
			}
		}
	}
}
