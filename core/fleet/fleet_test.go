package fleet

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

func testPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: "uid-" + "1234",
			Annotations: map[string]string{AnnotationBackend: "spt"}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyAlways,
			Containers: []corev1.Container{{
				Name: "app", Image: "local/hello:spt", Args: []string{"--x=1"},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}},
			}},
		},
	}
}

func TestVMLabel(t *testing.T) {
	a := VMLabel("default", "web-1", "u1")
	if a != VMLabel("default", "web-1", "u1") {
		t.Fatal("label not deterministic")
	}
	if a == VMLabel("default", "web-1", "u2") || a == VMLabel("other", "web-1", "u1") {
		t.Fatal("labels of different pods collide")
	}
	if !IsManaged(a) || !strings.HasPrefix(a, "k8s-default.web-1-") {
		t.Fatalf("label %q", a)
	}
	long := VMLabel(strings.Repeat("n", 63), strings.Repeat("p.", 120), "u")
	if len(long) > 63 || !IsManaged(long) {
		t.Fatalf("long label %q (%d)", long, len(long))
	}
	for _, l := range []string{"web", "k8s-web", "k8s-web-0123456789ab0", "k8s-web-0123456789AB", "k8s-web_0123456789ab", ""} {
		if IsManaged(l) {
			t.Errorf("IsManaged(%q) = true", l)
		}
	}
	if LastLabel("a:b:c") != "c" || LastLabel("c") != "c" {
		t.Fatal("LastLabel")
	}
}

func TestTranslate(t *testing.T) {
	pod := testPod("web")
	pod.Annotations[AnnotationNetworks] = "service=br0, admin=br1"
	pod.Annotations[AnnotationBlocks] = "storage=data:4096,log"
	spec, err := Translate(pod)
	if err != nil {
		t.Fatal(err)
	}
	r := spec.Request
	if spec.Image != "local/hello:spt" || r.MemoryMb != 32 || r.Backend != "spt" || len(r.Args) != 1 || !r.Restart.GetOnFailure() || len(r.Restart.GetExitCodes()) != 0 {
		t.Fatalf("request %v", r)
	}
	if len(r.Nets) != 2 || r.Nets[1].Name != "admin" || r.Nets[1].Bridge != "br1" {
		t.Fatalf("nets %v", r.Nets)
	}
	if len(r.Blocks) != 2 || r.Blocks[0].Device != "data" || r.Blocks[0].SectorSize != 4096 || r.Blocks[1].Name != "log" {
		t.Fatalf("blocks %v", r.Blocks)
	}
	pod.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	spec, _ = Translate(pod)
	codes := spec.Request.Restart.GetExitCodes()
	for _, c := range codes {
		if c == 0 || c == 1 || (c >= 60 && c <= 64) {
			t.Fatalf("OnFailure restarts on %d", c)
		}
	}
	if len(codes) != 254-5 {
		t.Fatalf("%d OnFailure codes", len(codes))
	}
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	if spec, _ = Translate(pod); spec.Request.Restart != nil {
		t.Fatal("Never restarts")
	}
	// Limits win over requests, which serve when there is no limit; MiB round up.
	pod = testPod("web")
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("10M"), corev1.ResourceCPU: resource.MustParse("500m")}}
	if spec, err = Translate(pod); err != nil || spec.Request.MemoryMb != 10 {
		t.Fatalf("requests: %v %v", spec, err)
	}
	// The service account token volume is tolerated.
	pod.Spec.Volumes = []corev1.Volume{{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "kube-api-access-x", MountPath: "/var/run/secrets"}}
	if _, err := Translate(pod); err != nil {
		t.Fatal(err)
	}
}

func TestTranslateRefusals(t *testing.T) {
	cases := map[string]struct {
		mod  func(*corev1.Pod)
		want string
	}{
		"two containers": {func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, p.Spec.Containers[0]) }, "exactly one container"},
		"no containers":  {func(p *corev1.Pod) { p.Spec.Containers = nil }, "exactly one container"},
		"init":           {func(p *corev1.Pod) { p.Spec.InitContainers = p.Spec.Containers }, "init containers"},
		"command":        {func(p *corev1.Pod) { p.Spec.Containers[0].Command = []string{"/bin/sh"} }, "command"},
		"env":            {func(p *corev1.Pod) { p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A"}} }, "environment"},
		"probe":          {func(p *corev1.Pod) { p.Spec.Containers[0].LivenessProbe = &corev1.Probe{} }, "probes"},
		"no memory":      {func(p *corev1.Pod) { p.Spec.Containers[0].Resources = corev1.ResourceRequirements{} }, "limits.memory"},
		"two cpus": {func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("2")
		}, "CPUs"},
		"gpu":            {func(p *corev1.Pod) { p.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"] = resource.MustParse("1") }, "nvidia.com/gpu"},
		"volume":         {func(p *corev1.Pod) { p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data"}} }, "mounts volume"},
		"host network":   {func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "host's network"},
		"tty":            {func(p *corev1.Pod) { p.Spec.Containers[0].TTY = true }, "TTY"},
		"bad network":    {func(p *corev1.Pod) { p.Annotations[AnnotationNetworks] = "service" }, "DEVICE=BRIDGE"},
		"bad block":      {func(p *corev1.Pod) { p.Annotations[AnnotationBlocks] = "disk:300" }, "sector size"},
		"empty block":    {func(p *corev1.Pod) { p.Annotations[AnnotationBlocks] = "=x" }, "DEVICE"},
		"restart policy": {func(p *corev1.Pod) { p.Spec.RestartPolicy = "Sometimes" }, "restartPolicy"},
		"no image":       {func(p *corev1.Pod) { p.Spec.Containers[0].Image = "" }, "no image"},
		"privileged": {func(p *corev1.Pod) {
			v := true
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &v}
		}, "privileged"},
		"zero memory": {func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory] = resource.MustParse("0")
		}, "no memory"},
		"working dir":     {func(p *corev1.Pod) { p.Spec.Containers[0].WorkingDir = "/app" }, "workingDir"},
		"lifecycle hooks": {func(p *corev1.Pod) { p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{} }, "lifecycle"},
	}
	for name, c := range cases {
		pod := testPod("web")
		c.mod(pod)
		_, err := Translate(pod)
		if !IsRefusal(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a refusal mentioning %q", name, err, c.want)
		}
	}
	if _, err := Translate(nil); !IsRefusal(err) {
		t.Error("nil pod not refused")
	}
}

func TestPodStatus(t *testing.T) {
	pod := testPod("web")
	vm := func(state string, mod func(*daemonv1.VM)) *daemonv1.VM {
		v := &daemonv1.VM{Name: "k8s:x", State: state, StartedAtNs: time.Now().UnixNano()}
		if mod != nil {
			mod(v)
		}
		return v
	}
	cases := []struct {
		name   string
		vm     *daemonv1.VM
		ph     Phase
		phase  corev1.PodPhase
		check  func(corev1.ContainerStatus) bool
		reason string
	}{
		{"pulling", nil, Phase{Waiting: "Pulling"}, corev1.PodPending, func(c corev1.ContainerStatus) bool { return c.State.Waiting.Reason == "Pulling" }, ""},
		{"refused", nil, Phase{Refused: "no"}, corev1.PodFailed, func(c corev1.ContainerStatus) bool { return c.State.Terminated != nil }, "Refused"},
		{"starting", vm("starting", nil), Phase{}, corev1.PodPending, func(c corev1.ContainerStatus) bool { return c.State.Waiting != nil }, ""},
		{"running", vm("running", func(v *daemonv1.VM) { v.Restarts = 2; v.HasExit = true; v.ExitCode = 3 }), Phase{}, corev1.PodRunning,
			func(c corev1.ContainerStatus) bool {
				return c.State.Running != nil && c.RestartCount == 2 && c.LastTerminationState.Terminated.ExitCode == 3
			}, ""},
		{"restarting", vm("restarting", func(v *daemonv1.VM) { v.Restarts = 1; v.HasExit = true; v.ExitCode = 7 }), Phase{}, corev1.PodRunning,
			func(c corev1.ContainerStatus) bool { return c.State.Waiting.Reason == "CrashLoopBackOff" }, ""},
		{"succeeded", vm("exited", func(v *daemonv1.VM) { v.HasExit = true }), Phase{}, corev1.PodSucceeded,
			func(c corev1.ContainerStatus) bool { return c.State.Terminated.ExitCode == 0 }, ""},
		{"failed", vm("exited", func(v *daemonv1.VM) { v.HasExit = true; v.ExitCode = 5 }), Phase{}, corev1.PodFailed,
			func(c corev1.ContainerStatus) bool { return c.State.Terminated.ExitCode == 5 }, ""},
		{"signal", vm("exited", func(v *daemonv1.VM) { v.HasExit = true; v.ExitSignal = 9 }), Phase{}, corev1.PodFailed,
			func(c corev1.ContainerStatus) bool { return c.State.Terminated.ExitCode == 137 }, ""},
		{"lost", vm("lost", nil), Phase{}, corev1.PodFailed, func(c corev1.ContainerStatus) bool { return c.State.Terminated.Reason == "Lost" }, "VMLost"},
		{"unsupervised", vm("unsupervised", nil), Phase{}, corev1.PodUnknown, func(corev1.ContainerStatus) bool { return true }, "VMUnsupervised"},
	}
	for _, c := range cases {
		st := PodStatus(pod, c.vm, c.ph, "10.0.0.1")
		if st.Phase != c.phase || st.Reason != c.reason || len(st.ContainerStatuses) != 1 || !c.check(st.ContainerStatuses[0]) || st.HostIP != "10.0.0.1" {
			t.Errorf("%s: %+v", c.name, st)
		}
	}
}

func TestCapacityAndConditions(t *testing.T) {
	rl := Capacity(&daemonv1.Policy{Vms: 3, MemoryMb: 256, Cpus: []int32{0, 1}})
	if rl.Pods().Value() != 3 || rl.Memory().Value() != 256<<20 || rl.Cpu().Value() != 2 {
		t.Fatalf("capacity %v", rl)
	}
	al := Allocatable(rl, []*daemonv1.VM{{MemoryMb: 16}, {MemoryMb: 512}})
	if al.Pods().Value() != 1 || al.Memory().Value() != 0 || rl.Pods().Value() != 3 {
		t.Fatalf("allocatable %v of %v", al, rl)
	}
	conds := Conditions(nil, []*daemonv1.Plugin{{Name: "spt", Kind: "hypervisor", Health: "healthy"}, {Name: "hvt", Kind: "hypervisor", Health: "unhealthy"}}, nil)
	if conds[0].Type != corev1.NodeReady || conds[0].Status != corev1.ConditionTrue || conds[1].Status != corev1.ConditionFalse || !strings.Contains(conds[1].Message, "hvt unhealthy") {
		t.Fatalf("conditions %+v", conds)
	}
	conds = Conditions(conds, []*daemonv1.Plugin{{Name: "hvt", Kind: "hypervisor", Health: "unhealthy"}}, nil)
	if conds[0].Status != corev1.ConditionFalse {
		t.Fatal("ready without a usable backend")
	}
	hidden := HiddenConditions(conds)
	if hidden[0].Status != corev1.ConditionTrue || hidden[1].Status != corev1.ConditionUnknown {
		t.Fatalf("hidden plugins: %+v", hidden[:2])
	}
	conds = Conditions(conds, nil, status.Error(codes.Unavailable, "down"))
	if conds[0].Status != corev1.ConditionFalse || !strings.Contains(conds[0].Message, "down") {
		t.Fatalf("unreachable: %+v", conds[0])
	}
}

// fakeDaemon is petreld as far as the provider uses it.
type fakeDaemon struct {
	daemonv1.DaemonClient
	mu       sync.Mutex
	vms      map[string]*daemonv1.VM
	creates  int
	destroys []string
	refuse   error
}

func (f *fakeDaemon) Create(_ context.Context, r *daemonv1.CreateRequest, _ ...grpc.CallOption) (*daemonv1.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil {
		return nil, f.refuse
	}
	if _, ok := f.vms[r.Name]; ok {
		return nil, status.Error(codes.AlreadyExists, "exists")
	}
	f.creates++
	vm := &daemonv1.VM{Name: "cluster:" + r.Name, State: "running", MemoryMb: r.MemoryMb, CreatedAtNs: time.Now().UnixNano(), ImageName: r.ImageName}
	f.vms[r.Name] = vm
	return vm, nil
}

func (f *fakeDaemon) Destroy(_ context.Context, r *daemonv1.DestroyRequest, _ ...grpc.CallOption) (*daemonv1.DestroyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vms[r.Name]; !ok {
		return nil, status.Error(codes.NotFound, "no such VM")
	}
	delete(f.vms, r.Name)
	f.destroys = append(f.destroys, r.Name)
	return &daemonv1.DestroyResponse{}, nil
}

func (f *fakeDaemon) Info(_ context.Context, r *daemonv1.InfoRequest, _ ...grpc.CallOption) (*daemonv1.InfoResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &daemonv1.InfoResponse{}
	for n, vm := range f.vms {
		if r.Name == "" || r.Name == n {
			resp.Vms = append(resp.Vms, vm)
		}
	}
	if r.Name != "" && len(resp.Vms) == 0 {
		return nil, status.Error(codes.NotFound, "no such VM")
	}
	return resp, nil
}

func (f *fakeDaemon) Console(ctx context.Context, r *daemonv1.ConsoleRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[daemonv1.ConsoleLine], error) {
	return &fakeConsole{ctx: ctx, lines: []string{"Solo5: hello", "done"}}, nil
}

type fakeConsole struct {
	grpc.ClientStream
	ctx   context.Context
	lines []string
}

func (c *fakeConsole) Recv() (*daemonv1.ConsoleLine, error) {
	if len(c.lines) == 0 {
		return nil, io.EOF
	}
	l := c.lines[0]
	c.lines = c.lines[1:]
	return &daemonv1.ConsoleLine{Text: l, TimeNs: time.Now().UnixNano()}, nil
}
func (c *fakeConsole) Header() (metadata.MD, error) { return nil, nil }
func (c *fakeConsole) Context() context.Context     { return c.ctx }

type fakeImages struct{ calls int }

func (f *fakeImages) Resolve(_ context.Context, ref string, r *daemonv1.CreateRequest) error {
	f.calls++
	r.ImageSha256 = "abc"
	return nil
}

func newTestProvider(t *testing.T, d *fakeDaemon, pods ...*corev1.Pod) (*Provider, *record.FakeRecorder, chan *corev1.Pod) {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	rec := record.NewFakeRecorder(10)
	p, err := NewProvider(Config{Daemon: d, Images: &fakeImages{}, Pods: corev1listers.NewPodLister(idx), Recorder: rec, OrphanGrace: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	notified := make(chan *corev1.Pod, 100)
	p.NotifyPods(context.Background(), func(p *corev1.Pod) { notified <- p })
	return p, rec, notified
}

func TestProviderLifecycle(t *testing.T) {
	ctx := context.Background()
	d := &fakeDaemon{vms: map[string]*daemonv1.VM{
		"web": {Name: "cluster:web", State: "running"}, // made outside Kubernetes
	}}
	pod := testPod("web")
	p, _, notified := newTestProvider(t, d, pod)
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if d.creates != 1 {
		t.Fatalf("%d creates for one pod", d.creates)
	}
	if vm := d.vms[VMLabel("default", "web", pod.UID)]; !ownedBy(vm, VMLabel("default", "web", pod.UID)) {
		t.Fatalf("VM without the owner mark: %v", vm)
	}
	st, err := p.GetPodStatus(ctx, "default", "web")
	if err != nil || st.Phase != corev1.PodRunning {
		t.Fatalf("status %v %v", st, err)
	}
	// A restarted agent adopts the VM instead of making another.
	p2, _, _ := newTestProvider(t, d, pod)
	if err := p2.CreatePod(ctx, pod); err != nil || d.creates != 1 {
		t.Fatalf("restarted agent: %v, %d creates", err, d.creates)
	}
	// Logs are the console.
	rc, err := p.GetContainerLogs(ctx, "default", "web", "app", api.ContainerLogOpts{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	_ = rc.Close()
	if string(b) != "Solo5: hello\ndone\n" {
		t.Fatalf("logs %q", b)
	}
	// Sync never touches the VM made outside Kubernetes.
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.DeletePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.vms["web"]; !ok || len(d.vms) != 1 {
		t.Fatalf("VMs after delete: %v", d.vms)
	}
	var last *corev1.Pod
	for len(notified) > 0 {
		last = <-notified
	}
	if last == nil || (last.Status.Phase != corev1.PodSucceeded && last.Status.Phase != corev1.PodFailed) {
		t.Fatalf("no terminal status after delete: %v", last)
	}
	if pods, _ := p.GetPods(ctx); len(pods) != 0 {
		t.Fatalf("pods after delete: %d", len(pods))
	}
}

func TestProviderOrphans(t *testing.T) {
	ctx := context.Background()
	kept, gone := testPod("kept"), testPod("gone")
	vm := func(p *corev1.Pod) *daemonv1.VM {
		return &daemonv1.VM{Name: "cluster:" + VMLabel(p.Namespace, p.Name, p.UID), State: "running", ImageName: OwnerMark(p) + " local/hello:spt"}
	}
	// Made by hand in the agent's name form, even with a mark of another
	// pod: not the agent's.
	forged := vm(gone)
	forged.Name = "cluster:k8s-handmade-0123456789ab"
	d := &fakeDaemon{vms: map[string]*daemonv1.VM{
		"web":                                {Name: "cluster:web", State: "running"},
		"k8s-handmade-0123456789ab":          forged,
		"k8s-plain-0123456789ab":             {Name: "cluster:k8s-plain-0123456789ab", State: "running", ImageName: "hello.spt"},
		VMLabel("default", "kept", kept.UID): vm(kept),
		VMLabel("default", "gone", gone.UID): vm(gone),
	}}
	// The agent restarted; "gone" was deleted from Kubernetes meanwhile.
	p, _, _ := newTestProvider(t, d, kept)
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(d.destroys) != 1 || d.destroys[0] != VMLabel("default", "gone", gone.UID) {
		t.Fatalf("destroyed %v", d.destroys)
	}
}

func TestProviderRefusal(t *testing.T) {
	ctx := context.Background()
	d := &fakeDaemon{vms: map[string]*daemonv1.VM{}}
	pod := testPod("bad")
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "b"}}
	p, rec, notified := newTestProvider(t, d, pod)
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	ev := <-rec.Events
	if !strings.Contains(ev, "Refused") || !strings.Contains(ev, "environment") {
		t.Fatalf("event %q", ev)
	}
	got := <-notified
	if got.Status.Phase != corev1.PodFailed || got.Status.Reason != "Refused" {
		t.Fatalf("status %+v", got.Status)
	}
	// petreld's own refusal (beyond the delegated policy) is a refusal too.
	d.refuse = status.Error(codes.ResourceExhausted, "policy: memory 32 MB over the 16 MB left")
	pod2 := testPod("big")
	if err := p.CreatePod(ctx, pod2); err != nil {
		t.Fatal(err)
	}
	if ev := <-rec.Events; !strings.Contains(ev, "memory 32 MB") {
		t.Fatalf("event %q", ev)
	}
	// Any other failure is an error, retried by the pod controller.
	d.refuse = status.Error(codes.Unavailable, "down")
	if err := p.CreatePod(ctx, testPod("later")); err == nil || IsRefusal(err) {
		t.Fatalf("unavailable: %v", err)
	}
}

func TestRegistryImages(t *testing.T) {
	req := &daemonv1.CreateRequest{}
	if err := (RegistryImages{}).Resolve(context.Background(), "127.0.0.1:5000/net:hvt", req); err != nil || req.ImageRef != "127.0.0.1:5000/net:hvt" || req.ImageSha256 != "" {
		t.Fatalf("%v %v", req, err)
	}
}

func TestImagesPicksResolver(t *testing.T) {
	ctx := context.Background()
	req := &daemonv1.CreateRequest{}
	m := Images{Registry: RegistryImages{}}
	if err := m.Resolve(ctx, "local/net:hvt", req); !IsRefusal(err) {
		t.Fatalf("local reference without a directory: %v", err)
	}
	if err := m.Resolve(ctx, "127.0.0.1:5000/net:hvt", req); err != nil || req.ImageRef == "" {
		t.Fatalf("registry reference: %v %v", req, err)
	}
	m.Files = &FileImages{Dir: t.TempDir(), Upload: client.Over(nil)}
	if err := m.Resolve(ctx, "local/missing:hvt", &daemonv1.CreateRequest{}); err == nil || IsRefusal(err) {
		t.Fatalf("missing local file: %v", err)
	}
}

func TestFileImages(t *testing.T) {
	f := FileImages{Dir: "/srv"}
	for ref, want := range map[string]string{"local/hello:spt": "/srv/hello.spt", "hello": "/srv/hello", "reg:5000/a/b/hello:hvt": "/srv/hello.hvt"} {
		if got, err := f.FilePath(ref); err != nil || got != want {
			t.Errorf("%s: %q %v", ref, got, err)
		}
	}
	for _, ref := range []string{"hello@sha256:00", "local/..", "x/:tag", "a/..:"} {
		if _, err := f.FilePath(ref); err == nil {
			t.Errorf("%s accepted", ref)
		}
	}
}

// endpointDaemon is petreld as a delegate sees it through the endpoint:
// Plugins is refused, PluginHealth answers with summary (or is missing,
// as on a petreld without it, when summary is nil).
type endpointDaemon struct {
	daemonv1.DaemonClient
	summary []*daemonv1.PluginHealthEntry
}

func (d *endpointDaemon) Plugins(context.Context, *daemonv1.PluginsRequest, ...grpc.CallOption) (*daemonv1.PluginsResponse, error) {
	return nil, status.Error(codes.PermissionDenied, "Plugins describes the host and is reserved to its owner")
}

func (d *endpointDaemon) PluginHealth(context.Context, *daemonv1.PluginHealthRequest, ...grpc.CallOption) (*daemonv1.PluginHealthResponse, error) {
	if d.summary == nil {
		return nil, status.Error(codes.Unimplemented, "unknown method PluginHealth")
	}
	return &daemonv1.PluginHealthResponse{Plugins: d.summary}, nil
}

func (d *endpointDaemon) Version(context.Context, *daemonv1.VersionRequest, ...grpc.CallOption) (*daemonv1.VersionResponse, error) {
	return &daemonv1.VersionResponse{}, nil
}

func (d *endpointDaemon) PolicyList(context.Context, *daemonv1.PolicyListRequest, ...grpc.CallOption) (*daemonv1.PolicyListResponse, error) {
	return &daemonv1.PolicyListResponse{Policies: []*daemonv1.PolicyEntry{{Path: ":cluster", Policy: &daemonv1.Policy{Vms: 3, MemoryMb: 96}}}}, nil
}

func (d *endpointDaemon) Info(context.Context, *daemonv1.InfoRequest, ...grpc.CallOption) (*daemonv1.InfoResponse, error) {
	return &daemonv1.InfoResponse{}, nil
}

// TestNodeHealthThroughEndpoint: an agent that may not list the plugins
// reports their health from the summary every delegate may read, and
// Unknown only when petreld has no summary to give.
func TestNodeHealthThroughEndpoint(t *testing.T) {
	for _, c := range []struct {
		name            string
		summary         []*daemonv1.PluginHealthEntry
		ready, plugins  corev1.ConditionStatus
		messageContains string
	}{
		{"healthy", []*daemonv1.PluginHealthEntry{{Name: "hvt", Kind: "hypervisor", Health: "healthy"}, {Name: "bridge", Kind: "network", Health: "healthy"}},
			corev1.ConditionTrue, corev1.ConditionTrue, "bridge healthy, hvt healthy"},
		{"a plugin down", []*daemonv1.PluginHealthEntry{{Name: "hvt", Kind: "hypervisor", Health: "healthy"}, {Name: "bridge", Kind: "network", Health: "down"}},
			corev1.ConditionTrue, corev1.ConditionFalse, "bridge down"},
		{"no usable backend", []*daemonv1.PluginHealthEntry{{Name: "hvt", Kind: "hypervisor", Health: "unhealthy"}},
			corev1.ConditionFalse, corev1.ConditionFalse, "hvt unhealthy"},
		{"petreld without PluginHealth", nil, corev1.ConditionTrue, corev1.ConditionUnknown, "upgrade petreld"},
	} {
		node := &corev1.Node{}
		n := NewNode(NodeConfig{Daemon: &endpointDaemon{summary: c.summary}, Root: ":cluster"}, node)
		var got *corev1.Node
		n.NotifyNodeStatus(context.Background(), func(nd *corev1.Node) { got = nd })
		n.Refresh(context.Background())
		if got == nil {
			t.Fatalf("%s: no node status", c.name)
		}
		var ready, plugins corev1.NodeCondition
		for _, cond := range got.Status.Conditions {
			switch cond.Type {
			case corev1.NodeReady:
				ready = cond
			case ConditionPlugins:
				plugins = cond
			}
		}
		if ready.Status != c.ready || plugins.Status != c.plugins || !strings.Contains(plugins.Message, c.messageContains) {
			t.Errorf("%s: Ready %s (%s), %s %s (%s)", c.name, ready.Status, ready.Message, ConditionPlugins, plugins.Status, plugins.Message)
		}
		if q := got.Status.Capacity[corev1.ResourcePods]; q.Value() != 3 {
			t.Errorf("%s: capacity %v", c.name, got.Status.Capacity)
		}
	}
}
