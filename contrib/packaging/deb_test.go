// Package packaging_test builds Petrel's Debian package with
// build-deb.sh and nfpm, and inspects what it would install.
package packaging_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/core/config"
	"github.com/petrel-vmm/petrel/plugins/catalog"
)

// realBinaries are run while packaging; the others are only copied, so
// small stand-ins keep the test fast.
var realBinaries = map[string]string{"petrel": "./cmd/petrel", "petreld": "./cmd/petreld"}

// stubBinaries are the others: petrel-endpoint, petrel-shim and every one
// of Petrel's own plugins, and a third-party plugin the package must leave
// out.
func stubBinaries() []string {
	stubs := []string{"petrel-endpoint", "petrel-shim", thirdParty}
	for _, p := range catalog.All() {
		stubs = append(stubs, p.Binary())
	}
	return stubs
}

// thirdParty is a plugin binary that is not Petrel's own (make examples
// builds it into bin/): the package ships only the catalog's plugins.
const thirdParty = "petrel-plugin-jsonl"

// guests are Petrel's test unikernels (contrib/guests), shipped as example
// guests; build-deb.sh insists on every one of them.
var guests = []string{"hello", "exit", "fault", "blk", "net", "chatty"}

// guestFiles lists the guest images the package ships: every guest for
// hvt and for spt.
func guestFiles() []string {
	var files []string
	for _, g := range guests {
		files = append(files, g+".hvt", g+".spt")
	}
	return files
}

func findNfpm(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nfpm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "nfpm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("nfpm not found on PATH or in GOPATH/bin (make deps installs it)")
	return ""
}

func TestBuildDeb(t *testing.T) {
	nfpm := findNfpm(t)
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not found: cannot inspect the package")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the Debian package is for Linux")
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for name, pkg := range realBinaries {
		// `make test` has built them already (PETREL_BIN); building
		// them here otherwise.
		if built := filepath.Join(os.Getenv("PETREL_BIN"), name); os.Getenv("PETREL_BIN") != "" {
			b, err := os.ReadFile(built)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bin, name), b, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	if err := exec.Command(filepath.Join(bin, "petrel"), "gen-docs", "--help").Run(); err != nil {
		t.Skip("petrel has no gen-docs command (add genDocsCmd to the root command): the package needs its man pages")
	}
	for _, name := range stubBinaries() {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(bin, "guests"), 0o755); err != nil {
		t.Fatal(err)
	}
	// escape.spt, a test guest of the spt tender's sandbox, is not shipped.
	for _, f := range append(guestFiles(), "escape.spt") {
		if err := os.WriteFile(filepath.Join(bin, "guests", f), []byte("\x7fELF"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deb := buildDeb(t, nfpm, bin, "petrel")
	modes := debModes(t, deb)
	// The node agent is a package of its own.
	if _, ok := modes["/usr/bin/petrel-kubelet"]; ok {
		t.Error("the petrel package installs petrel-kubelet, which is the petrel-kubelet package's")
	}
	want := map[string]string{
		"/usr/bin/petrel":                                  "-rwxr-xr-x root/root",
		"/usr/bin/petreld":                                 "-rwxr-xr-x root/root",
		"/usr/bin/petrel-endpoint":                         "-rwxr-xr-x root/root",
		"/usr/libexec/petrel/petrel-shim":                  "-rwxr-xr-x root/root",
		"/usr/lib/systemd/system/petreld.service":          "-rw-r--r-- root/root",
		"/usr/lib/systemd/system/petrel-endpoint.service":  "-rw-r--r-- root/root",
		"/usr/lib/systemd/system/petrel-endpoint.socket":   "-rw-r--r-- root/root",
		"/usr/lib/tmpfiles.d/petrel.conf":                  "-rw-r--r-- root/root",
		"/usr/lib/sysusers.d/petrel.conf":                  "-rw-r--r-- root/root",
		"/etc/petrel/petreld.hcl":                          "-rw-r--r-- root/root",
		"/usr/share/doc/petrel/configuration.md":           "-rw-r--r-- root/root",
		"/usr/share/man/man1/petrel.1.gz":                  "-rw-r--r-- root/root",
		"/usr/share/man/man1/petrel-create.1.gz":           "-rw-r--r-- root/root",
		"/usr/share/bash-completion/completions/petrel":    "-rw-r--r-- root/root",
		"/usr/share/zsh/vendor-completions/_petrel":        "-rw-r--r-- root/root",
		"/usr/share/fish/vendor_completions.d/petrel.fish": "-rw-r--r-- root/root",
	}
	for _, d := range []string{"petrel-influxdb.json", "petrel-prometheus.json"} {
		want["/usr/share/petrel/grafana/"+d] = "-rw-r--r-- root/root"
	}
	for _, f := range guestFiles() {
		want["/usr/share/petrel/guests/"+f] = "-rw-r--r-- root/root"
	}
	// Every one of Petrel's own plugins is in the package, where petreld
	// looks for plugins when none are beside it (the embedded defaults
	// enable only plugins of the catalog: core/config's
	// TestDefaultsFollowCatalog).
	for _, p := range catalog.All() {
		want["/usr/libexec/petrel/"+p.Binary()] = "-rwxr-xr-x root/root"
	}
	if _, ok := modes["/usr/libexec/petrel/"+thirdParty]; ok {
		t.Errorf("the package ships %s, which is not one of Petrel's plugins", thirdParty)
	}
	for path, mode := range want {
		if got, ok := modes[path]; !ok {
			t.Errorf("package lacks %s", path)
		} else if got != mode {
			t.Errorf("%s: %s, want %s", path, got, mode)
		}
	}

	info, err := exec.Command("dpkg-deb", "-I", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb -I: %v", err)
	}
	for _, w := range []string{"Package: petrel", "Version: 1.2.3~test", "Architecture: amd64", "conffiles", "postinst", "prerm", "postrm"} {
		if !bytes.Contains(info, []byte(w)) {
			t.Errorf("control information lacks %q:\n%s", w, info)
		}
	}
	ctrl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-e", deb, ctrl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
	}
	conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil || strings.TrimSpace(string(conffiles)) != "/etc/petrel/petreld.hcl" {
		t.Errorf("conffiles: %q %v", conffiles, err)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if out, err := exec.Command("sh", "-n", filepath.Join(ctrl, s)).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
	}

	// The packaged configuration is valid, opens the administrators'
	// socket to the group petrel and the remote socket to
	// petrel-endpoint's group alone.
	root := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	cfg, err := config.Load(filepath.Join(root, "etc", "petrel", "petreld.hcl"))
	if err != nil {
		t.Fatalf("packaged petreld.hcl: %v", err)
	}
	if cfg.SocketMode != "0660" || cfg.DataDir != "/var/lib/petrel" || cfg.RunDir != "/run/petrel" {
		t.Errorf("packaged configuration: socket_mode %q data_dir %q run_dir %q", cfg.SocketMode, cfg.DataDir, cfg.RunDir)
	}
	if cfg.RemoteSocketMode != "0660" || cfg.RemoteSocketGroup != "petrel-endpoint" {
		t.Errorf("packaged configuration: remote_socket_mode %q remote_socket_group %q, want \"0660\" and \"petrel-endpoint\"", cfg.RemoteSocketMode, cfg.RemoteSocketGroup)
	}
}

// TestBuildDebKubelet builds the petrel-kubelet package and checks what it
// installs: the agent, its unit (which nothing enables), its defaults as a
// conffile; and that the petrel package leaves the agent out.
func TestBuildDebKubelet(t *testing.T) {
	nfpm := findNfpm(t)
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not found: cannot inspect the package")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the Debian package is for Linux")
	}
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "petrel-kubelet"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	deb := buildDeb(t, nfpm, bin, "petrel-kubelet")
	modes := debModes(t, deb)
	want := map[string]string{
		"/usr/bin/petrel-kubelet":                        "-rwxr-xr-x root/root",
		"/usr/lib/systemd/system/petrel-kubelet.service": "-rw-r--r-- root/root",
		"/etc/default/petrel-kubelet":                    "-rw-r--r-- root/root",
		"/etc/petrel/kubelet/":                           "drwxr-xr-x root/root",
		"/usr/share/doc/petrel-kubelet/README":           "-rw-r--r-- root/root",
	}
	for path, mode := range want {
		if got, ok := modes[path]; !ok {
			t.Errorf("package lacks %s", path)
		} else if got != mode {
			t.Errorf("%s: %s, want %s", path, got, mode)
		}
	}
	for path := range modes {
		if strings.HasSuffix(path, "/") {
			continue
		}
		if strings.HasPrefix(path, "/usr/bin/") && path != "/usr/bin/petrel-kubelet" || strings.HasPrefix(path, "/usr/libexec/") {
			t.Errorf("the agent's package installs %s, which is the petrel package's", path)
		}
	}
	info, err := exec.Command("dpkg-deb", "-I", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb -I: %v", err)
	}
	for _, w := range []string{"Package: petrel-kubelet", "Version: 1.2.3~test", "Recommends: petrel", "conffiles", "postinst", "prerm"} {
		if !bytes.Contains(info, []byte(w)) {
			t.Errorf("control information lacks %q:\n%s", w, info)
		}
	}
	ctrl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-e", deb, ctrl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
	}
	conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil || strings.TrimSpace(string(conffiles)) != "/etc/default/petrel-kubelet" {
		t.Errorf("conffiles: %q %v", conffiles, err)
	}
	for _, s := range []string{"postinst", "prerm"} {
		b, err := os.ReadFile(filepath.Join(ctrl, s))
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(ctrl, s)).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
		// The unit stays disabled: the agent needs a cluster to join.
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "systemctl" && (f[1] == "enable" || f[1] == "start") {
				t.Errorf("%s enables or starts the agent: %q", s, line)
			}
		}
	}
}

// buildDeb runs build-deb.sh for package pkg on the binaries in bin, and
// returns the .deb it wrote.
func buildDeb(t *testing.T, nfpm, bin, pkg string) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command(filepath.Join("..", "..", "contrib", "packaging", "build-deb.sh"), bin, out, pkg)
	cmd.Env = append(os.Environ(), "NFPM="+nfpm, "VERSION=1.2.3~test", "ARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("build-deb.sh %s: %v\n%s", pkg, err, stderr.String())
	}
	deb := strings.TrimSpace(string(stdout))
	if deb != filepath.Join(out, pkg+"_1.2.3~test_amd64.deb") {
		t.Fatalf("build-deb.sh printed %q", deb)
	}
	return deb
}

// debModes lists a package's paths with their mode and owner, as
// dpkg-deb -c shows them.
func debModes(t *testing.T, deb string) map[string]string {
	t.Helper()
	list, err := exec.Command("dpkg-deb", "-c", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb -c: %v", err)
	}
	modes := map[string]string{}
	for _, line := range strings.Split(string(list), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 {
			modes[strings.TrimPrefix(f[5], ".")] = f[0] + " " + f[1]
		}
	}
	return modes
}

// TestBuildDebNeedsGuests makes sure build-deb.sh refuses to build a
// package without the example guests rather than leaving them out.
func TestBuildDebNeedsGuests(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the Debian package is for Linux")
	}
	bin := t.TempDir()
	for _, name := range append([]string{"petrel", "petreld"}, stubBinaries()...) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(filepath.Join("..", "..", "contrib", "packaging", "build-deb.sh"), bin, t.TempDir()).CombinedOutput()
	if err == nil {
		t.Fatalf("build-deb.sh built a package without guests:\n%s", out)
	}
	if want := filepath.Join(bin, "guests", "hello.hvt") + " is missing"; !strings.Contains(string(out), want) {
		t.Fatalf("build-deb.sh output lacks %q:\n%s", want, out)
	}
}
