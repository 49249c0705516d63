package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/shim"
)

// VMFile records, in a VM directory, what kind of guest runs there and
// how, so that any plugin instance can serve the VM.
const VMFile = "qemu.json"

// vmRecord is the content of VMFile.
type vmRecord struct {
	// Target is TargetVirtio or TargetLinux.
	Target string `json:"target"`
	// Accel is "kvm" or "tcg".
	Accel string `json:"accel"`
	// Warning is the warning printed on the console, if any.
	Warning string `json:"warning,omitempty"`
	// QEMU is QEMU's command line.
	QEMU []string `json:"qemu"`
}

// handleState is the backend's part of a Handle.
type handleState struct {
	Dir    string `json:"dir"`
	Target string `json:"target"`
	Accel  string `json:"accel"`
}

// Timeouts of the lifecycle.
const (
	// readyTimeout bounds how long Start waits for QEMU's QMP socket to
	// answer, i.e. for QEMU to have opened every device.
	readyTimeout = 15 * time.Second
	// defaultStopTimeout is Stop's grace period when the caller gives none.
	defaultStopTimeout = 10 * time.Second
)

// warningScript prints its first argument on stderr (the console) and
// executes the rest, so that QEMU keeps the pid the shim reports.
const warningScript = `printf 'petrel: %s\n' "$1" >&2; shift; exec "$@"`

// Start launches QEMU for spec under a new shim and returns once QEMU has
// opened its devices and answers on QMP (or has already exited: a guest
// may finish quickly). It is idempotent by id: a Start whose run
// directory exists adopts the run an earlier, interrupted Start of the
// same id made, and starts one only when nothing runs or ran there.
func (b *Backend) Start(ctx context.Context, spec *pluginv1.VMSpec) (*pluginv1.Handle, error) {
	res, p, err := b.validate(ctx, spec)
	if err != nil {
		return nil, err
	}
	if !res.GetOk() {
		return nil, fmt.Errorf("%w: %s", hypervisor.ErrInvalid, res.GetReason())
	}
	v, err := b.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	if v.host.shimErr != nil {
		return nil, fmt.Errorf("%w: %v", hypervisor.ErrUnavailable, v.host.shimErr)
	}
	dir, err := b.dir(spec.GetId())
	if err != nil {
		return nil, err
	}
	p.dir = dir
	argv := p.argv()
	state, _ := json.Marshal(handleState{Dir: dir, Target: p.image.target, Accel: p.accel})
	if err := os.Mkdir(dir, 0o700); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("VM directory: %w", err)
		}
		// A Start of this id began before, in a plugin that crashed before
		// it could answer: adopt the run it made rather than make another.
		proc, err := shim.Resume(ctx, dir)
		if err == nil {
			if err := b.awaitReady(ctx, dir, filepath.Base(p.qemu)); err != nil {
				b.discard(dir)
				return nil, fmt.Errorf("start %s: %w", spec.GetName(), err)
			}
			b.watch(spec.GetId(), dir)
			return hypervisor.ShimHandle(spec.GetId(), state, proc, argv), nil
		}
		if !errors.Is(err, shim.ErrNoRun) {
			return nil, fmt.Errorf("start %s: %w", spec.GetName(), err)
		}
	}
	launch := argv
	if p.warning != "" {
		launch = append([]string{"/bin/sh", "-c", warningScript, "petrel-qemu", p.warning}, argv...)
	}
	if err := writeJSON(dir, VMFile, vmRecord{Target: p.image.target, Accel: p.accel, Warning: p.warning, QEMU: argv}); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", spec.GetName(), err)
	}
	proc, err := shim.Launch(ctx, shim.Config{
		ShimPath: v.host.shim, Dir: dir, CPUs: hypervisor.CPUSet(spec), ConsoleLines: int(spec.GetConsoleLines()),
		ConsoleBytes: int(spec.GetConsoleBytes()), Argv: launch, Env: os.Environ(),
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", spec.GetName(), err)
	}
	if err := b.awaitReady(ctx, dir, filepath.Base(p.qemu)); err != nil {
		b.discard(dir)
		return nil, fmt.Errorf("start %s: %w", spec.GetName(), err)
	}
	b.watch(spec.GetId(), dir)
	return hypervisor.ShimHandle(spec.GetId(), state, proc, argv), nil
}

// awaitReady waits until QEMU answers on QMP or exits. An exit with
// status 1 and an error message from QEMU itself is a failed start (a
// missing tap, an unreadable file); any other exit is the guest's and is
// left for Wait.
func (b *Backend) awaitReady(ctx context.Context, dir, prog string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	sock := filepath.Join(dir, QMPSocket)
	c := shim.Dial(dir)
	for {
		qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := queryStatus(qctx, sock)
		qcancel()
		if err == nil {
			return nil
		}
		info, ierr := c.Info(ctx)
		if ierr == nil && info.Exited || errors.Is(ierr, shim.ErrShimLost) {
			e, werr := c.Wait(ctx)
			if werr != nil {
				return fmt.Errorf("QEMU exited during start-up: %w", werr)
			}
			if msgs := qemuErrors(consoleOf(ctx, c), prog); e.Code == 1 && len(msgs) > 0 {
				return fmt.Errorf("QEMU failed to start: %s", strings.Join(msgs, "; "))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			// QEMU runs but is slow to answer; the monitor keeps watching.
			if ctx.Err() == context.DeadlineExceeded {
				return nil
			}
			return fmt.Errorf("waiting for QEMU: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// discard kills a VM that failed to start and removes its directory.
func (b *Backend) discard(dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if shim.Alive(dir) {
		_ = hypervisor.KillShim(ctx, shim.Dial(dir))
	}
	_ = os.RemoveAll(dir)
}

// consoleOf returns the console lines a shim holds (or saved at exit).
func consoleOf(ctx context.Context, c *shim.Client) []string {
	var lines []string
	_ = c.Console(ctx, time.Time{}, 0, false, func(l shim.Line) error {
		lines = append(lines, l.Text)
		return nil
	})
	return lines
}

// qemuErrors returns QEMU's own error messages among console lines:
// lines that start with its program name, other than its warnings and
// its note that a signal ended it.
func qemuErrors(lines []string, prog string) []string {
	var out []string
	for _, l := range lines {
		msg, ok := strings.CutPrefix(l, prog+": ")
		if !ok || strings.HasPrefix(msg, "warning:") || strings.HasPrefix(msg, "terminating on signal") {
			continue
		}
		out = append(out, msg)
	}
	return out
}

// readRecord returns the VM record of dir.
func readRecord(dir string) (*vmRecord, error) {
	data, err := os.ReadFile(filepath.Join(dir, VMFile))
	if err != nil {
		return nil, fmt.Errorf("read VM record: %w", err)
	}
	var r vmRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("parse VM record %s: %w", filepath.Join(dir, VMFile), err)
	}
	return &r, nil
}

// Recover reports whether the VM of h still runs, and watches it again.
func (b *Backend) Recover(ctx context.Context, h *pluginv1.Handle) (*pluginv1.RecoverResponse, error) {
	dir, err := b.existingDir(h.GetId())
	if err != nil {
		return nil, err
	}
	if shim.Alive(dir) {
		info, err := shim.Dial(dir).Info(ctx)
		if err == nil && info.Exited {
			return &pluginv1.RecoverResponse{}, nil
		}
		b.watch(h.GetId(), dir)
		return &pluginv1.RecoverResponse{Running: true}, nil
	}
	if ex, err := shim.ReadExit(dir); err == nil && ex != nil {
		return &pluginv1.RecoverResponse{}, nil
	}
	return &pluginv1.RecoverResponse{Lost: true}, nil
}

// Wait blocks until QEMU exits and reports how the guest ended: a failure
// the monitor recorded becomes exit code 1 with its reason, and a status
// the guest set through isa-debug-exit is decoded into the guest's own
// exit code, QEMU's raw status being kept in the message.
func (b *Backend) Wait(ctx context.Context, id string) (*pluginv1.ExitStatus, error) {
	dir, err := b.existingDir(id)
	if err != nil {
		return nil, err
	}
	c := shim.Dial(dir)
	if info, err := c.Info(ctx); err == nil && !info.Exited {
		b.watch(id, dir)
	}
	st, e, err := hypervisor.WaitShim(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("wait for %s: %w", id, err)
	}
	if st.GetLost() {
		return st, nil
	}
	if f := readFailure(dir); f != nil {
		st.Code, st.Signal, st.Message = 1, 0, f.Reason
		return st, nil
	}
	rec, _ := readRecord(dir)
	st.Code, st.Message = guestExit(e, rec, consoleOf(ctx, c))
	return st, nil
}

// solo5VirtioExit is QEMU's status when a Solo5 virtio guest ends: the
// binding writes 41 to isa-debug-exit whatever the guest's status, and
// QEMU exits with (41<<1)|1. The guest's status is in Solo5's report on
// the console (solo5Exit).
const solo5VirtioExit = 83

// solo5ExitAbort is SOLO5_EXIT_ABORT, the status of solo5_abort.
const solo5ExitAbort = 255

// Solo5's reports of a guest's end on the console: solo5_exit with the
// guest's status, solo5_abort, and the fatal errors that abort.
var (
	solo5Exit  = regexp.MustCompile(`^Solo5: solo5_exit\((-?\d+)\) called`)
	solo5Abort = regexp.MustCompile(`^Solo5: (solo5_abort\(\) called|PANIC|trap)`)
)

// guestExit returns the guest's own exit code for QEMU's exit e, and says
// in words how the guest ended. QEMU's isa-debug-exit device ends QEMU
// with status (N<<1)|1 for the value N the guest writes, so that an odd
// status of 3 or more is a guest's N; for a Solo5 virtio guest, whose
// binding always writes 41, N is the status Solo5 printed. Whenever the
// code differs from QEMU's status, the message keeps the latter. Status
// 1 stays 1: a guest that wrote 0 and a QEMU that failed both give it,
// and an unknown end is not a success. rec (nil when unreadable) names
// QEMU's binary and the guest's kind; console is the console history.
func guestExit(e shim.Exit, rec *vmRecord, console []string) (int32, string) {
	prog := "qemu-system-x86_64"
	if rec != nil && len(rec.QEMU) > 0 {
		prog = filepath.Base(rec.QEMU[0])
	}
	raw := int32(e.Code)
	switch {
	case e.Signal != 0:
		return raw, fmt.Sprintf("QEMU killed by signal %d", e.Signal)
	case raw == 0:
		for _, l := range console {
			if strings.HasPrefix(l, prog+": terminating on signal") {
				return 0, "QEMU terminated by a signal before the guest powered off"
			}
		}
		return 0, "guest powered off"
	case raw == 1:
		if msgs := qemuErrors(console, prog); len(msgs) > 0 {
			return 1, "QEMU failed: " + strings.Join(msgs, "; ")
		}
		return 1, "guest wrote 0 to isa-debug-exit, or QEMU failed"
	case raw%2 == 0 || raw < 0:
		return raw, fmt.Sprintf("QEMU exited with status %d", raw)
	case raw == solo5VirtioExit && rec != nil && rec.Target == TargetVirtio:
		return solo5Status(console)
	}
	return raw >> 1, fmt.Sprintf("guest wrote %d to isa-debug-exit (QEMU exit status %d)", raw>>1, raw)
}

// solo5Status reads the status of a Solo5 virtio guest, which QEMU
// reported as solo5VirtioExit, from Solo5's last report on its console.
// Without one (--solo5:quiet hides solo5_exit's), the guest called
// solo5_exit with a status nobody saw: 0 is assumed, and said so.
func solo5Status(console []string) (int32, string) {
	for i := len(console) - 1; i >= 0; i-- {
		l := strings.TrimSpace(console[i])
		if m := solo5Exit.FindStringSubmatch(l); m != nil {
			if n, err := strconv.ParseInt(m[1], 10, 32); err == nil {
				return int32(n), fmt.Sprintf("Solo5 guest called solo5_exit(%d) (QEMU exit status %d)", n, solo5VirtioExit)
			}
		}
		if solo5Abort.MatchString(l) {
			return solo5ExitAbort, fmt.Sprintf("Solo5 guest aborted: %s (QEMU exit status %d)", l, solo5VirtioExit)
		}
	}
	return 0, fmt.Sprintf("Solo5 guest exited without reporting its status (--solo5:quiet); 0 assumed (QEMU exit status %d)", solo5VirtioExit)
}

// Stop presses the guest's ACPI power button through QMP and kills QEMU
// once timeout has passed. When QMP does not answer, QEMU gets SIGTERM
// (it then quits at once, without the guest's cooperation).
func (b *Backend) Stop(ctx context.Context, id string, timeout time.Duration) error {
	dir, err := b.existingDir(id)
	if err != nil {
		return err
	}
	if timeout <= 0 {
		timeout = defaultStopTimeout
	}
	c := shim.Dial(dir)
	info, err := c.Info(ctx)
	if errors.Is(err, shim.ErrShimLost) || err == nil && info.Exited {
		return nil
	}
	qctx, qcancel := context.WithTimeout(ctx, qmpTimeout)
	_, qerr := qmpCall(qctx, filepath.Join(dir, QMPSocket), "system_powerdown", nil)
	qcancel()
	if qerr != nil {
		if err := c.Kill(ctx, syscall.SIGTERM); err != nil {
			if errors.Is(err, shim.ErrExited) || errors.Is(err, shim.ErrShimLost) {
				return nil
			}
			return fmt.Errorf("stop %s: %w", id, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	_, err = c.Wait(wctx)
	cancel()
	if err == nil || errors.Is(err, shim.ErrShimLost) {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stop %s: %w", id, ctx.Err())
	}
	if err := hypervisor.KillShim(ctx, c); err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	return nil
}

// Destroy kills the VM if it runs and removes its directory.
func (b *Backend) Destroy(ctx context.Context, id string) error {
	dir, err := b.dir(id)
	if err != nil {
		return err
	}
	b.unwatch(id)
	if err := hypervisor.RemoveShimVM(ctx, dir); err != nil {
		return fmt.Errorf("destroy %s: %w", id, err)
	}
	return nil
}

// Stats samples QEMU's resource usage.
func (b *Backend) Stats(ctx context.Context, id string) (*pluginv1.VMStats, error) {
	dir, err := b.existingDir(id)
	if err != nil {
		return nil, err
	}
	st, err := hypervisor.ShimStats(dir)
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", id, err)
	}
	return st, nil
}

// ShimDir is the runtime directory of a VM, where its shim serves: with
// it, FollowConsoles reads every VM's console in one loop.
func (b *Backend) ShimDir(id string) (string, error) { return b.existingDir(id) }

// Console streams the serial console (and QEMU's own messages) from the
// shim, or after the VM exited from its saved history.
func (b *Backend) Console(ctx context.Context, req *pluginv1.ConsoleRequest, fn func(*pluginv1.ConsoleLine) error) error {
	dir, err := b.existingDir(req.GetId())
	if err != nil {
		return err
	}
	return hypervisor.ShimConsole(ctx, dir, req, fn)
}
