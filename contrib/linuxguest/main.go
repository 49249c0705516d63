// Command linuxguest writes the Linux guest of the README's QEMU example
// from this host's Debian packages, so that a clone can boot one without
// assembling an initramfs by hand: DIR/vmlinuz, a copy of the newest
// cloud kernel (linux-image-cloud-amd64), and DIR/initrd.cpio, an
// initramfs with busybox (busybox-static) and the virtio drivers. It is
// the guest Petrel's QEMU tests boot (plugins/qemu/testguest): it prints
// PETREL-LINUX-UP, powers off on the ACPI power button (petrel destroy),
// and exits at once with petrel.exit=N on its kernel command line.
//
//	go run ./contrib/linuxguest DIR   (make linux-guest writes bin/guests)
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/petrel-vmm/petrel/plugins/qemu/testguest"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: linuxguest DIR   (writes DIR/vmlinuz and DIR/initrd.cpio)")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "linuxguest: %v\n", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	linux, err := testguest.FindLinux()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	kernel := filepath.Join(dir, "vmlinuz")
	if err := copyFile(linux.Kernel, kernel); err != nil {
		return err
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := linux.WriteInitramfs(initrd); err != nil {
		return err
	}
	fmt.Printf("wrote %s (from %s) and %s\n", kernel, linux.Kernel, initrd)
	return nil
}

// copyFile copies the kernel, which Debian installs readable by root
// only, to a file anyone may read.
func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("read kernel: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write kernel: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy kernel to %s: %w", to, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("write kernel %s: %w", to, err)
	}
	return nil
}
