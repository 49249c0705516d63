package fleet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// Config is what a Provider needs.
type Config struct {
	// Daemon is petreld, on its socket or through petrel-endpoint.
	Daemon daemonv1.DaemonClient
	// Images makes a pod's image available to petreld.
	Images ImageResolver
	// Domain is the name path the agent's VMs live under, relative to the
	// caller's domain: "" through petrel-endpoint (the certificate's
	// domain), a path such as "k8s" on the local socket.
	Domain string
	// Pods lists the pods Kubernetes has bound to this node; VMs of the
	// agent's form that no such pod derives are removed.
	Pods corev1listers.PodLister
	// PodsSynced reports whether Pods has its first full list; no VM is
	// removed as an orphan before.
	PodsSynced func() bool
	// Recorder receives the pod events that say why a pod is refused.
	Recorder record.EventRecorder
	// HostIP is the node's address, reported in pod status.
	HostIP string
	// Interval is how often VM states are read (default 1s).
	Interval time.Duration
	// OrphanGrace is how old an unclaimed VM of the agent's form must be
	// before it is removed (default 30s), so a create in flight is never
	// taken for an orphan.
	OrphanGrace time.Duration
}

// entry is a pod the provider runs.
type entry struct {
	pod   *corev1.Pod
	label string
	phase Phase
	vm    *daemonv1.VM
	// sent is the digest of the last status given to Kubernetes.
	sent string
}

// Provider runs pods as Petrel VMs. It implements virtual-kubelet's pod
// lifecycle handler, pod notifier and container logs.
type Provider struct {
	cfg Config

	mu     sync.Mutex
	pods   map[string]*entry
	notify func(*corev1.Pod)
}

// NewProvider returns a provider; Run keeps its pods' status current.
func NewProvider(cfg Config) (*Provider, error) {
	if cfg.Daemon == nil || cfg.Images == nil {
		return nil, errors.New("fleet: provider needs a daemon client and an image resolver")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.OrphanGrace <= 0 {
		cfg.OrphanGrace = 30 * time.Second
	}
	if cfg.PodsSynced == nil {
		cfg.PodsSynced = func() bool { return cfg.Pods != nil }
	}
	return &Provider{cfg: cfg, pods: map[string]*entry{}}, nil
}

func key(namespace, name string) string { return namespace + "/" + name }

// vmName is the VM's name for the daemon calls.
func (p *Provider) vmName(label string) string {
	if p.cfg.Domain == "" {
		return label
	}
	return p.cfg.Domain + ":" + label
}

// CreatePod makes the pod's VM, or adopts it when it exists already (the
// agent restarted, or a create's answer was lost). A pod that cannot run
// as a unikernel is failed with a "Refused" event saying why.
func (p *Provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	label := VMLabel(pod.Namespace, pod.Name, pod.UID)
	e := &entry{pod: pod.DeepCopy(), label: label, phase: Phase{Waiting: "ContainerCreating"}}
	p.mu.Lock()
	if old, ok := p.pods[key(pod.Namespace, pod.Name)]; ok && old.label == label {
		e = old
		e.pod = pod.DeepCopy()
	} else {
		p.pods[key(pod.Namespace, pod.Name)] = e
	}
	p.mu.Unlock()

	spec, err := Translate(pod)
	if err == nil {
		err = p.ensureVM(ctx, e, spec)
	}
	if IsRefusal(err) {
		var r *Refusal
		errors.As(err, &r)
		p.mu.Lock()
		e.phase = Phase{Refused: r.Reason}
		p.mu.Unlock()
		if p.cfg.Recorder != nil {
			p.cfg.Recorder.Event(pod, corev1.EventTypeWarning, "Refused", r.Reason)
		}
		p.push(e)
		return nil
	}
	if err != nil {
		return fmt.Errorf("create VM %s for pod %s/%s: %w", label, pod.Namespace, pod.Name, err)
	}
	p.push(e)
	return nil
}

// ensureVM creates the VM unless it exists.
func (p *Provider) ensureVM(ctx context.Context, e *entry, spec *Spec) error {
	name := p.vmName(e.label)
	if vm, err := p.info(ctx, name); err != nil {
		return err
	} else if vm != nil {
		p.mu.Lock()
		e.vm, e.phase = vm, Phase{}
		p.mu.Unlock()
		return nil
	}
	p.mu.Lock()
	e.phase = Phase{Waiting: "Pulling"}
	p.mu.Unlock()
	p.push(e)
	req := spec.Request
	req.Name = name
	req.ImageName = OwnerMark(e.pod) + " " + spec.Image
	if err := p.cfg.Images.Resolve(ctx, spec.Image, req); err != nil {
		return fmt.Errorf("image %s: %w", spec.Image, err)
	}
	// Still Pulling: petreld pulls a registry reference during the create.
	vm, err := p.cfg.Daemon.Create(ctx, req)
	switch status.Code(err) {
	case codes.OK:
	case codes.AlreadyExists:
		if vm, err = p.info(ctx, name); err != nil {
			return err
		}
	case codes.InvalidArgument, codes.FailedPrecondition, codes.ResourceExhausted, codes.PermissionDenied:
		return &Refusal{Reason: "petreld: " + status.Convert(err).Message()}
	default:
		return err
	}
	p.mu.Lock()
	e.vm, e.phase = vm, Phase{}
	p.mu.Unlock()
	return nil
}

// info is the named VM, or nil when there is none.
func (p *Provider) info(ctx context.Context, name string) (*daemonv1.VM, error) {
	resp, err := p.cfg.Daemon.Info(ctx, &daemonv1.InfoRequest{Name: name})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("info %s: %w", name, err)
	}
	for _, vm := range resp.GetVms() {
		if LastLabel(vm.GetName()) == LastLabel(name) {
			return vm, nil
		}
	}
	return nil, nil
}

// UpdatePod takes what may change in a running pod (labels, annotations)
// without touching the VM: a VM's configuration is fixed.
func (p *Provider) UpdatePod(_ context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.pods[key(pod.Namespace, pod.Name)]; ok {
		e.pod = pod.DeepCopy()
	}
	return nil
}

// DeletePod destroys the pod's VM and reports the pod terminated.
func (p *Provider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	label := VMLabel(pod.Namespace, pod.Name, pod.UID)
	if _, err := p.cfg.Daemon.Destroy(ctx, &daemonv1.DestroyRequest{Name: p.vmName(label)}); err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("destroy VM %s of pod %s/%s: %w", label, pod.Namespace, pod.Name, err)
	}
	p.mu.Lock()
	e, ok := p.pods[key(pod.Namespace, pod.Name)]
	if ok && e.label == label {
		delete(p.pods, key(pod.Namespace, pod.Name))
	}
	notify := p.notify
	p.mu.Unlock()
	final := pod.DeepCopy()
	if ok {
		final.Status = p.statusOf(e)
	}
	terminate(final)
	if notify != nil {
		notify(final)
	}
	return nil
}

// terminate makes a pod's status terminal, as virtual-kubelet wants after
// a delete.
func terminate(pod *corev1.Pod) {
	if pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
		pod.Status.Phase = corev1.PodSucceeded
		pod.Status.Reason = "Deleted"
	}
	for i := range pod.Status.ContainerStatuses {
		cs := &pod.Status.ContainerStatuses[i]
		if cs.State.Terminated == nil {
			cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Deleted", ContainerID: cs.ContainerID}}
		}
		cs.Ready = false
	}
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodReady || pod.Status.Conditions[i].Type == corev1.ContainersReady {
			pod.Status.Conditions[i].Status = corev1.ConditionFalse
		}
	}
}

// GetPod is the pod as the provider runs it, with current status.
func (p *Provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.pods[key(namespace, name)]
	if !ok {
		return nil, nil
	}
	pod := e.pod.DeepCopy()
	pod.Status = p.statusOf(e)
	return pod, nil
}

// GetPodStatus is the pod's current status.
func (p *Provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil || pod == nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods lists the pods the provider runs.
func (p *Provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(p.pods))
	for _, e := range p.pods {
		pod := e.pod.DeepCopy()
		pod.Status = p.statusOf(e)
		out = append(out, pod)
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i].Namespace, out[i].Name) < key(out[j].Namespace, out[j].Name) })
	return out, nil
}

// NotifyPods registers the callback that receives status changes.
func (p *Provider) NotifyPods(_ context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
}

// statusOf computes an entry's status; p.mu is held.
func (p *Provider) statusOf(e *entry) corev1.PodStatus {
	return PodStatus(e.pod, e.vm, e.phase, p.cfg.HostIP)
}

// digest is what of a status is worth telling Kubernetes about.
func digest(st corev1.PodStatus) string {
	d := string(st.Phase) + "|" + st.Reason
	for _, cs := range st.ContainerStatuses {
		d += fmt.Sprintf("|%d|%v|%v|%v", cs.RestartCount, cs.State.Waiting != nil, cs.State.Running != nil, cs.State.Terminated != nil)
		if w := cs.State.Waiting; w != nil {
			d += w.Reason
		}
		if t := cs.State.Terminated; t != nil {
			d += fmt.Sprintf("%d%s", t.ExitCode, t.Reason)
		}
	}
	return d
}

// push tells Kubernetes the entry's status when it changed.
func (p *Provider) push(e *entry) {
	p.mu.Lock()
	st := p.statusOf(e)
	d := digest(st)
	notify := p.notify
	if d == e.sent || notify == nil {
		p.mu.Unlock()
		return
	}
	e.sent = d
	pod := e.pod.DeepCopy()
	pod.Status = st
	p.mu.Unlock()
	notify(pod)
}

// Run reads VM states every Interval, tells Kubernetes what changed and
// removes the agent's VMs that no pod on this node derives, until ctx
// ends.
func (p *Provider) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		// A failed round is retried on the next tick; the node's
		// conditions report an unreachable petreld.
		_ = p.Sync(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sync does one round of Run.
func (p *Provider) Sync(ctx context.Context) error {
	name := p.cfg.Domain
	resp, err := p.cfg.Daemon.Info(ctx, &daemonv1.InfoRequest{Name: name})
	if err != nil {
		return fmt.Errorf("list VMs: %w", err)
	}
	byLabel := map[string]*daemonv1.VM{}
	for _, vm := range resp.GetVms() {
		if l := LastLabel(vm.GetName()); IsManaged(l) && ownedBy(vm, l) {
			byLabel[l] = vm
		}
	}
	p.mu.Lock()
	var changed []*entry
	claimed := map[string]bool{}
	for _, e := range p.pods {
		claimed[e.label] = true
		if vm, ok := byLabel[e.label]; ok {
			e.vm, e.phase = vm, Phase{}
		} else if e.vm != nil {
			// Gone from petreld (destroyed outside the agent): the pod's
			// container is lost.
			e.vm = lostVM(e.vm)
		}
		changed = append(changed, e)
	}
	p.mu.Unlock()
	for _, e := range changed {
		p.push(e)
	}
	return p.removeOrphans(ctx, byLabel, claimed)
}

// lostVM marks a VM that disappeared.
func lostVM(vm *daemonv1.VM) *daemonv1.VM {
	if vm.GetState() == stateLost {
		return vm
	}
	c := &daemonv1.VM{Name: vm.GetName(), State: stateLost, ImageSha256: vm.GetImageSha256(), Restarts: vm.GetRestarts(), StartedAtNs: vm.GetStartedAtNs(), Message: "the VM was removed outside Kubernetes"}
	return c
}

// removeOrphans destroys the agent's VMs that no pod bound to this node
// derives: their pod was deleted while the agent was away.
func (p *Provider) removeOrphans(ctx context.Context, vms map[string]*daemonv1.VM, claimed map[string]bool) error {
	if p.cfg.Pods == nil || !p.cfg.PodsSynced() {
		return nil
	}
	pods, err := p.cfg.Pods.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	for _, pod := range pods {
		claimed[VMLabel(pod.Namespace, pod.Name, pod.UID)] = true
	}
	var errs []error
	for l, vm := range vms {
		if claimed[l] || time.Since(time.Unix(0, vm.GetCreatedAtNs())) < p.cfg.OrphanGrace {
			continue
		}
		if _, err := p.cfg.Daemon.Destroy(ctx, &daemonv1.DestroyRequest{Name: p.vmName(l)}); err != nil && status.Code(err) != codes.NotFound {
			errs = append(errs, fmt.Errorf("destroy orphan %s: %w", l, err))
		}
	}
	return errors.Join(errs...)
}

// GetContainerLogs is the VM's console: history (tail, since) and, with
// follow, live lines until the reader is closed or the VM goes away.
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, podName, _ string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	p.mu.Lock()
	e, ok := p.pods[key(namespace, podName)]
	p.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("pod %s/%s does not run here", namespace, podName)
	}
	req := &daemonv1.ConsoleRequest{Name: p.vmName(e.label), Follow: opts.Follow, Count: int32(opts.Tail)}
	if opts.Tail <= 0 || opts.Tail > consoleKept {
		req.Count = consoleKept
	}
	switch {
	case !opts.SinceTime.IsZero():
		req.SinceNs = opts.SinceTime.UnixNano()
	case opts.SinceSeconds > 0:
		req.SinceNs = time.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second).UnixNano()
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stream, err := p.cfg.Daemon.Console(ctx, req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("console of %s: %w", req.Name, err)
	}
	pr, pw := io.Pipe()
	go func() {
		// Owned by the returned reader: closing it cancels the stream,
		// which ends this loop.
		w := bufio.NewWriter(pw)
		var err error
		for {
			var l *daemonv1.ConsoleLine
			if l, err = stream.Recv(); err != nil {
				break
			}
			if l.GetDropped() > 0 {
				continue
			}
			if opts.Timestamps {
				_, _ = w.WriteString(time.Unix(0, l.GetTimeNs()).UTC().Format(time.RFC3339Nano) + " ")
			}
			_, _ = w.WriteString(l.GetText() + "\n")
			if err = w.Flush(); err != nil {
				break
			}
		}
		if err == io.EOF || status.Code(err) == codes.Canceled {
			err = nil
		}
		_ = w.Flush()
		pw.CloseWithError(err)
	}()
	return &logReader{PipeReader: pr, cancel: cancel}, nil
}

// consoleKept is how many console lines petreld keeps per VM: all of a
// pod's log.
const consoleKept = 1000

// logReader ends its console stream when closed.
type logReader struct {
	*io.PipeReader
	cancel context.CancelFunc
}

// Close stops the console stream.
func (r *logReader) Close() error {
	r.cancel()
	return r.PipeReader.Close()
}

// RunInContainer is refused: a unikernel runs no other programs.
func (p *Provider) RunInContainer(context.Context, string, string, string, []string, api.AttachIO) error {
	return errors.New("exec: a unikernel runs no other programs")
}

// AttachToContainer is refused: the console is output only (kubectl logs).
func (p *Provider) AttachToContainer(context.Context, string, string, string, api.AttachIO) error {
	return errors.New("attach: a unikernel's console is output only; use kubectl logs -f")
}

// PortForward is refused: VMs reach the network through host bridges.
func (p *Provider) PortForward(context.Context, string, string, int32, io.ReadWriteCloser) error {
	return errors.New("port-forward: a VM is reached through its bridge, not through the node agent")
}
