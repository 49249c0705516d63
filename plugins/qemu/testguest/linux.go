package testguest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Console lines of the Linux guest's /init.
const (
	// LinuxMarker is printed first thing by /init.
	LinuxMarker = "PETREL-LINUX-UP"
	// LinuxReady is printed once modules are loaded and the command line
	// has been acted on (the guest then idles).
	LinuxReady = "PETREL-LINUX-READY"
	// LinuxPowerButton is printed when the ACPI power button was pressed,
	// just before the guest powers itself off.
	LinuxPowerButton = "PETREL-POWER-BUTTON"
	// LinuxNetUp is printed, followed by the address, once eth0 is
	// configured.
	LinuxNetUp = "PETREL-NET-UP"
	// LinuxBlock starts one line per virtio disk, printed before
	// LinuxReady: "PETREL-BLOCK vda SERIAL LOGICAL_BLOCK_SIZE SECTORS".
	LinuxBlock = "PETREL-BLOCK"
)

// Kernel command-line parameters read by /init.
const (
	// ParamExit (petrel.exit=N) makes the guest exit at once by writing
	// N to QEMU's isa-debug-exit device at port 0xf4; QEMU's exit status
	// is then (N<<1)|1, and the backend reports N.
	ParamExit = "petrel.exit"
	// ParamIP (petrel.ip=ADDR/PREFIX) configures eth0.
	ParamIP = "petrel.ip"
	// ParamPanic (petrel.panic=1) makes the guest kernel panic once it is
	// ready, after loading the pvpanic driver.
	ParamPanic = "petrel.panic"
	// ParamPowerButton (petrel.powerbutton=ignore) makes the guest ignore
	// the ACPI power button, so that a graceful stop has to time out.
	ParamPowerButton = "petrel.powerbutton"
)

// Modules are the kernel modules /init loads, in dependency order: the
// virtio drivers (which Debian's cloud kernel builds as modules), the ACPI
// power button and the event device it reports through, and pvpanic.
var Modules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_mmio",
	"virtio_blk", "failover", "net_failover", "virtio_net", "button", "evdev", "pvpanic", "pvpanic_mmio",
}

// initScript is the guest's /init, run by busybox's shell.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo ` + LinuxMarker + `
for m in $(cat /lib/modules/order); do
	insmod /lib/modules/$m.ko || echo "petrel-init: insmod $m failed"
done
arg() {
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1"=*) echo "${w#*=}"; return;; esac
	done
}
net=$(arg ` + ParamIP + `)
if [ -n "$net" ]; then
	ip link set eth0 up && ip addr add "$net" dev eth0 && echo "` + LinuxNetUp + ` $net"
fi
for d in /sys/block/vd*; do
	[ -e "$d" ] && echo "` + LinuxBlock + ` ${d##*/} $(cat $d/serial) $(cat $d/queue/logical_block_size) $(cat $d/size)"
done
code=$(arg ` + ParamExit + `)
if [ -n "$code" ]; then
	echo "petrel-init: exit $code"
	/bin/petrel-exit "$code"
fi
if [ "$(arg ` + ParamPowerButton + `)" != ignore ]; then
	for e in /sys/class/input/event*; do
		if [ "$(cat $e/device/name 2>/dev/null)" = "Power Button" ]; then
			# Opened now, so that a press right after READY is queued.
			exec 3</dev/input/${e##*/}
			(head -c 24 <&3 >/dev/null; echo ` + LinuxPowerButton + `; poweroff -f) &
		fi
	done
fi
echo ` + LinuxReady + `
if [ "$(arg ` + ParamPanic + `)" = 1 ]; then
	echo c > /proc/sysrq-trigger
fi
while :; do sleep 3600; done
`

// exitCode is /bin/petrel-exit: x86-64 code that parses argv[1] as a
// decimal number N, gains access to port 0xf4 with ioperm and writes N
// there as a 32-bit value, which makes QEMU's isa-debug-exit device end
// QEMU with status (N<<1)|1. If it is still running afterwards, it
// exits 1. Assembly (Intel syntax):
//
//	mov rsi,[rsp+16]; xor ebx,ebx; test rsi,rsi; je 2f
//	1: movzx eax,byte [rsi]; inc rsi; sub eax,'0'; cmp eax,9; ja 2f
//	   imul ebx,ebx,10; add ebx,eax; jmp 1b
//	2: mov eax,173; mov edi,0xf4; mov esi,4; mov edx,1; syscall
//	   mov eax,ebx; nop; nop; mov dx,0xf4; out dx,eax
//	   mov eax,60; mov edi,1; syscall
var exitCode = []byte{
	0x48, 0x8b, 0x74, 0x24, 0x10, 0x31, 0xdb, 0x48, 0x85, 0xf6, 0x74, 0x15,
	0x0f, 0xb6, 0x06, 0x48, 0xff, 0xc6, 0x83, 0xe8, 0x30, 0x83, 0xf8, 0x09,
	0x77, 0x07, 0x6b, 0xdb, 0x0a, 0x01, 0xc3, 0xeb, 0xeb, 0xb8, 0xad, 0x00,
	0x00, 0x00, 0xbf, 0xf4, 0x00, 0x00, 0x00, 0xbe, 0x04, 0x00, 0x00, 0x00,
	0xba, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x89, 0xd8, 0x90, 0x90, 0x66,
	0xba, 0xf4, 0x00, 0xef, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0xbf, 0x01, 0x00,
	0x00, 0x00, 0x0f, 0x05,
}

// staticELF wraps x86-64 code into a minimal static executable: the ELF
// header and one program header, then the code, all in one read-execute
// segment loaded at 0x400000.
func staticELF(code []byte) []byte {
	const base, ehdr, phdr = 0x400000, 64, 56
	out := make([]byte, ehdr+phdr, ehdr+phdr+len(code))
	le := binary.LittleEndian
	copy(out, elf.ELFMAG)
	out[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	out[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	out[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	le.PutUint16(out[16:], uint16(elf.ET_EXEC))
	le.PutUint16(out[18:], uint16(elf.EM_X86_64))
	le.PutUint32(out[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(out[24:], base+ehdr+phdr)
	le.PutUint64(out[32:], ehdr)
	le.PutUint16(out[52:], ehdr)
	le.PutUint16(out[54:], phdr)
	le.PutUint16(out[56:], 1)
	p := out[ehdr:]
	le.PutUint32(p[0:], uint32(elf.PT_LOAD))
	le.PutUint32(p[4:], uint32(elf.PF_R|elf.PF_X))
	le.PutUint64(p[16:], base)
	le.PutUint64(p[24:], base)
	size := uint64(ehdr + phdr + len(code))
	le.PutUint64(p[32:], size)
	le.PutUint64(p[40:], size)
	le.PutUint64(p[48:], 0x1000)
	return append(out, code...)
}

// Linux is what the Linux guest is made of on the host.
type Linux struct {
	// Kernel is a bzImage, e.g. /boot/vmlinuz-6.1.0-26-cloud-amd64.
	Kernel string
	// ModulesDir is the kernel's module tree, /lib/modules/RELEASE.
	ModulesDir string
	// Busybox is a statically linked busybox.
	Busybox string
}

// ErrMissing is wrapped by FindLinux's errors, which name the Debian
// package that provides the missing part.
var ErrMissing = errors.New("guest part missing")

// FindLinux finds Debian's cloud kernel (package linux-image-cloud-amd64)
// and static busybox (package busybox-static) on the host.
func FindLinux() (Linux, error) {
	kernels, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	if len(kernels) == 0 {
		return Linux{}, fmt.Errorf("%w: no /boot/vmlinuz-*-cloud-amd64 (install linux-image-cloud-amd64)", ErrMissing)
	}
	sort.Strings(kernels)
	kernel := kernels[len(kernels)-1]
	release := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	l := Linux{Kernel: kernel, ModulesDir: filepath.Join("/lib/modules", release), Busybox: "/bin/busybox"}
	if _, err := os.Stat(filepath.Join(l.ModulesDir, "modules.dep")); err != nil {
		return Linux{}, fmt.Errorf("%w: modules of %s: %v (install linux-image-cloud-amd64)", ErrMissing, release, err)
	}
	if err := checkStatic(l.Busybox); err != nil {
		return Linux{}, fmt.Errorf("%w: %v (install busybox-static)", ErrMissing, err)
	}
	if f, err := os.Open(kernel); err != nil {
		return Linux{}, fmt.Errorf("%w: kernel %s unreadable: %v", ErrMissing, kernel, err)
	} else {
		f.Close()
	}
	return l, nil
}

// checkStatic makes sure path is an ELF executable without an interpreter,
// which is all that runs in an initramfs without a C library.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("busybox %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("busybox %s is dynamically linked", path)
		}
	}
	return nil
}

// modulePaths maps module names (with '-' as '_') to their paths relative
// to the module tree, read from modules.dep.
func modulePaths(dir string) (map[string]string, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("read module list: %w", err)
	}
	defer f.Close()
	paths := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		rel, _, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		name := strings.ReplaceAll(strings.TrimSuffix(filepath.Base(rel), ".ko"), "-", "_")
		paths[name] = rel
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s/modules.dep: %w", dir, err)
	}
	return paths, nil
}

// Initramfs returns a gzip-compressed initramfs: busybox, /init (see the
// Param constants), /bin/petrel-exit and the kernel modules in Modules.
func (l Linux) Initramfs() ([]byte, error) {
	bb, err := os.ReadFile(l.Busybox)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	paths, err := modulePaths(l.ModulesDir)
	if err != nil {
		return nil, err
	}
	var a cpioArchive
	for _, d := range []string{"bin", "dev", "proc", "sys", "lib", "lib/modules", "tmp"} {
		if err := a.Dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	steps := []error{
		a.CharDev("dev/console", 0o600, 5, 1),
		a.File("bin/busybox", 0o755, bb),
		a.File("bin/petrel-exit", 0o755, staticELF(exitCode)),
		a.File("init", 0o755, []byte(initScript)),
	}
	if err := errors.Join(steps...); err != nil {
		return nil, err
	}
	for _, m := range Modules {
		rel, ok := paths[m]
		if !ok {
			return nil, fmt.Errorf("%w: kernel module %s not in %s", ErrMissing, m, l.ModulesDir)
		}
		if !strings.HasSuffix(rel, ".ko") {
			return nil, fmt.Errorf("kernel module %s is compressed (%s); only plain .ko files are supported", m, rel)
		}
		data, err := os.ReadFile(filepath.Join(l.ModulesDir, rel))
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		if err := a.File("lib/modules/"+m+".ko", 0o644, data); err != nil {
			return nil, err
		}
	}
	if err := a.File("lib/modules/order", 0o644, []byte(strings.Join(Modules, "\n")+"\n")); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestSpeed)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if _, err := zw.Write(a.Bytes()); err != nil {
		return nil, fmt.Errorf("compress initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress initramfs: %w", err)
	}
	return out.Bytes(), nil
}

// WriteInitramfs writes Initramfs() to path.
func (l Linux) WriteInitramfs(path string) error {
	b, err := l.Initramfs()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return nil
}
