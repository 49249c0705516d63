//go:build linux && amd64

package tender

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeKVM is a kvmSys that succeeds like a working /dev/kvm until the call
// named fail, which returns errFake (or a bad value, for the two checks of
// returned values), and records what is open or mapped at every moment.
type fakeKVM struct {
	t       *testing.T
	fail    string
	nextFd  int
	open    map[int]bool
	mapped  map[*byte]bool
	version uintptr
	runSize uintptr
}

var errFake = errors.New("injected failure")

func (f *fakeKVM) sys() kvmSys {
	newFd := func() int {
		f.nextFd++
		f.open[f.nextFd] = true
		return f.nextFd
	}
	return kvmSys{
		open: func(path string) (int, error) {
			if path != "/dev/kvm" {
				f.t.Errorf("open %q, want /dev/kvm", path)
			}
			if f.fail == "open" {
				return -1, unix.ENOENT
			}
			return newFd(), nil
		},
		ioctl: func(fd int, req, arg uintptr) (uintptr, error) {
			if !f.open[fd] {
				f.t.Errorf("ioctl %#x on fd %d, which is not open", req, fd)
			}
			name := map[uintptr]string{
				kvmGetAPIVersion: "GET_API_VERSION", kvmCreateVM: "CREATE_VM",
				kvmSetUserMemoryRegion: "SET_USER_MEMORY_REGION", kvmCreateVCPU: "CREATE_VCPU",
				kvmGetVCPUMmapSize: "GET_VCPU_MMAP_SIZE", kvmCheckExtension: "CHECK_EXTENSION",
			}[req]
			if name == "" {
				f.t.Errorf("unexpected ioctl %#x", req)
			}
			if f.fail == name {
				return 0, errFake
			}
			switch req {
			case kvmGetAPIVersion:
				return f.version, nil
			case kvmCreateVM, kvmCreateVCPU:
				return uintptr(newFd()), nil
			case kvmGetVCPUMmapSize:
				return f.runSize, nil
			}
			return 0, nil
		},
		mmap: func(fd, length, prot, flags int) ([]byte, error) {
			what := "mmap memory"
			if fd >= 0 {
				what = "mmap run"
				if !f.open[fd] {
					f.t.Errorf("mmap of fd %d, which is not open", fd)
				}
			}
			if f.fail == what {
				return nil, unix.ENOMEM
			}
			b := make([]byte, length)
			f.mapped[&b[0]] = true
			return b, nil
		},
		munmap: func(b []byte) error {
			if !f.mapped[&b[0]] {
				f.t.Error("munmap of memory that is not mapped")
			}
			delete(f.mapped, &b[0])
			return nil
		},
		close: func(fd int) error {
			if !f.open[fd] {
				f.t.Errorf("close of fd %d, which is not open", fd)
			}
			delete(f.open, fd)
			return nil
		},
	}
}

// TestNewMachineErrorPaths fails each step of newMachine in turn and
// checks that the error names the step, that nothing panics, and that
// every descriptor and mapping acquired before the failure is released.
func TestNewMachineErrorPaths(t *testing.T) {
	for _, tc := range []struct {
		fail    string
		version uintptr
		runSize uintptr
		want    string
	}{
		{fail: "open", want: "open /dev/kvm: no such file or directory"},
		{fail: "GET_API_VERSION", want: "KVM: ioctl (GET_API_VERSION): injected failure"},
		{version: 11, want: "KVM: API version is 11, expected 12"},
		{fail: "CREATE_VM", want: "KVM: ioctl (CREATE_VM): injected failure"},
		{fail: "mmap memory", want: "mmap 1048576 bytes of guest memory: cannot allocate memory"},
		{fail: "SET_USER_MEMORY_REGION", want: "KVM: ioctl (SET_USER_MEMORY_REGION): injected failure"},
		{fail: "CREATE_VCPU", want: "KVM: ioctl (CREATE_VCPU): injected failure"},
		{fail: "GET_VCPU_MMAP_SIZE", want: "KVM: ioctl (GET_VCPU_MMAP_SIZE): injected failure"},
		{runSize: 64, want: "KVM: vCPU mmap size 64 is too small"},
		{fail: "mmap run", want: "mmap KVM vCPU state: cannot allocate memory"},
	} {
		name := tc.fail
		if name == "" {
			name = tc.want
		}
		t.Run(name, func(t *testing.T) {
			f := &fakeKVM{t: t, fail: tc.fail, open: map[int]bool{}, mapped: map[*byte]bool{},
				version: kvmAPIVersion, runSize: 4096}
			if tc.version != 0 {
				f.version = tc.version
			}
			if tc.runSize != 0 {
				f.runSize = tc.runSize
			}
			m, err := newMachineOn(f.sys(), 1<<20)
			if err == nil || m != nil {
				t.Fatalf("newMachineOn = %v, %v; want an error", m, err)
			}
			if err.Error() != tc.want {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			if len(f.open) != 0 || len(f.mapped) != 0 {
				t.Errorf("left %d descriptors open and %d mappings after the failure", len(f.open), len(f.mapped))
			}
		})
	}
}

// TestNewMachineSuccessAndClose checks that a machine built on the fake
// holds three descriptors and two mappings, and that close releases all of
// them (twice is harmless).
func TestNewMachineSuccessAndClose(t *testing.T) {
	f := &fakeKVM{t: t, open: map[int]bool{}, mapped: map[*byte]bool{}, version: kvmAPIVersion, runSize: 4096}
	m, err := newMachineOn(f.sys(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.open) != 3 || len(f.mapped) != 2 || len(m.mem) != 1<<20 || len(m.run) != 4096 {
		t.Fatalf("machine holds %d fds, %d mappings, %d bytes of memory, %d of run state", len(f.open), len(f.mapped), len(m.mem), len(m.run))
	}
	m.close()
	m.close()
	if len(f.open) != 0 || len(f.mapped) != 0 {
		t.Errorf("close left %d descriptors and %d mappings", len(f.open), len(f.mapped))
	}
}
