package fleet

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// VM states as petreld reports them.
const (
	stateStarting     = "starting"
	stateRunning      = "running"
	stateExited       = "exited"
	stateRestarting   = "restarting"
	stateFailed       = "failed"
	stateLost         = "lost"
	stateUnsupervised = "unsupervised"
)

// Phase is where a pod's VM is, before Kubernetes terms are put on it.
type Phase struct {
	// Waiting is set while the VM is not there yet: the image is being
	// fetched or the create is under way.
	Waiting string
	// Refused is the reason the pod was refused, if it was.
	Refused string
}

func nsTime(ns int64) metav1.Time {
	if ns == 0 {
		return metav1.Time{}
	}
	return metav1.NewTime(time.Unix(0, ns))
}

// PodStatus is the status of a pod given its VM (nil while there is none
// yet) and what the agent knows of it. hostIP is the node's address.
func PodStatus(pod *corev1.Pod, vm *daemonv1.VM, ph Phase, hostIP string) corev1.PodStatus {
	st := corev1.PodStatus{HostIP: hostIP, StartTime: &pod.CreationTimestamp}
	if pod.Status.StartTime != nil {
		st.StartTime = pod.Status.StartTime
	}
	if hostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	}
	cname, image := "", ""
	if len(pod.Spec.Containers) > 0 {
		cname, image = pod.Spec.Containers[0].Name, pod.Spec.Containers[0].Image
	}
	cs := corev1.ContainerStatus{Name: cname, Image: image, ImageID: image}
	ready := false
	switch {
	case ph.Refused != "":
		st.Phase, st.Reason, st.Message = corev1.PodFailed, "Refused", ph.Refused
		cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 126, Reason: "Refused", Message: ph.Refused}
	case vm == nil:
		st.Phase = corev1.PodPending
		reason := ph.Waiting
		if reason == "" {
			reason = "ContainerCreating"
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
	default:
		cs.ContainerID = "petrel://" + vm.GetName()
		cs.ImageID = "sha256:" + vm.GetImageSha256()
		cs.RestartCount = int32(vm.GetRestarts())
		if vm.GetRestarts() > 0 && vm.GetHasExit() {
			cs.LastTerminationState.Terminated = terminated(vm)
		}
		switch vm.GetState() {
		case stateStarting:
			st.Phase = corev1.PodPending
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: vm.GetMessage()}
		case stateRunning:
			st.Phase = corev1.PodRunning
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: nsTime(vm.GetStartedAtNs())}
			ready = true
			started := true
			cs.Started = &started
		case stateRestarting:
			st.Phase = corev1.PodRunning
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: vm.GetMessage()}
			if vm.GetHasExit() {
				cs.LastTerminationState.Terminated = terminated(vm)
			}
		case stateExited:
			st.Phase = corev1.PodFailed
			if vm.GetHasExit() && vm.GetExitCode() == 0 && vm.GetExitSignal() == 0 {
				st.Phase = corev1.PodSucceeded
			}
			cs.State.Terminated = terminated(vm)
			cs.LastTerminationState = corev1.ContainerState{}
		case stateFailed, stateLost:
			st.Phase, st.Reason, st.Message = corev1.PodFailed, "VM"+titled(vm.GetState()), vm.GetMessage()
			cs.State.Terminated = terminated(vm)
			cs.LastTerminationState = corev1.ContainerState{}
		default:
			st.Phase, st.Reason, st.Message = corev1.PodUnknown, "VM"+titled(vm.GetState()), fmt.Sprintf("petreld reports the VM %s: %s", vm.GetState(), vm.GetMessage())
		}
	}
	cs.Ready = ready
	st.ContainerStatuses = []corev1.ContainerStatus{cs}
	st.Conditions = conditions(pod, st.Phase, ready)
	return st
}

func titled(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

// terminated is the container state of a VM's last exit.
func terminated(vm *daemonv1.VM) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{
		ExitCode:    vm.GetExitCode(),
		Signal:      vm.GetExitSignal(),
		Message:     vm.GetMessage(),
		StartedAt:   nsTime(vm.GetStartedAtNs()),
		FinishedAt:  nsTime(vm.GetExitedAtNs()),
		ContainerID: "petrel://" + vm.GetName(),
	}
	switch {
	case !vm.GetHasExit():
		t.Reason, t.ExitCode = "Lost", 137
	case vm.GetExitSignal() != 0:
		t.Reason, t.ExitCode = "Signaled", 128+vm.GetExitSignal()
	case vm.GetExitCode() == 0:
		t.Reason = "Completed"
	default:
		t.Reason = "Error"
	}
	return t
}

// conditions are the pod conditions for a phase.
func conditions(pod *corev1.Pod, phase corev1.PodPhase, ready bool) []corev1.PodCondition {
	now := metav1.Now()
	b := func(v bool) corev1.ConditionStatus {
		if v {
			return corev1.ConditionTrue
		}
		return corev1.ConditionFalse
	}
	return []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: pod.CreationTimestamp},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: pod.CreationTimestamp},
		{Type: corev1.ContainersReady, Status: b(ready), LastTransitionTime: now},
		{Type: corev1.PodReady, Status: b(ready && phase == corev1.PodRunning), LastTransitionTime: now},
	}
}
