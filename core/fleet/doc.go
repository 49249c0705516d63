// Package fleet runs Kubernetes pods as Petrel VMs: it is the provider
// behind petrel-kubelet, the node agent that makes a Petrel host a
// Kubernetes node (built on virtual-kubelet).
//
// A pod that tolerates the node's taint and whose single container names
// a unikernel image becomes one VM: limits.memory is its memory, args its
// arguments, restartPolicy its restart-on-failure rules, and the
// annotations below choose the backend, bridges and block devices.
// Anything else a pod asks for that a unikernel cannot honour is refused
// with a pod event saying why, and the pod fails as a kubelet fails a pod
// it cannot admit.
//
// VM names are derived from the pod's namespace, name and UID (VMLabel),
// so an agent that restarts finds its VMs again and never makes a second
// one; its image name carries the pod it runs (OwnerMark), and a VM
// whose name and mark it did not derive is never touched. What a
// node may use is what the host's owner delegated to the cluster: the
// policy of the agent's domain, which petreld enforces on every create.
package fleet
