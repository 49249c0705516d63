package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	corev1 "k8s.io/api/core/v1"

	"k8s.io/apimachinery/pkg/types"
)

// LabelPrefix starts the name label of every VM the agent makes. Together
// with the hash suffix it tells the agent's VMs from others in the same
// domain, which it never touches.
const LabelPrefix = "k8s-"

// hashLen is the number of hex digits of the pod identity hash at the end
// of a VM label.
const hashLen = 12

// maxLabel is the longest name label Petrel accepts.
const maxLabel = 63

// VMLabel is the name label of the VM that runs a pod: LabelPrefix, a
// readable part from the namespace and pod name, and a hash of namespace,
// name and UID. It is the same on every call, so a restarted agent finds
// the VM it made, and a new pod of the same name (another UID) gets
// another VM.
func VMLabel(namespace, name string, uid types.UID) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name + "/" + string(uid)))
	h := hex.EncodeToString(sum[:])[:hashLen]
	readable := sanitize(namespace + "." + name)
	if room := maxLabel - len(LabelPrefix) - 1 - hashLen; len(readable) > room {
		readable = readable[:room]
	}
	readable = strings.Trim(readable, ".-")
	if readable == "" {
		readable = "pod"
	}
	return LabelPrefix + readable + "-" + h
}

// sanitize keeps the characters Petrel labels allow, lower-cased, and
// turns others into '-'.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return b.String()
}

// IsManaged reports whether a VM name label has the form VMLabel makes,
// that is whether the VM may be one of the agent's.
func IsManaged(label string) bool {
	if !strings.HasPrefix(label, LabelPrefix) || len(label) < len(LabelPrefix)+2+hashLen {
		return false
	}
	tail := label[len(label)-hashLen-1:]
	if tail[0] != '-' {
		return false
	}
	_, err := hex.DecodeString(tail[1:])
	return err == nil && strings.ToLower(tail) == tail
}

// LastLabel is the last label of a Petrel name path ("a:b:vm" → "vm").
func LastLabel(path string) string {
	if i := strings.LastIndexByte(path, ':'); i >= 0 {
		return path[i+1:]
	}
	return path
}

// markPrefix starts the owner mark in a VM's image name.
const markPrefix = "pod:"

// OwnerMark is what the agent writes at the start of the image name of
// every VM it makes (petreld keeps it for display): the pod's namespace,
// name and UID. Only a VM whose mark derives its own name is the agent's,
// so a VM made by hand is never taken for one, whatever its name.
func OwnerMark(pod *corev1.Pod) string {
	return markPrefix + pod.Namespace + "/" + pod.Name + "/" + string(pod.UID)
}

// ownedBy reports whether vm, named label, carries the owner mark of the
// pod its label derives from.
func ownedBy(vm *daemonv1.VM, label string) bool {
	mark, _, _ := strings.Cut(vm.GetImageName(), " ")
	rest, ok := strings.CutPrefix(mark, markPrefix)
	if !ok {
		return false
	}
	parts := strings.SplitN(rest, "/", 3)
	return len(parts) == 3 && VMLabel(parts[0], parts[1], types.UID(parts[2])) == label
}
