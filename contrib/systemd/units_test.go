// Package systemd_test checks Petrel's systemd units, tmpfiles.d and
// sysusers.d entries with systemd's own tools.
package systemd_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/petrel-vmm/petrel/core/activation"
	"github.com/petrel-vmm/petrel/core/config"
	"github.com/petrel-vmm/petrel/core/daemon"
	"github.com/petrel-vmm/petrel/core/endpoint"
	"github.com/petrel-vmm/petrel/sdk/client"
)

var units = []string{"petreld.service", "petrel-endpoint.socket", "petrel-endpoint.service", "petrel-kubelet.service"}

// binaries are the absolute ExecStart paths the units name; verify
// insists they exist and are executable.
var binaries = []string{"/usr/bin/petreld", "/usr/bin/petrel-endpoint", "/usr/bin/petrel-kubelet"}

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found (apt-get install systemd): cannot check the units", name)
	}
	return p
}

// TestVerify runs `systemd-analyze verify` on the units. It fails on any
// output, not only on a non-zero exit: verify exits 0 for unknown or
// unparsable directives that systemd would ignore. The units' absolute
// binary paths are pointed at fake executables in a copy, because the
// binaries are not installed here and `verify --root` needs a complete
// unit tree (sysinit.target and friends) under the root.
func TestVerify(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	dir := t.TempDir()
	fakeBin := filepath.Join(dir, "bin")
	if err := os.Mkdir(fakeBin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range binaries {
		if err := os.WriteFile(filepath.Join(fakeBin, filepath.Base(b)), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var paths []string
	for _, u := range units {
		src, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range binaries {
			src = bytes.ReplaceAll(src, []byte("="+b+" "), []byte("="+filepath.Join(fakeBin, filepath.Base(b))+" "))
		}
		if bytes.Contains(src, []byte("=/usr/bin/")) {
			t.Fatalf("%s runs a binary this test does not know: add it to binaries", u)
		}
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, src, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestVerifyCatchesMistakes makes sure TestVerify would notice a broken
// unit, since verify's exit status alone would not.
func TestVerifyCatchesMistakes(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	p := filepath.Join(t.TempDir(), "broken.service")
	if err := os.WriteFile(p, []byte("[Service]\nExecStart=/bin/true\nKillMode=sometimes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(analyze, "verify", "--man=no", p).CombinedOutput()
	if !strings.Contains(string(out), "sometimes") {
		t.Fatalf("verify said nothing about a bad KillMode: %q", out)
	}
}

// TestSysusersAndTmpfiles applies the sysusers.d and tmpfiles.d entries
// to an empty root and checks the users, groups and directories made.
func TestSysusersAndTmpfiles(t *testing.T) {
	sysusers := tool(t, "systemd-sysusers")
	tmpfiles := tool(t, "systemd-tmpfiles")
	if os.Geteuid() != 0 {
		t.Skip("not root: systemd-tmpfiles cannot give /run/petrel its group")
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	abs := func(name string) string {
		p, err := filepath.Abs(name)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if out, err := exec.Command(sysusers, "--root="+root, abs("petrel.sysusers")).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	group, err := os.ReadFile(filepath.Join(root, "etc/group"))
	if err != nil {
		t.Fatal(err)
	}
	// petrel-endpoint has a group of its own (which opens
	// petreld-remote.sock) and must not be in petrel, whose members
	// manage every VM through petreld.sock.
	petrelGID, endpointGroup := -1, false
	for _, line := range strings.Split(string(group), "\n") {
		f := strings.Split(line, ":")
		if len(f) == 4 && f[0] == "petrel" {
			petrelGID, _ = strconv.Atoi(f[2])
			if f[3] != "" {
				t.Errorf("members of petrel: %q, want none", f[3])
			}
		}
		if len(f) == 4 && f[0] == "petrel-endpoint" {
			endpointGroup = true
		}
	}
	if petrelGID < 0 || !endpointGroup {
		t.Fatalf("no petrel or petrel-endpoint group in %s", group)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(passwd), "petrel-endpoint:x:") || !strings.Contains(string(passwd), ":/usr/sbin/nologin") {
		t.Errorf("petrel-endpoint user missing or has a shell:\n%s", passwd)
	}
	if out, err := exec.Command(tmpfiles, "--create", "--root="+root, abs("petrel.tmpfiles")).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
		gid  int
	}{
		{"run/petrel", 0o755, petrelGID},
		{"var/lib/petrel", 0o700, 0},
	} {
		fi, err := os.Stat(filepath.Join(root, c.path))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != c.mode || st.Uid != 0 || int(st.Gid) != c.gid {
			t.Errorf("/%s: mode %o uid %d gid %d, want %o 0 %d", c.path, fi.Mode().Perm(), st.Uid, st.Gid, c.mode, c.gid)
		}
	}
}

// TestUnitsMatchDefaults keeps the units' paths and port in step with
// petreld's defaults, the CLI's default socket and the endpoint's port.
func TestUnitsMatchDefaults(t *testing.T) {
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	daemonUnit, endpointUnit, socket := read("petreld.service"), read("petrel-endpoint.service"), read("petrel-endpoint.socket")
	for _, want := range []string{
		"ReadWritePaths=" + cfg.DataDir + " " + cfg.RunDir + "\n",
		"RuntimeDirectory=" + filepath.Base(cfg.RunDir) + "\n",
		"StateDirectory=" + filepath.Base(cfg.DataDir) + "\n",
		"KillMode=process\n",
		"RuntimeDirectoryPreserve=yes\n",
	} {
		if !strings.Contains(daemonUnit, want) {
			t.Errorf("petreld.service lacks %q", want)
		}
	}
	remoteSocket := daemon.RemoteSocketPath(cfg.RunDir)
	if endpoint.DefaultSocket != remoteSocket {
		t.Errorf("the endpoint's default socket %s is not petreld's %s", endpoint.DefaultSocket, remoteSocket)
	}
	if client.DefaultSocket != daemon.SocketPath(cfg.RunDir) {
		t.Errorf("the CLI's default socket %s is not petreld's %s", client.DefaultSocket, daemon.SocketPath(cfg.RunDir))
	}
	if !strings.Contains(endpointUnit, "--socket "+remoteSocket+" ") {
		t.Errorf("petrel-endpoint.service does not use %s", remoteSocket)
	}
	if strings.Contains(endpointUnit, "SupplementaryGroups=") || strings.Contains(endpointUnit, client.DefaultSocket) {
		t.Errorf("petrel-endpoint.service can reach the administrators' socket %s", client.DefaultSocket)
	}
	if !strings.Contains(daemonUnit, "SupplementaryGroups=petrel-endpoint\n") {
		t.Errorf("petreld.service cannot give petreld-remote.sock the group petrel-endpoint")
	}
	if !strings.Contains(endpointUnit, "--listen "+activation.Systemd+" ") {
		t.Errorf("petrel-endpoint.service does not take its socket from systemd")
	}
	_, port, err := net.SplitHostPort(endpoint.DefaultListen)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(socket, "ListenStream="+port+"\n") {
		t.Errorf("petrel-endpoint.socket does not listen on the endpoint's port %s", port)
	}
	tmpfiles := read("petrel.tmpfiles")
	if !strings.Contains(tmpfiles, "d "+cfg.RunDir+" ") || !strings.Contains(tmpfiles, "d "+cfg.DataDir+" 0700 ") {
		t.Errorf("petrel.tmpfiles does not create %s and %s (0700)", cfg.RunDir, cfg.DataDir)
	}
}
