package supervisor

import "github.com/petrel-vmm/petrel/core/vmrecord"

// The record format lives in core/vmrecord; these names keep the
// supervisor's code in its own terms.
type (
	// Record is a VM as persisted in the state store.
	Record = vmrecord.Record
	// RestartPolicy says when an exited VM is started again.
	RestartPolicy = vmrecord.RestartPolicy
	// BlockParam attaches a block device to a VM.
	BlockParam = vmrecord.BlockParam
	// NetParam attaches a VM network device to a host bridge.
	NetParam = vmrecord.NetParam
)

// VM states and the records' collection, as in core/vmrecord.
const (
	StateStarting     = vmrecord.StateStarting
	StateRunning      = vmrecord.StateRunning
	StateExited       = vmrecord.StateExited
	StateRestarting   = vmrecord.StateRestarting
	StateFailed       = vmrecord.StateFailed
	StateLost         = vmrecord.StateLost
	StateUnsupervised = vmrecord.StateUnsupervised
	RecordsCollection = vmrecord.Collection
)

// ShouldRestart applies the restart-on-failure rules (as Albatross): never
// after a signal, never after exit 1 (Solo5's failure to start) or 60–64
// (argument and configuration errors, which a restart cannot fix); then
// on any exit code, or only on the listed ones.
func ShouldRestart(p RestartPolicy, code, signal int32, lost bool) bool {
	if !p.OnFailure || lost || signal != 0 {
		return false
	}
	if code == 1 || (code >= 60 && code <= 64) {
		return false
	}
	if len(p.ExitCodes) == 0 {
		return true
	}
	for _, c := range p.ExitCodes {
		if c == code {
			return true
		}
	}
	return false
}
