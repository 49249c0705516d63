package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-vmm/petrel/sdk/shim"
)

// defaultPoll is how often the failure monitor asks QEMU for the guest's
// run state.
const defaultPoll = 500 * time.Millisecond

// FailureFile is the record the failure monitor writes in a VM directory
// before it kills QEMU, because the shim records only QEMU's exit status
// (SIGKILL) and not why.
const FailureFile = "qemu-failure.json"

// failedStates are QEMU run states in which the guest can never continue
// on its own, with what they mean. A guest paused by an operator through
// QMP ("paused") is not among them.
var failedStates = map[string]string{
	"internal-error": "KVM internal error",
	"guest-panicked": "guest kernel panicked",
	"io-error":       "disk I/O error",
}

// failureRecord is the content of FailureFile.
type failureRecord struct {
	// Status is QEMU's run state, e.g. "internal-error".
	Status string `json:"status"`
	// Reason is the message Wait reports.
	Reason string `json:"reason"`
	// At is when the monitor noticed.
	At time.Time `json:"at"`
}

// readFailure returns the failure recorded in dir, or nil.
func readFailure(dir string) *failureRecord {
	data, err := os.ReadFile(filepath.Join(dir, FailureFile))
	if err != nil {
		return nil
	}
	var r failureRecord
	if err := json.Unmarshal(data, &r); err != nil || r.Reason == "" {
		return nil
	}
	return &r
}

// monitor is the failure monitor of one VM. Its goroutine is owned by the
// Backend: it ends when the VM exits, when stop is called (Destroy, Close)
// or after it has handled a failure.
type monitor struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// stop ends the monitor and waits for its goroutine.
func (m *monitor) stop() {
	m.cancel()
	<-m.done
}

// watch starts the failure monitor of VM id unless one runs already.
func (b *Backend) watch(id, dir string) {
	b.monMu.Lock()
	defer b.monMu.Unlock()
	if _, ok := b.monitors[id]; ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &monitor{cancel: cancel, done: make(chan struct{})}
	b.monitors[id] = m
	go func() {
		defer close(m.done)
		defer b.forget(id, m)
		defer cancel()
		b.runMonitor(ctx, dir)
	}()
}

// unwatch stops the failure monitor of VM id, if any.
func (b *Backend) unwatch(id string) {
	b.monMu.Lock()
	m := b.monitors[id]
	b.monMu.Unlock()
	if m != nil {
		m.stop()
	}
}

// forget removes m from the monitors once its goroutine ends.
func (b *Backend) forget(id string, m *monitor) {
	b.monMu.Lock()
	defer b.monMu.Unlock()
	if b.monitors[id] == m {
		delete(b.monitors, id)
	}
}

// runMonitor polls the guest's run state until the VM exits or fails.
func (b *Backend) runMonitor(ctx context.Context, dir string) {
	t := time.NewTicker(b.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		failed, err := b.checkFailure(ctx, dir)
		if failed {
			return
		}
		if err != nil && vmGone(ctx, dir) {
			return
		}
	}
}

// vmGone reports whether QEMU has exited or its shim is lost.
func vmGone(ctx context.Context, dir string) bool {
	info, err := shim.Dial(dir).Info(ctx)
	if err != nil {
		return !shim.Alive(dir)
	}
	return info.Exited
}

// checkFailure asks QEMU for the guest's run state and, when the guest
// has failed, records why and kills QEMU. It reports whether it did.
func (b *Backend) checkFailure(ctx context.Context, dir string) (bool, error) {
	st, err := queryStatus(ctx, filepath.Join(dir, QMPSocket))
	if err != nil {
		return false, err
	}
	what, failed := failedStates[st.Status]
	if !failed {
		return false, nil
	}
	c := shim.Dial(dir)
	rec := failureRecord{Status: st.Status, Reason: b.describeFailure(ctx, c, st.Status, what), At: time.Now()}
	if err := writeJSON(dir, FailureFile, rec); err != nil {
		return false, err
	}
	if err := c.Kill(ctx, syscall.SIGKILL); err != nil && !errors.Is(err, shim.ErrExited) && !errors.Is(err, shim.ErrShimLost) {
		return true, fmt.Errorf("kill failed guest: %w", err)
	}
	return true, nil
}

// consoleStamp is the kernel's timestamp prefix on console lines.
var consoleStamp = regexp.MustCompile(`^\[\s*[0-9]+\.[0-9]+\]\s*`)

// describeFailure builds the reason of a failure from QEMU's state and the
// tail of the console, where QEMU and the guest explain themselves.
func (b *Backend) describeFailure(ctx context.Context, c *shim.Client, status, what string) string {
	var lines []string
	_ = c.Console(ctx, time.Time{}, 300, false, func(l shim.Line) error {
		lines = append(lines, consoleStamp.ReplaceAllString(l.Text, ""))
		return nil
	})
	var detail []string
	switch status {
	case "internal-error":
		for i, l := range lines {
			if strings.HasPrefix(l, "KVM internal error") {
				detail = []string{strings.TrimSuffix(l, ".")}
				for _, next := range lines[i+1:] {
					if next != "" && !strings.HasPrefix(next, "extra data") {
						detail = append(detail, next)
						break
					}
				}
			}
		}
	case "guest-panicked":
		for _, l := range lines {
			if strings.HasPrefix(l, "Kernel panic") {
				detail = []string{l}
				break
			}
		}
	}
	if len(detail) == 0 {
		detail = []string{what}
	}
	reason := "guest paused (QEMU state " + status + "): " + strings.Join(detail, ": ")
	if status == "internal-error" {
		b.mu.Lock()
		pvm := b.host.pvm
		b.mu.Unlock()
		if pvm {
			reason += "; this host's KVM is kvm_pvm, which cannot emulate every instruction: run the guest under TCG (setting " + SettingUnikernelAccel + " or " + SettingLinuxAccel + " = tcg)"
		} else {
			reason += "; KVM could not emulate an instruction of the guest"
		}
	}
	return reason
}

// writeJSON atomically replaces dir/name with v as JSON.
func writeJSON(dir, name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	path := filepath.Join(dir, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}
