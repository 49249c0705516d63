package backend

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/petrel-vmm/petrel/sdk/kvm"
)

// host is what Configure learns about the machine: the QEMU binary, its
// version, whether KVM works with it and whether that KVM is kvm_pvm.
type host struct {
	qemu    string // absolute path
	qemuErr error
	version string
	kvmErr  error // nil when KVM works with this QEMU
	pvm     bool  // /dev/kvm is provided by kvm_pvm
	qboot   string
	shim    string
	shimErr error
}

var versionRE = regexp.MustCompile(`QEMU emulator version ([0-9][^\s]*)`)

// qemuVersion runs QEMU --version and returns the version it prints.
func qemuVersion(ctx context.Context, qemu string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, qemu, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w (output %q)", qemu, err, firstLine(out))
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("%s --version printed no QEMU version (output %q)", qemu, firstLine(out))
	}
	return string(m[1]), nil
}

// probeKVM checks that this QEMU can use KVM: /dev/kvm must open, and
// QEMU must start with it. The second check catches what the first cannot
// (a KVM this QEMU cannot initialise, missing permissions on its ioctls).
func probeKVM(ctx context.Context, qemu string) error {
	if err := kvm.Probe(); err != nil {
		return fmt.Errorf("KVM unusable: %w", err)
	}
	if err := probeQEMU(ctx, qemu, "-accel", "kvm"); err != nil {
		return fmt.Errorf("QEMU cannot use KVM: %w", err)
	}
	return nil
}

// probeSandbox checks that this QEMU has a working seccomp sandbox.
func probeSandbox(ctx context.Context, qemu string) error {
	return probeQEMU(ctx, qemu, "-accel", "tcg", "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
}

// probeQEMU starts QEMU without a machine and with args, and quits it
// through QMP on its stdin; it fails when QEMU does not start.
func probeQEMU(ctx context.Context, qemu string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	argv := append([]string{"-machine", "none", "-nodefaults", "-no-user-config",
		"-display", "none", "-monitor", "none", "-serial", "none", "-qmp", "stdio"}, args...)
	cmd := exec.CommandContext(ctx, qemu, argv...)
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"quit"}` + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := out.String()
		if i := strings.Index(msg, filepath.Base(qemu)+": "); i >= 0 {
			msg = msg[i:]
		}
		return fmt.Errorf("%w (%s)", err, firstLine([]byte(msg)))
	}
	return nil
}

// kvmPVM reports whether KVM on this host is kvm_pvm, a software KVM that
// runs small guests but pauses Linux kernels with internal errors.
func kvmPVM() bool {
	_, err := os.Stat("/sys/module/kvm_pvm")
	return err == nil
}

// qemuDataDirs are where QEMU's firmware files are installed.
var qemuDataDirs = []string{"/usr/share/qemu", "/usr/local/share/qemu", "/usr/share/seabios"}

// findQboot returns the path of QEMU's qboot firmware, which boots -kernel
// guests in a fraction of SeaBIOS's time, or "" when it is not installed.
func findQboot() string {
	for _, d := range qemuDataDirs {
		p := filepath.Join(d, "qboot.rom")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// firstLine returns the first non-empty line of b, trimmed.
func firstLine(b []byte) string {
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}
