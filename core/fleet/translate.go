package fleet

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// Annotations a pod sets to choose what its VM gets beyond what the pod
// spec says.
const (
	// AnnotationBackend names the Petrel backend plugin ("hvt", "spt",
	// "qemu"); without it the host's default backend runs the VM.
	AnnotationBackend = "petrel-vmm.io/backend"
	// AnnotationNetworks attaches the unikernel's network devices to host
	// bridges: "DEVICE=BRIDGE[,DEVICE=BRIDGE…]" ("service=br0").
	AnnotationNetworks = "petrel-vmm.io/networks"
	// AnnotationBlocks attaches Petrel block devices of the agent's
	// domain: "DEVICE[=BLOCK][:SECTOR][,…]" ("storage=data:4096").
	AnnotationBlocks = "petrel-vmm.io/blocks"
)

// TaintKey is the key of the taint petrel-kubelet puts on its node: only
// pods that tolerate it (and so know they become unikernels) are placed
// there.
const TaintKey = "petrel-vmm.io/unikernel"

// Refusal says why a pod cannot run as a Petrel VM. It is permanent: the
// pod is failed with the reason, never retried.
type Refusal struct {
	// Reason is a sentence for the pod event and status message.
	Reason string
}

func (r *Refusal) Error() string { return "refused: " + r.Reason }

func refuse(format string, a ...any) error { return &Refusal{Reason: fmt.Sprintf(format, a...)} }

// IsRefusal reports whether err is (or wraps) a Refusal.
func IsRefusal(err error) bool {
	var r *Refusal
	return errors.As(err, &r)
}

// Spec is what a pod becomes: the image it names and the create request
// for its VM (without the image digest, which the image resolver gives).
type Spec struct {
	// Image is the container's image reference.
	Image string
	// Request is the VM to create, named by the caller.
	Request *daemonv1.CreateRequest
}

// mib is a mebibyte in bytes.
const mib = 1 << 20

// onFailureCodes are the exit codes that restartPolicy OnFailure restarts
// on: every failing code that Petrel's restart rules allow (they never
// restart after exit 1 or 60–64).
func onFailureCodes() []int32 {
	var codes []int32
	for c := int32(2); c <= 255; c++ {
		if c >= 60 && c <= 64 {
			continue
		}
		codes = append(codes, c)
	}
	return codes
}

// Translate turns a pod into the VM that runs it, or refuses it with the
// reason. It reads only the pod and never fails on bad input otherwise.
func Translate(pod *corev1.Pod) (*Spec, error) {
	if pod == nil {
		return nil, refuse("no pod")
	}
	s := &pod.Spec
	if len(s.Containers) != 1 {
		return nil, refuse("a pod runs as one unikernel: it needs exactly one container, it has %d", len(s.Containers))
	}
	if len(s.InitContainers) > 0 {
		return nil, refuse("init containers cannot run before a unikernel")
	}
	if len(s.EphemeralContainers) > 0 {
		return nil, refuse("ephemeral containers cannot attach to a unikernel")
	}
	if s.HostNetwork || s.HostPID || s.HostIPC {
		return nil, refuse("a unikernel cannot share the host's network, PID or IPC namespace")
	}
	c := &s.Containers[0]
	if c.Image == "" {
		return nil, refuse("container %q names no image", c.Name)
	}
	if len(c.Command) > 0 {
		return nil, refuse("container %q sets command: a unikernel has no entry point to replace; pass its arguments as args", c.Name)
	}
	if len(c.Env) > 0 || len(c.EnvFrom) > 0 {
		return nil, refuse("container %q sets environment variables: a unikernel has no environment; pass them as args", c.Name)
	}
	if c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil {
		return nil, refuse("container %q has probes: Petrel cannot run them inside a unikernel", c.Name)
	}
	if c.Lifecycle != nil {
		return nil, refuse("container %q has lifecycle hooks: a unikernel cannot run them", c.Name)
	}
	if c.Stdin || c.TTY {
		return nil, refuse("container %q asks for stdin or a TTY: a unikernel's console is output only", c.Name)
	}
	if c.WorkingDir != "" {
		return nil, refuse("container %q sets workingDir: a unikernel has no file system to start in", c.Name)
	}
	if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
		return nil, refuse("container %q asks to be privileged: a VM has no host privileges to give", c.Name)
	}
	if err := checkVolumes(pod, c); err != nil {
		return nil, err
	}
	mem, err := memoryMB(c)
	if err != nil {
		return nil, err
	}
	req := &daemonv1.CreateRequest{
		MemoryMb:  mem,
		Args:      append([]string(nil), c.Args...),
		ImageName: c.Image,
		Backend:   pod.Annotations[AnnotationBackend],
	}
	switch s.RestartPolicy {
	case corev1.RestartPolicyAlways, "":
		req.Restart = &daemonv1.RestartPolicy{OnFailure: true}
	case corev1.RestartPolicyOnFailure:
		req.Restart = &daemonv1.RestartPolicy{OnFailure: true, ExitCodes: onFailureCodes()}
	case corev1.RestartPolicyNever:
	default:
		return nil, refuse("restartPolicy %q is not one Kubernetes defines", s.RestartPolicy)
	}
	if req.Nets, err = parseNetworks(pod.Annotations[AnnotationNetworks]); err != nil {
		return nil, err
	}
	if req.Blocks, err = parseBlocks(pod.Annotations[AnnotationBlocks]); err != nil {
		return nil, err
	}
	return &Spec{Image: c.Image, Request: req}, nil
}

// checkVolumes refuses volume mounts, except the service account token
// Kubernetes mounts into every pod, which a unikernel simply does not get.
// Block devices come from AnnotationBlocks.
func checkVolumes(pod *corev1.Pod, c *corev1.Container) error {
	if len(c.VolumeDevices) > 0 {
		return refuse("container %q uses volumeDevices: attach Petrel block devices with the %s annotation", c.Name, AnnotationBlocks)
	}
	token := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if isServiceAccountToken(v) {
			token[v.Name] = true
		}
	}
	for _, m := range c.VolumeMounts {
		if !token[m.Name] {
			return refuse("container %q mounts volume %q: a unikernel has no file system; attach Petrel block devices with the %s annotation", c.Name, m.Name, AnnotationBlocks)
		}
	}
	return nil
}

// isServiceAccountToken reports whether v is the projected volume the
// service account admission adds (token, CA bundle, namespace).
func isServiceAccountToken(v corev1.Volume) bool {
	if v.Projected == nil {
		return false
	}
	for _, src := range v.Projected.Sources {
		if src.ServiceAccountToken != nil {
			return true
		}
	}
	return false
}

// memoryMB is the VM's memory: limits.memory (or requests.memory when no
// limit is set) in MiB, rounded up. CPU up to one is accepted (a Solo5
// unikernel runs on one CPU); any other resource is refused.
func memoryMB(c *corev1.Container) (uint32, error) {
	for _, list := range []corev1.ResourceList{c.Resources.Limits, c.Resources.Requests} {
		names := make([]string, 0, len(list))
		for n := range list {
			names = append(names, string(n))
		}
		sort.Strings(names)
		for _, n := range names {
			q := list[corev1.ResourceName(n)]
			switch corev1.ResourceName(n) {
			case corev1.ResourceMemory:
			case corev1.ResourceCPU:
				if q.Cmp(resource.MustParse("1")) > 0 {
					return 0, refuse("container %q asks for %s CPUs: a unikernel runs on one", c.Name, q.String())
				}
			default:
				return 0, refuse("container %q asks for resource %q, which Petrel does not provide", c.Name, n)
			}
		}
	}
	q, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		q, ok = c.Resources.Requests[corev1.ResourceMemory]
	}
	if !ok {
		return 0, refuse("container %q sets no memory limit: a VM's memory is fixed, set resources.limits.memory", c.Name)
	}
	b := q.Value()
	if b <= 0 {
		return 0, refuse("container %q asks for no memory", c.Name)
	}
	mb := (b + mib - 1) / mib
	if mb > 1<<31 {
		return 0, refuse("container %q asks for %s of memory, more than a VM can have", c.Name, q.String())
	}
	return uint32(mb), nil
}

// parseNetworks reads AnnotationNetworks.
func parseNetworks(s string) ([]*daemonv1.NetAttachment, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var nets []*daemonv1.NetAttachment
	for _, item := range strings.Split(s, ",") {
		dev, bridge, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || dev == "" || bridge == "" {
			return nil, refuse("annotation %s: %q is not DEVICE=BRIDGE", AnnotationNetworks, item)
		}
		nets = append(nets, &daemonv1.NetAttachment{Name: dev, Bridge: bridge})
	}
	return nets, nil
}

// parseBlocks reads AnnotationBlocks.
func parseBlocks(s string) ([]*daemonv1.BlockAttachment, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var blocks []*daemonv1.BlockAttachment
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		spec, sector, hasSector := strings.Cut(item, ":")
		dev, block, _ := strings.Cut(spec, "=")
		if dev == "" {
			return nil, refuse("annotation %s: %q is not DEVICE[=BLOCK][:SECTOR]", AnnotationBlocks, item)
		}
		a := &daemonv1.BlockAttachment{Name: dev, Device: block}
		if hasSector {
			n, err := strconv.ParseUint(sector, 10, 32)
			if err != nil || n < 512 || n&(n-1) != 0 {
				return nil, refuse("annotation %s: sector size %q of %q is not a power of two of at least 512", AnnotationBlocks, sector, dev)
			}
			a.SectorSize = uint32(n)
		}
		blocks = append(blocks, a)
	}
	return blocks, nil
}
