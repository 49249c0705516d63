// Package vmrecord defines the record petreld keeps for each VM in its
// state store: the VM's configuration and enough runtime state to
// reattach to it after a restart. It is separate from the supervisor that
// writes the records so that tools reading a data directory (petrel state
// inspect) share the exact format without linking the supervisor.
package vmrecord

import (
	"time"
)

// VM states, as shown by `petrel info`.
const (
	// StateStarting: the record is written and the backend is starting the
	// VM. A daemon that finds a VM in this state at start-up starts it again.
	StateStarting = "starting"
	// StateRunning: the guest runs.
	StateRunning = "running"
	// StateExited: the guest exited and will not be restarted.
	StateExited = "exited"
	// StateRestarting: the guest exited and will be started again after a
	// back-off delay.
	StateRestarting = "restarting"
	// StateFailed: the VM could not be started (again); Message says why.
	StateFailed = "failed"
	// StateLost: the VM's shim vanished (it was killed, or the host lost
	// it) without recording how the guest ended, so the exit status is
	// unknown. The record then has no exit (HasExit is false): a script
	// must not take the unknown for success. A lost VM is not restarted,
	// whatever its restart policy, because nothing says it failed.
	StateLost = "lost"
	// StateUnsupervised: the VM was running when petreld last saw it, and
	// its backend is no longer enabled, so petreld can neither follow nor
	// stop it through the backend. The guest may still run: the VM keeps
	// its devices and its share of its policies, destroy kills it through
	// its shim, and once the backend is enabled again petreld reattaches
	// to it at its next start.
	StateUnsupervised = "unsupervised"
)

// States lists every VM state, for reports that count VMs by state and
// must show the empty ones too.
var States = []string{StateStarting, StateRunning, StateExited, StateRestarting, StateFailed, StateLost, StateUnsupervised}

// Down reports whether a VM in state runs no more and will not run again
// unless asked to: it holds no resources (taps, block devices, policy
// shares) and its last run is over.
func Down(state string) bool {
	return state == StateExited || state == StateFailed || state == StateLost
}

// Collection is the store collection holding VM records.
const Collection = "vms"

// RestartPolicy says when an exited VM is started again.
type RestartPolicy struct {
	OnFailure bool    `json:"on_failure,omitempty"`
	ExitCodes []int32 `json:"exit_codes,omitempty"`
}

// BlockParam attaches a block device to a VM.
type BlockParam struct {
	// Name is the device name in the image's manifest.
	Name string `json:"name"`
	// Device is the block device's full name (a path).
	Device string `json:"device"`
	// SectorSize in bytes; 0 for the backend's default.
	SectorSize uint32 `json:"sector_size,omitempty"`
}

// NetParam attaches a VM network device to a host bridge.
type NetParam struct {
	// Name is the device name in the image's manifest.
	Name string `json:"name"`
	// Bridge is the existing host bridge.
	Bridge string `json:"bridge"`
	// MAC is the guest's address (given, or derived from the VM and
	// device names).
	MAC string `json:"mac"`
	// HostIf is the tap on the host.
	HostIf string `json:"host_if,omitempty"`
}

// Record is a VM as persisted in the state store: its configuration, and
// enough runtime state to reattach after a daemon restart.
type Record struct {
	Name        string        `json:"name"`
	Backend     string        `json:"backend"`
	ImageSHA256 string        `json:"image_sha256"`
	ImageName   string        `json:"image_name,omitempty"`
	MemoryMB    uint32        `json:"memory_mb"`
	CPUs        []uint32      `json:"cpus,omitempty"`
	Args        []string      `json:"args,omitempty"`
	Restart     RestartPolicy `json:"restart"`
	Startup     int32         `json:"startup,omitempty"`
	Blocks      []BlockParam  `json:"blocks,omitempty"`
	Nets        []NetParam    `json:"nets,omitempty"`
	// InitrdSHA256 and KernelCmdline are for Linux guests.
	InitrdSHA256  string `json:"initrd_sha256,omitempty"`
	KernelCmdline string `json:"kernel_cmdline,omitempty"`
	// ImageRef is the OCI reference the image was pulled by, as given
	// (with its tag), and ImageDigest the manifest digest it named then;
	// both empty for an uploaded image. `petrel update` pulls ImageRef
	// again, and `petrel info --check-updates` compares its digest now.
	ImageRef    string `json:"image_ref,omitempty"`
	ImageDigest string `json:"image_digest,omitempty"`

	State string `json:"state"`
	// RunID names the current (or last) run at the backend; every start
	// gets a fresh one.
	RunID string `json:"run_id"`
	// Handle is the backend's opaque handle (protobuf bytes).
	Handle  []byte   `json:"handle,omitempty"`
	Pid     int64    `json:"pid,omitempty"`
	ShimPid int64    `json:"shim_pid,omitempty"`
	Argv    []string `json:"argv,omitempty"`
	// BootID is the host's boot id when the VM was started: a record from
	// an earlier boot describes a VM that no longer runs.
	BootID string `json:"boot_id,omitempty"`

	// HasExit says ExitCode and ExitSignal hold the last run's exit;
	// it is false before the first exit and after a lost one.
	HasExit    bool      `json:"has_exit,omitempty"`
	ExitCode   int32     `json:"exit_code,omitempty"`
	ExitSignal int32     `json:"exit_signal,omitempty"`
	Message    string    `json:"message,omitempty"`
	Restarts   uint32    `json:"restarts,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitempty"`
	ExitedAt   time.Time `json:"exited_at,omitempty"`
}

// Clone returns a deep copy, safe to hand to another goroutine.
func (r Record) Clone() Record {
	c := r
	c.CPUs = append([]uint32(nil), r.CPUs...)
	c.Args = append([]string(nil), r.Args...)
	c.Argv = append([]string(nil), r.Argv...)
	c.Handle = append([]byte(nil), r.Handle...)
	c.Restart.ExitCodes = append([]int32(nil), r.Restart.ExitCodes...)
	c.Blocks = append([]BlockParam(nil), r.Blocks...)
	c.Nets = append([]NetParam(nil), r.Nets...)
	return c
}
