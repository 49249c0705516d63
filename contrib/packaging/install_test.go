//go:build linux

package packaging_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/plugins/catalog"
)

// packageCommands maps the binaries the packages (petrel, and
// petrel-kubelet with the node agent alone) ship besides the plugins to
// their Go packages; the plugins come from the catalog.
var packageCommands = map[string]string{
	"petrel":          "./cmd/petrel",
	"petreld":         "./cmd/petreld",
	"petrel-endpoint": "./cmd/petrel-endpoint",
	"petrel-shim":     "./cmd/petrel-shim",
	"petrel-kubelet":  "./cmd/petrel-kubelet",
}

// packageBuild is one binary the package ships: its name, Go package and
// go build flags beside -trimpath and -o.
type packageBuild struct {
	name, pkg string
	flags     []string
}

// packageBinaries lists every binary the packages ship.
func packageBinaries() []packageBuild {
	var bs []packageBuild
	for name, pkg := range packageCommands {
		bs = append(bs, packageBuild{name: name, pkg: pkg})
	}
	for _, p := range catalog.All() {
		bs = append(bs, packageBuild{name: p.Binary(), pkg: p.Package(), flags: p.BuildFlags()})
	}
	return bs
}

// installTimeout bounds install-test.sh: about a minute with a cached
// root, two when debootstrap has to run first.
const installTimeout = 10 * time.Minute

// TestInstallOnCleanDebian runs install-test.sh, which builds the packages,
// installs petrel with apt on a clean Debian 12 root made by debootstrap,
// installs petrel-kubelet beside it (its unit disabled and stopped, the
// agent answering --help) and purges it again, runs the README's deploy
// (petreld from the packaged unit, the hello guest shipped as an example)
// with what is left, then the README's remote management
// (socket-activated endpoint, delegated and sub-delegated policies,
// revocation) and purges petrel. It proves that the package alone is
// enough to deploy a VM and that the agent's package installs and goes
// without touching it, which inspecting their contents (TestBuildDeb,
// TestBuildDebKubelet) cannot.
func TestInstallOnCleanDebian(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: installing on a clean Debian takes a minute or two")
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: install-test.sh needs root (debootstrap, mounts, chroot)")
	}
	for _, tool := range []string{"debootstrap", "dpkg-deb", "nsenter", "unshare", "flock"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (make deps installs it): cannot build a clean Debian root", tool)
		}
	}
	if fi, err := os.Stat("/dev/net/tun"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Skip("/dev/net/tun is missing: the deploy in the clean root needs it")
	}
	nfpm := findNfpm(t)
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := stageBinaries(t, repo)

	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	if dl, ok := t.Deadline(); ok && time.Until(dl) < installTimeout+2*time.Minute {
		// Leave the script time to clean up before the test binary is
		// killed.
		cancel()
		ctx, cancel = context.WithDeadline(context.Background(), dl.Add(-2*time.Minute))
	}
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "contrib", "packaging", "install-test.sh"), bin)
	cmd.Env = append(os.Environ(), "NFPM="+nfpm)
	// The script and everything it started get SIGTERM on timeout, so that
	// its trap stops the container and unmounts before it exits; SIGKILL
	// only if that takes longer than WaitDelay.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err = cmd.Run()
	t.Logf("install-test.sh %s (%s):\n%s", bin, time.Since(start).Round(time.Second), out.String())
	if ctx.Err() != nil {
		t.Fatal("install-test.sh did not finish in time (output above)")
	}
	if err != nil {
		t.Fatalf("install-test.sh: %v (output above)", err)
	}
	if !strings.Contains(out.String(), "install-test: PASS") {
		t.Fatal("install-test.sh exited 0 without reporting PASS (output above)")
	}
}

// stageBinaries returns a directory laid out as `make build guests` leaves
// bin/: the binaries of PETREL_BIN and the guests of PETREL_GUESTS (as
// `make test` sets them), or else built here.
func stageBinaries(t *testing.T, repo string) string {
	t.Helper()
	dir := t.TempDir()
	guestDir := filepath.Join(dir, "guests")
	if src := os.Getenv("PETREL_BIN"); src != "" {
		for _, b := range packageBinaries() {
			linkOrCopy(t, filepath.Join(src, b.name), filepath.Join(dir, b.name), 0o755)
		}
		guestSrc := os.Getenv("PETREL_GUESTS")
		if guestSrc == "" {
			guestSrc = filepath.Join(src, "guests")
		}
		if err := os.Mkdir(guestDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range guestFiles() {
			linkOrCopy(t, filepath.Join(guestSrc, f), filepath.Join(guestDir, f), 0o644)
		}
		return dir
	}
	for _, tool := range []string{"make", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: cannot build the guests (or set PETREL_BIN and PETREL_GUESTS)", tool)
		}
	}
	for _, b := range packageBinaries() {
		args := append([]string{"build", "-trimpath", "-o", filepath.Join(dir, b.name)}, b.flags...)
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	cmd := exec.Command("make", "-C", filepath.Join(repo, "contrib", "guests"), "OUT="+guestDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make guests: %v\n%s", err, out)
	}
	return dir
}

// linkOrCopy makes dst a hard link to src, or a copy where src is on
// another file system.
func linkOrCopy(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	if err := os.Link(src, dst); err == nil {
		return
	} else if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s is missing (make build guests)", src)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatalf("copy %s: %v", src, err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
