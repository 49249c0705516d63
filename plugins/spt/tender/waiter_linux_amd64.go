//go:build linux && amd64

package tender

//go:generate go test -run ^TestWaiterMachineCode$ -update

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// forwardedSignals are the signals the tender, and then the waiter, pass
// on to the guest process: those a supervisor sends to stop a VM.
var forwardedSignals = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP}

// waiterName names the waiter's memfd, which the kernel also makes the
// waiter's command name: "memfd:solo5-spt".
const waiterName = "solo5-spt"

// becomeWaiter replaces the tender, a Go process of several megabytes,
// with the waiter, a static executable of a few hundred bytes
// (testdata/waiter_amd64.S), which forwards SIGTERM, SIGINT and SIGHUP to
// the guest process pid, waits for it and ends as it ended, as the tender
// would. It must run on the thread that forked the guest: that thread
// survives exec as the waiter's only one, so the guest stays its child
// and keeps its death signal.
//
// The signals to forward are blocked on this thread and no longer caught
// by Go before the exec: those that arrived are sent to the guest, and one
// arriving later waits, blocked, for the waiter's handler (or, caught by
// another thread of the Go runtime in between, ends the tender with its
// default action, and the guest with it by its death signal). On success
// it does not return; it returns when the waiter cannot be written or
// exec'd (memfd_create or execveat refused or missing), with sigs
// notified again.
func becomeWaiter(pid int, sigs chan os.Signal) error {
	fd, err := writeWaiter(pid)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	restore, err := blockSignals(forwardedSignals)
	if err != nil {
		return err
	}
	signal.Stop(sigs)
	// Until the waiter reaps the guest, which nothing else does, its pid
	// names it: kill is safe.
	for drained := false; !drained; {
		select {
		case s := <-sigs:
			unix.Kill(pid, s.(unix.Signal))
		default:
			drained = true
		}
	}
	err = execWaiter(fd, os.Args)
	restore()
	signal.Notify(sigs, forwardedSignals...)
	return err
}

// writeWaiter writes the waiter for the guest process pid into a new
// memfd (close-on-exec) and returns it.
func writeWaiter(pid int) (int, error) {
	code := waiterELF
	binary.LittleEndian.PutUint32(code[waiterPIDOffset:], uint32(pid))
	// MFD_EXEC asks for an executable memfd where vm.memfd_noexec would
	// otherwise refuse it; kernels before 6.3 know no such flag.
	fd, err := unix.MemfdCreate(waiterName, unix.MFD_CLOEXEC|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(waiterName, unix.MFD_CLOEXEC)
	}
	if err != nil {
		return -1, fmt.Errorf("create the waiter's memfd: %w", err)
	}
	for b := code[:]; len(b) > 0; {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("write the waiter: %w", err)
		}
		b = b[n:]
	}
	return fd, nil
}

// blockSignals blocks sigs on the calling thread and returns the function
// that restores its signal mask.
func blockSignals(sigs []os.Signal) (func(), error) {
	var set, old unix.Sigset_t
	for _, s := range sigs {
		n := uint(s.(unix.Signal)) - 1
		set.Val[n/64] |= 1 << (n % 64)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		return nil, fmt.Errorf("block signals: %w", err)
	}
	return func() { unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil) }, nil
}

// execWaiter execs the waiter written to fd with argv and an empty
// environment, after turning core dumps off: the waiter ends by the signal
// that killed the guest, and a core of the waiter would say nothing about
// the guest. It returns only when execveat fails.
func execWaiter(fd int, argv []string) error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("turn core dumps off: %w", err)
	}
	argvp := make([]*byte, 0, len(argv)+1)
	for _, a := range argv {
		p, err := unix.BytePtrFromString(a)
		if err != nil {
			return fmt.Errorf("exec the waiter: argument %q: %w", a, err)
		}
		argvp = append(argvp, p)
	}
	argvp = append(argvp, nil)
	envp := []*byte{nil}
	empty := []byte{0}
	_, _, errno := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(&empty[0])),
		uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
	runtime.KeepAlive(argvp)
	runtime.KeepAlive(envp)
	runtime.KeepAlive(empty)
	return fmt.Errorf("exec the waiter: %w", errno)
}
