package backend

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/plugins/qemu/testguest"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/shim"
	"github.com/petrel-vmm/petrel/sdk/solo5"
	googleproto "google.golang.org/protobuf/proto"
)

func TestParseSettings(t *testing.T) {
	s, err := parseSettings(nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.qemu != "qemu-system-x86_64" || s.linuxAccel != "auto" || s.unikernelAcc != "auto" || s.machine != "q35" ||
		s.firmware != "auto" || s.kvmCPU != "host" || s.kvmCPUSet || s.sandbox != "auto" || len(s.extra) != 0 {
		t.Fatalf("defaults %+v", s)
	}
	s, err = parseSettings(map[string]string{SettingLinuxAccel: "kvm", SettingMachine: "pc-i440fx-7.2", SettingKVMCPU: "max", SettingExtraArgs: " -a  b "})
	if err != nil || s.linuxAccel != "kvm" || s.machine != "pc-i440fx-7.2" || !s.kvmCPUSet || s.kvmCPU != "max" || strings.Join(s.extra, "|") != "-a|b" {
		t.Fatalf("parse = %+v, %v", s, err)
	}
	for _, bad := range []map[string]string{
		{"tender": "x"},
		{SettingLinuxAccel: "hvf"},
		{SettingUnikernelAccel: "KVM"},
		{SettingMachine: "microvm"},
		{SettingMachine: "q35,accel=tcg"},
		{SettingSandbox: "yes"},
	} {
		if _, err := parseSettings(bad); err == nil {
			t.Errorf("parseSettings(%v) accepted", bad)
		}
	}
}

func TestChooseAccel(t *testing.T) {
	def, _ := parseSettings(nil)
	noKVM := errors.New("/dev/kvm unusable")
	for _, c := range []struct {
		name    string
		set     map[string]string
		kvmErr  error
		pvm     bool
		target  string
		want    string
		warn    string
		wantErr bool
	}{
		{name: "linux on kvm", target: TargetLinux, want: accelKVM},
		{name: "linux on pvm", pvm: true, target: TargetLinux, want: accelTCG, warn: "kvm_pvm"},
		{name: "unikernel on pvm", pvm: true, target: TargetVirtio, want: accelKVM},
		{name: "no kvm", kvmErr: noKVM, target: TargetVirtio, want: accelTCG, warn: "unusable"},
		{name: "forced kvm on pvm", set: map[string]string{SettingLinuxAccel: "kvm"}, pvm: true, target: TargetLinux, want: accelKVM},
		{name: "forced kvm without kvm", set: map[string]string{SettingUnikernelAccel: "kvm"}, kvmErr: noKVM, target: TargetVirtio, wantErr: true},
		{name: "forced tcg", set: map[string]string{SettingUnikernelAccel: "tcg"}, target: TargetVirtio, want: accelTCG, warn: "unikernel_accel = tcg"},
		{name: "linux setting leaves unikernels", set: map[string]string{SettingLinuxAccel: "tcg"}, target: TargetVirtio, want: accelKVM},
	} {
		cfg := def
		if c.set != nil {
			cfg, _ = parseSettings(c.set)
		}
		accel, warn, err := chooseAccel(cfg, host{kvmErr: c.kvmErr, pvm: c.pvm}, c.target)
		if (err != nil) != c.wantErr || accel != c.want || (c.warn == "") != (warn == "") || !strings.Contains(warn, c.warn) {
			t.Errorf("%s: chooseAccel = %q, %q, %v", c.name, accel, warn, err)
		}
	}
	h := host{pvm: true}
	if m := cpuModel(def, h, accelKVM); m != "host,-arch-capabilities" {
		t.Errorf("cpu on kvm_pvm = %q", m)
	}
	set, _ := parseSettings(map[string]string{SettingKVMCPU: "EPYC"})
	if m := cpuModel(set, h, accelKVM); m != "EPYC" {
		t.Errorf("explicit cpu on kvm_pvm = %q", m)
	}
	if m := cpuModel(def, h, accelTCG); m != "" {
		t.Errorf("cpu under tcg = %q", m)
	}
}

// has reports whether argv holds the consecutive words seq.
func has(argv []string, seq ...string) bool {
	for i := 0; i+len(seq) <= len(argv); i++ {
		match := true
		for j := range seq {
			match = match && argv[i+j] == seq[j]
		}
		if match {
			return true
		}
	}
	return false
}

func TestArgvVirtio(t *testing.T) {
	spec := &pluginv1.VMSpec{Id: "vm1", ImagePath: "/img/u.virtio", MemoryMb: 64, Cpus: []uint32{2, 3}, Args: []string{"--x=1", "y"},
		Nets:   []*pluginv1.NetDevice{{Name: "service", HostIf: "tap7", Mac: "02:00:00:00:00:01"}, {Name: "other", HostIf: "tap8"}},
		Blocks: []*pluginv1.BlockDevice{{Name: "storage", Path: "/data/a,b.img", SectorSize: 4096}}}
	p := plan{qemu: "/usr/bin/qemu-system-x86_64", dir: "/run/petrel/vm1", image: guestImage{target: TargetVirtio}, accel: accelKVM,
		cpuModel: "host", machine: "q35", firmware: "/fw/qboot.rom", sandbox: true, extra: []string{"-S"}, spec: spec}
	a := p.argv()
	for _, seq := range [][]string{
		{"/usr/bin/qemu-system-x86_64", "-name", "petrel-vm1,debug-threads=on"},
		{"-machine", "q35", "-accel", "kvm", "-bios", "/fw/qboot.rom", "-cpu", "host", "-m", "64", "-smp", "2"},
		{"-serial", "stdio"},
		{"-no-reboot"},
		{"-qmp", "unix:/run/petrel/vm1/qmp.sock,server=on,wait=off"},
		{"-kernel", "/img/u.virtio", "-append", "--x=1 y", "-device", virtioDebugExit},
		{"-netdev", "tap,id=net0,ifname=tap7,script=no,downscript=no", "-device", "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01"},
		{"-netdev", "tap,id=net1,ifname=tap8,script=no,downscript=no", "-device", "virtio-net-pci,netdev=net1,mac=" + defaultMAC("vm1", 1)},
		{"-drive", "file=/data/a,,b.img,if=none,id=blk0,format=raw", "-device", "virtio-blk-pci,drive=blk0,serial=storage,logical_block_size=4096,physical_block_size=4096"},
	} {
		if !has(a, seq...) {
			t.Errorf("argv lacks %q:\n%q", seq, a)
		}
	}
	if a[len(a)-1] != "-S" {
		t.Errorf("extra args not last: %q", a)
	}
	if has(a, "-initrd") || has(a, "-device", "pvpanic") {
		t.Errorf("unikernel argv has Linux parts: %q", a)
	}
	if !has(a, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny") {
		t.Errorf("no sandbox: %q", a)
	}
	p.sandbox, p.firmware, p.cpuModel = false, "", ""
	spec.Args, spec.Cpus = nil, nil
	a = p.argv()
	if has(a, "-sandbox") || has(a, "-bios") || has(a, "-cpu") || has(a, "-append") || !has(a, "-smp", "1") {
		t.Errorf("minimal argv %q", a)
	}
}

func TestArgvLinux(t *testing.T) {
	spec := &pluginv1.VMSpec{Id: "vm2", ImagePath: "/boot/vmlinuz", InitrdPath: "/boot/initrd", KernelCmdline: "quiet  root=/dev/vda", Args: []string{"petrel.exit=3"}, MemoryMb: 256}
	p := plan{qemu: "qemu", dir: "/r/vm2", image: guestImage{target: TargetLinux}, accel: accelTCG, machine: "q35", spec: spec}
	a := p.argv()
	for _, seq := range [][]string{
		{"-kernel", "/boot/vmlinuz", "-initrd", "/boot/initrd", "-append", "console=ttyS0 quiet root=/dev/vda petrel.exit=3"},
		{"-device", linuxDebugExit, "-device", "pvpanic", "-action", "panic=pause"},
		{"-accel", "tcg"},
	} {
		if !has(a, seq...) {
			t.Errorf("argv lacks %q:\n%q", seq, a)
		}
	}
	spec.KernelCmdline = "console=hvc0"
	spec.Args = nil
	if got := kernelCmdline(spec); got != "console=hvc0" {
		t.Errorf("cmdline with a console = %q", got)
	}
	spec.KernelCmdline = ""
	if got := kernelCmdline(spec); got != "console=ttyS0" {
		t.Errorf("empty cmdline = %q", got)
	}
}

func TestFirmwareFor(t *testing.T) {
	auto, _ := parseSettings(nil)
	v := view{cfg: auto, firmware: "/q/qboot.rom"}
	for _, c := range []struct {
		target  string
		devices int
		want    string
	}{{TargetLinux, 0, "/q/qboot.rom"}, {TargetLinux, 2, "/q/qboot.rom"}, {TargetVirtio, 0, "/q/qboot.rom"}, {TargetVirtio, 1, ""}} {
		if got := firmwareFor(v, c.target, c.devices); got != c.want {
			t.Errorf("auto firmware for %s with %d devices = %q, want %q", c.target, c.devices, got, c.want)
		}
	}
	qboot, _ := parseSettings(map[string]string{SettingFirmware: "qboot"})
	if got := firmwareFor(view{cfg: qboot, firmware: "/q/qboot.rom"}, TargetVirtio, 1); got != "/q/qboot.rom" {
		t.Errorf("explicit qboot = %q", got)
	}
}

func TestDefaultMAC(t *testing.T) {
	a, b := defaultMAC("vm", 0), defaultMAC("vm", 1)
	if a == b || a != defaultMAC("vm", 0) || a == defaultMAC("vn", 0) {
		t.Fatalf("MACs %s %s not stable and distinct", a, b)
	}
	if !validMAC(a) || !strings.ContainsAny(a[1:2], "2367abef") {
		t.Fatalf("MAC %s is not a locally administered unicast address", a)
	}
}

func TestValidNames(t *testing.T) {
	for s, want := range map[string]bool{"02:00:00:00:00:01": true, "AA:bb:cc:dd:ee:ff": true, "01:00:00:00:00:01": false,
		"02:00:00:00:00": false, "02-00-00-00-00-01": false, "02:00:00:00:00:0g": false} {
		if validMAC(s) != want {
			t.Errorf("validMAC(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{"tap0": true, "vm-net.1": true, "": false, "a/b": false, "a b": false,
		"a,b": false, "a:b": false, "0123456789abcdef": false, "..": false} {
		if validIfName(s) != want {
			t.Errorf("validIfName(%q) = %v", s, !want)
		}
	}
}

// writeFile writes data to a new file in the test's temporary directory.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// solo5Image builds a Solo5 image of target declaring devs.
func solo5Image(t *testing.T, target solo5.Target, devs ...solo5.Device) string {
	t.Helper()
	b, err := solo5.Build(solo5.BuildSpec{Target: target, ABIVersion: 1, Devices: devs})
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, target.String(), b)
}

// pvhELF returns an ELF file whose only segment is a note area holding a
// Xen PHYS32_ENTRY note, as a PVH-bootable kernel has.
func pvhELF() []byte {
	le := binary.LittleEndian
	note := make([]byte, 12, 20)
	le.PutUint32(note[0:], 4)
	le.PutUint32(note[4:], 4)
	le.PutUint32(note[8:], xenElfnotePhys32)
	note = append(note, "Xen\x00"...)
	note = append(note, 0, 0, 0x10, 0)
	out := make([]byte, 64+56)
	copy(out, elf.ELFMAG)
	out[elf.EI_CLASS], out[elf.EI_DATA], out[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	le.PutUint16(out[16:], uint16(elf.ET_EXEC))
	le.PutUint16(out[18:], uint16(elf.EM_X86_64))
	le.PutUint32(out[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(out[32:], 64)
	le.PutUint16(out[52:], 64)
	le.PutUint16(out[54:], 56)
	le.PutUint16(out[56:], 1)
	ph := out[64:]
	le.PutUint32(ph[0:], uint32(elf.PT_NOTE))
	le.PutUint64(ph[8:], 120)
	le.PutUint64(ph[32:], uint64(len(note)))
	le.PutUint64(ph[40:], uint64(len(note)))
	le.PutUint64(ph[48:], 4)
	return append(out, note...)
}

func TestInspectImage(t *testing.T) {
	bz := make([]byte, 0x1000)
	copy(bz[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(bz[0x1fe:], 0xaa55)
	mb := make([]byte, 0x3000)
	binary.LittleEndian.PutUint32(mb[0x1ff0:], 0x1BADB002)
	binary.LittleEndian.PutUint32(mb[0x1ff4:], 3)
	magic, flags := uint32(0x1BADB002), uint32(3)
	binary.LittleEndian.PutUint32(mb[0x1ff8:], -(magic + flags))
	badSum := append([]byte(nil), mb...)
	badSum[0x1ff8]++
	exe, _ := os.Executable()
	for _, c := range []struct {
		name, path, target, format, refusal string
	}{
		{"virtio", solo5Image(t, solo5.TargetVirtio), TargetVirtio, "Solo5 virtio unikernel", ""},
		{"hvt", solo5Image(t, solo5.TargetHVT), "", "", "Solo5 hvt unikernel; the qemu backend runs only Solo5 virtio unikernels and Linux kernels (use the hvt backend"},
		{"spt", solo5Image(t, solo5.TargetSPT), "", "", "use the spt backend"},
		{"bzImage", writeFile(t, "bz", bz), TargetLinux, "bzImage", ""},
		{"pvh", writeFile(t, "pvh", pvhELF()), TargetLinux, "PVH ELF kernel", ""},
		{"multiboot", writeFile(t, "mb", mb), TargetLinux, "multiboot kernel", ""},
		{"bad checksum", writeFile(t, "mb2", badSum), "", "", "neither a Solo5 virtio unikernel nor a kernel"},
		{"plain ELF", exe, "", "", "neither a Solo5 virtio unikernel nor a kernel"},
		{"junk", writeFile(t, "junk", []byte("junk")), "", "", "neither"},
		{"empty", writeFile(t, "empty", nil), "", "", "neither"},
		{"missing", "/nonexistent/image", "", "", "no such file"},
	} {
		im, err := inspectImage(c.path)
		if c.refusal != "" {
			if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), c.refusal) {
				t.Errorf("%s: inspectImage = %v; want a refusal containing %q", c.name, err, c.refusal)
			}
			continue
		}
		if err != nil || im.target != c.target || im.format != c.format {
			t.Errorf("%s: inspectImage = %+v, %v", c.name, im, err)
		}
	}
	if findNote([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, binary.LittleEndian, "Xen", 18) {
		t.Error("findNote accepted a note with absurd sizes")
	}
}

func TestCheckSpecRefusals(t *testing.T) {
	virtio := solo5Image(t, solo5.TargetVirtio, solo5.Device{Name: "service", Type: solo5.DeviceNet}, solo5.Device{Name: "storage", Type: solo5.DeviceBlock})
	bz := make([]byte, 0x1000)
	copy(bz[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(bz[0x1fe:], 0xaa55)
	kernel := writeFile(t, "bz", bz)
	disk := writeFile(t, "disk", make([]byte, 4096))
	good := func() *pluginv1.VMSpec {
		return &pluginv1.VMSpec{Id: "vm", ImagePath: virtio, MemoryMb: 32,
			Nets:   []*pluginv1.NetDevice{{Name: "service", HostIf: "tap0"}},
			Blocks: []*pluginv1.BlockDevice{{Name: "storage", Path: disk}}}
	}
	if _, err := checkSpec(good(), 1024); err != nil {
		t.Fatalf("good spec refused: %v", err)
	}
	linux := &pluginv1.VMSpec{Id: "vm", ImagePath: kernel, MemoryMb: 128, InitrdPath: disk, KernelCmdline: "quiet"}
	if im, err := checkSpec(linux, 1024); err != nil || im.target != TargetLinux {
		t.Fatalf("good Linux spec: %v, %v", im, err)
	}
	for _, c := range []struct {
		name, want string
		edit       func(*pluginv1.VMSpec) *pluginv1.VMSpec
	}{
		{"bad id", "VM id", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Id = "A/b"; return s }},
		{"too little memory", "outside", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.MemoryMb = 8; return s }},
		{"too much memory", "outside", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.MemoryMb = 4096; return s }},
		{"linux below 128 MB", "too little for a Linux guest", func(*pluginv1.VMSpec) *pluginv1.VMSpec { s := proto(linux); s.MemoryMb = 96; return s }},
		{"missing initrd", "initrd", func(*pluginv1.VMSpec) *pluginv1.VMSpec { s := proto(linux); s.InitrdPath = "/nonexistent"; return s }},
		{"cmdline newline", "newline", func(*pluginv1.VMSpec) *pluginv1.VMSpec { s := proto(linux); s.KernelCmdline = "a\nb"; return s }},
		{"initrd for unikernel", "not an initrd", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.InitrdPath = disk; return s }},
		{"cmdline for unikernel", "not an initrd", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.KernelCmdline = "x"; return s }},
		{"manifest mismatch", "storage", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Blocks = nil; return s }},
		{"duplicate name", "configured twice", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Blocks[0].Name = "service"; return s }},
		{"unnamed device", "no name", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Nets[0].Name = ""; return s }},
		{"bad host interface", "host interface", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Nets[0].HostIf = "tap,0"; return s }},
		{"bad MAC", "MAC", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Nets[0].Mac = "01:00:00:00:00:00"; return s }},
		{"missing disk", "no such file", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Blocks[0].Path = "/nonexistent"; return s }},
		{"disk is a directory", "directory", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Blocks[0].Path = t.TempDir(); return s }},
		{"bad sector size", "sector size", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Blocks[0].SectorSize = 1000; return s }},
		{"small sector size", "sector size", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Blocks[0].SectorSize = 256; return s }},
		{"arg newline", "newline", func(s *pluginv1.VMSpec) *pluginv1.VMSpec { s.Args = []string{"a\nb"}; return s }},
	} {
		_, err := checkSpec(c.edit(good()), 1024)
		if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: checkSpec = %v; want a refusal containing %q", c.name, err, c.want)
		}
	}
}

// proto copies a spec.
func proto(s *pluginv1.VMSpec) *pluginv1.VMSpec {
	return googleproto.Clone(s).(*pluginv1.VMSpec)
}

func TestQEMUErrors(t *testing.T) {
	lines := []string{
		"qemu-system-x86_64: warning: host doesn't support requested feature",
		"qemu-system-x86_64: -netdev tap,id=net0,ifname=tap9: could not configure /dev/net/tun (tap9): Device or resource busy",
		"PETREL-LINUX-UP",
		"qemu-system-x86_64: terminating on signal 15 from pid 1",
	}
	got := qemuErrors(lines, "qemu-system-x86_64")
	if len(got) != 1 || !strings.HasPrefix(got[0], "-netdev tap") {
		t.Fatalf("qemuErrors = %q", got)
	}
}

// fakeQMP serves a QMP socket like QEMU's: one client at a time, a
// greeting, capability negotiation, events between answers. status is the
// run state query-status returns; commands records what was executed.
type fakeQMP struct {
	ln       net.Listener
	mu       sync.Mutex
	status   string
	commands []string
	wg       sync.WaitGroup
}

func newFakeQMP(t *testing.T, sock, status string) *fakeQMP {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeQMP{ln: ln, status: status}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeQMP) setStatus(s string) {
	f.mu.Lock()
	f.status = s
	f.mu.Unlock()
}

func (f *fakeQMP) executed(cmd string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.commands {
		if c == cmd {
			return true
		}
	}
	return false
}

func (f *fakeQMP) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.conn(c)
	}
}

func (f *fakeQMP) conn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	w := bufio.NewWriter(c)
	send := func(v string) { w.WriteString(v + "\r\n"); w.Flush() }
	send(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`)
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var req struct {
			Execute string `json:"execute"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			send(`{"error": {"class": "GenericError", "desc": "JSON parse error"}}`)
			continue
		}
		f.mu.Lock()
		f.commands = append(f.commands, req.Execute)
		status := f.status
		f.mu.Unlock()
		send(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RTC_CHANGE", "data": {"offset": 0}}`)
		switch req.Execute {
		case "qmp_capabilities", "system_powerdown":
			send(`{"return": {}}`)
		case "query-status":
			send(fmt.Sprintf(`{"return": {"status": %q, "singlestep": false, "running": %v}}`, status, status == "running"))
		default:
			send(fmt.Sprintf(`{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}}`, req.Execute))
		}
	}
}

func TestQMPCall(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	f := newFakeQMP(t, sock, "running")
	ctx := context.Background()
	st, err := queryStatus(ctx, sock)
	if err != nil || st.Status != "running" || !st.Running {
		t.Fatalf("queryStatus = %+v, %v", st, err)
	}
	if _, err := qmpCall(ctx, sock, "no-such-command", nil); !errors.Is(err, errQMPCommand) || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Fatalf("unknown command: %v", err)
	}
	if !f.executed("qmp_capabilities") {
		t.Fatal("capabilities were not negotiated")
	}
	if _, err := queryStatus(ctx, filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("queryStatus on a missing socket succeeded")
	}
	// A socket that accepts but never greets makes the call time out.
	mute := filepath.Join(t.TempDir(), "mute.sock")
	ln, err := net.Listen("unix", mute)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := queryStatus(tctx, mute); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("mute socket: %v after %v", err, time.Since(start))
	}
}

// fakeVM starts a shim whose "QEMU" is a shell printing lines and then
// sleeping, beside a fake QMP socket answering with status (none when
// status is empty), in a VM directory of b's run dir.
func fakeVM(t *testing.T, b *Backend, runDir, id, status string, lines ...string) *fakeQMP {
	t.Helper()
	dir := filepath.Join(runDir, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var f *fakeQMP
	if status != "" {
		f = newFakeQMP(t, filepath.Join(dir, QMPSocket), status)
	}
	script := ""
	for _, l := range lines {
		script += fmt.Sprintf("echo %q >&2; ", l)
	}
	argv := []string{"/bin/sh", "-c", script + "exec sleep 60"}
	if err := writeJSON(dir, VMFile, vmRecord{Target: TargetLinux, Accel: accelKVM, QEMU: argv}); err != nil {
		t.Fatal(err)
	}
	if _, err := shim.Launch(context.Background(), shim.Config{ShimPath: filepath.Join(shared.dir, "petrel-shim"), Dir: dir, Argv: argv}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Destroy(context.Background(), id) })
	return f
}

// TestMonitorReportsFailure runs the failure monitor against a fake QEMU
// that reports a KVM internal error: Wait must give code 1 and the reason
// from the console, and the process must have been killed.
func TestMonitorReportsFailure(t *testing.T) {
	setup(t)
	rd := runDir(t)
	b := New("test")
	b.poll = 50 * time.Millisecond
	t.Cleanup(b.Close)
	if err := b.Configure(context.Background(), &pluginv1.ConfigureRequest{RunDir: rd, PluginDir: shared.dir}); err != nil {
		t.Fatal(err)
	}
	qmp := fakeVM(t, b, rd, "failing", "running", "KVM internal error. Suberror: 1", "extra data[0]: 0x0000000000000001", "emulation failure")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan *pluginv1.ExitStatus, 1)
	go func() {
		st, err := b.Wait(ctx, "failing")
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		done <- st
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case st := <-done:
		t.Fatalf("VM ended while running: %v", st)
	default:
	}
	b.monMu.Lock()
	watched := b.monitors["failing"] != nil
	b.monMu.Unlock()
	if !watched {
		t.Fatal("Wait did not start a monitor")
	}
	qmp.setStatus("internal-error")
	st := <-done
	if st == nil || st.GetCode() != 1 || st.GetSignal() != 0 ||
		st.GetMessage() != "guest paused (QEMU state internal-error): KVM internal error. Suberror: 1: emulation failure; "+internalErrorHint(b) {
		t.Fatalf("exit %v", st)
	}
	if f := readFailure(filepath.Join(rd, "failing")); f == nil || f.Status != "internal-error" {
		t.Fatalf("failure record %+v", f)
	}
}

// internalErrorHint is the advice appended to internal-error reasons on
// this host.
func internalErrorHint(b *Backend) string {
	if b.host.pvm {
		return "this host's KVM is kvm_pvm, which cannot emulate every instruction: run the guest under TCG (setting unikernel_accel or linux_accel = tcg)"
	}
	return "KVM could not emulate an instruction of the guest"
}

// TestPausedIsNotFailure checks that a guest an operator paused is left
// alone, and that Stop presses the power button and kills after the
// timeout when the guest does not react.
func TestPausedIsNotFailure(t *testing.T) {
	setup(t)
	rd := runDir(t)
	b := New("test")
	b.poll = 20 * time.Millisecond
	t.Cleanup(b.Close)
	if err := b.Configure(context.Background(), &pluginv1.ConfigureRequest{RunDir: rd, PluginDir: shared.dir}); err != nil {
		t.Fatal(err)
	}
	f := fakeVM(t, b, rd, "paused", "paused")
	b.watch("paused", filepath.Join(rd, "paused"))
	time.Sleep(300 * time.Millisecond)
	if readFailure(filepath.Join(rd, "paused")) != nil {
		t.Fatal("a paused guest was recorded as failed")
	}
	ctx := context.Background()
	if err := b.Stop(ctx, "paused", 300*time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !f.executed("system_powerdown") {
		t.Fatal("Stop did not press the power button")
	}
	st, err := b.Wait(ctx, "paused")
	if err != nil || st.GetSignal() != 9 || st.GetMessage() != "QEMU killed by signal 9" {
		t.Fatalf("Wait = %v, %v", st, err)
	}
}

// TestStopWithoutQMP stops a VM whose QMP socket does not answer: QEMU
// gets SIGTERM at once.
func TestStopWithoutQMP(t *testing.T) {
	setup(t)
	rd := runDir(t)
	b := New("test")
	t.Cleanup(b.Close)
	ctx := context.Background()
	if err := b.Configure(ctx, &pluginv1.ConfigureRequest{RunDir: rd, PluginDir: shared.dir}); err != nil {
		t.Fatal(err)
	}
	fakeVM(t, b, rd, "mute", "")
	start := time.Now()
	if err := b.Stop(ctx, "mute", 20*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Stop took %v; SIGTERM should end it at once", took)
	}
	st, err := b.Wait(ctx, "mute")
	if err != nil || st.GetSignal() != 15 {
		t.Fatalf("Wait = %v, %v; want SIGTERM", st, err)
	}
	if err := b.Stop(ctx, "mute", time.Second); err != nil {
		t.Fatalf("Stop of a stopped VM: %v", err)
	}
	if _, err := b.Wait(ctx, "nonexistent"); !errors.Is(err, hypervisor.ErrUnknownVM) {
		t.Fatalf("Wait(unknown) = %v", err)
	}
}

// TestVirtioGuestBytes checks that the embedded guest still parses as the
// Solo5 virtio image the backend expects.
func TestVirtioGuestBytes(t *testing.T) {
	b, err := testguest.VirtioImage()
	if err != nil {
		t.Fatal(err)
	}
	im, err := inspectImage(writeFile(t, "g", b))
	if err != nil || im.target != TargetVirtio || im.solo5.ABIVersion != testguest.VirtioABIVersion {
		t.Fatalf("inspectImage = %+v, %v", im, err)
	}
}

// TestGuestExit decodes QEMU's exit statuses into the guest's own exit
// code: isa-debug-exit's (N<<1)|1 gives N, a Solo5 virtio guest's 83 the
// status Solo5 printed, and the raw status stays in the message.
func TestGuestExit(t *testing.T) {
	virtio := &vmRecord{Target: TargetVirtio, QEMU: []string{"/usr/bin/qemu-system-x86_64"}}
	linux := &vmRecord{Target: TargetLinux, QEMU: []string{"/usr/bin/qemu-system-x86_64"}}
	for _, c := range []struct {
		what    string
		e       shim.Exit
		rec     *vmRecord
		console []string
		code    int32
		msg     string
	}{
		{"solo5_exit(0)", shim.Exit{Code: 83}, virtio, []string{"Solo5: solo5_exit(0) called"}, 0, "Solo5 guest called solo5_exit(0) (QEMU exit status 83)"},
		{"solo5_exit(3), last report wins", shim.Exit{Code: 83}, virtio, []string{"Solo5: solo5_exit(9) called", "hello", "Solo5: solo5_exit(3) called\r"}, 3, "solo5_exit(3) (QEMU exit status 83)"},
		{"abort", shim.Exit{Code: 83}, virtio, []string{"Solo5: solo5_abort() called"}, 255, "Solo5 guest aborted: Solo5: solo5_abort() called (QEMU exit status 83)"},
		{"trap", shim.Exit{Code: 83}, virtio, []string{"Solo5: trap: type=#GP ec=0x0 rip=0x1"}, 255, "aborted: Solo5: trap"},
		{"quiet", shim.Exit{Code: 83}, virtio, nil, 0, "without reporting its status (--solo5:quiet); 0 assumed (QEMU exit status 83)"},
		{"83 from a Linux guest", shim.Exit{Code: 83}, linux, nil, 41, "guest wrote 41 to isa-debug-exit (QEMU exit status 83)"},
		{"isa-debug-exit 7", shim.Exit{Code: 15}, linux, nil, 7, "guest wrote 7 to isa-debug-exit (QEMU exit status 15)"},
		{"isa-debug-exit 1", shim.Exit{Code: 3}, virtio, nil, 1, "guest wrote 1 to isa-debug-exit (QEMU exit status 3)"},
		{"power off", shim.Exit{Code: 0}, linux, nil, 0, "guest powered off"},
		{"terminated", shim.Exit{Code: 0}, linux, []string{"qemu-system-x86_64: terminating on signal 15 from pid 1"}, 0, "QEMU terminated by a signal"},
		{"QEMU failed", shim.Exit{Code: 1}, linux, []string{"qemu-system-x86_64: -m 99999999: cannot allocate"}, 1, "QEMU failed: -m 99999999: cannot allocate"},
		{"wrote 0 or failed", shim.Exit{Code: 1}, nil, nil, 1, "guest wrote 0 to isa-debug-exit, or QEMU failed"},
		{"even status", shim.Exit{Code: 2}, linux, nil, 2, "QEMU exited with status 2"},
		{"signal", shim.Exit{Code: -1, Signal: 9}, linux, nil, -1, "QEMU killed by signal 9"},
	} {
		code, msg := guestExit(c.e, c.rec, c.console)
		if code != c.code || !strings.Contains(msg, c.msg) {
			t.Errorf("%s: code %d, %q; want %d, containing %q", c.what, code, msg, c.code, c.msg)
		}
	}
}

// TestFingerprintWithoutQEMU: a host without QEMU is told the command
// that installs it, through the fingerprint's problems, as petreld and
// petrel doctor show them.
func TestFingerprintWithoutQEMU(t *testing.T) {
	b := New("test")
	t.Cleanup(b.Close)
	dir := t.TempDir()
	req := &pluginv1.ConfigureRequest{RunDir: filepath.Join(dir, "run"), PluginDir: dir,
		Settings: map[string]string{SettingQEMU: filepath.Join(dir, "qemu-system-x86_64")}}
	if err := b.Configure(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	fp, err := b.Fingerprint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fp.GetHealth() != pluginv1.Health_HEALTH_UNHEALTHY || len(fp.GetProblems()) == 0 {
		t.Fatalf("fingerprint without QEMU: %v", fp)
	}
	if p := fp.GetProblems()[0]; !strings.Contains(p.GetDescription(), "not found") || p.GetFix() != "apt install qemu-system-x86" {
		t.Fatalf("first problem %v; want QEMU not found, fixed by apt install qemu-system-x86", p)
	}
}
