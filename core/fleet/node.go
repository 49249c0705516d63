package fleet

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// ConditionPlugins is the node condition that carries Petrel's plugin
// health: True while every enabled plugin is healthy.
const ConditionPlugins corev1.NodeConditionType = "PetrelPluginsHealthy"

// NodeConfig is what a Node needs.
type NodeConfig struct {
	// Daemon is petreld.
	Daemon daemonv1.DaemonClient
	// Domain is the agent's VM path (see Config.Domain).
	Domain string
	// Root is the absolute path of the agent's domain (the sub-CA's
	// domain, or Domain on the local socket), whose policy entry is the
	// node's capacity.
	Root string
	// Delegated is the policy the agent's sub-CA certificate carries, the
	// capacity until petreld lists one for Root (it learns a
	// certificate's policy with the first request that brings the chain).
	Delegated *daemonv1.Policy
	// Interval is how often capacity and health are read (default 10s).
	Interval time.Duration
}

// Node is virtual-kubelet's node provider: it keeps the node's capacity
// equal to the policy delegated to the agent's domain and its conditions
// equal to Petrel's plugin health.
type Node struct {
	cfg NodeConfig

	mu   sync.Mutex
	node *corev1.Node
	cb   func(*corev1.Node)
	last string
}

// NewNode returns a node provider that updates node (the object the node
// controller registers) in place before each notification.
func NewNode(cfg NodeConfig, node *corev1.Node) *Node {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	return &Node{cfg: cfg, node: node}
}

// Ping checks that petreld answers; the node controller renews the lease
// only while it does.
func (n *Node) Ping(ctx context.Context) error {
	if _, err := n.cfg.Daemon.Version(ctx, &daemonv1.VersionRequest{}); err != nil {
		return fmt.Errorf("petreld: %w", err)
	}
	return nil
}

// NotifyNodeStatus registers the callback for status changes.
func (n *Node) NotifyNodeStatus(_ context.Context, cb func(*corev1.Node)) {
	n.mu.Lock()
	n.cb = cb
	n.mu.Unlock()
}

// Run refreshes the node's status every Interval until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	t := time.NewTicker(n.cfg.Interval)
	defer t.Stop()
	for {
		n.Refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh reads capacity and health once, applies them to the node and
// notifies the node controller when they changed.
func (n *Node) Refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	capacity, capErr := n.capacity(ctx)
	var foreign []*daemonv1.VM
	if capErr == nil {
		foreign, capErr = n.foreignVMs(ctx)
	}
	plugins, plugErr := n.plugins(ctx)
	hidden := false
	if status.Code(plugErr) == codes.Unimplemented {
		// A petreld older than PluginHealth keeps plugin health to the
		// host's owner: through the endpoint the agent knows only that
		// petreld answers.
		_, plugErr = n.cfg.Daemon.Version(ctx, &daemonv1.VersionRequest{})
		hidden = plugErr == nil
	}
	n.mu.Lock()
	if capErr == nil {
		n.node.Status.Capacity = capacity
		n.node.Status.Allocatable = Allocatable(capacity, foreign)
	}
	if capErr != nil && n.node.Status.Capacity == nil && plugErr == nil {
		plugErr = capErr
	}
	if hidden {
		n.node.Status.Conditions = HiddenConditions(n.node.Status.Conditions)
	} else {
		n.node.Status.Conditions = Conditions(n.node.Status.Conditions, plugins, plugErr)
	}
	d := nodeDigest(n.node)
	cb := n.cb
	changed := d != n.last
	if changed {
		n.last = d
	}
	node := n.node.DeepCopy()
	n.mu.Unlock()
	if changed && cb != nil {
		cb(node)
	}
}

// plugins is petreld's plugin list: the full one on its own socket, and
// through the endpoint, where that is the host owner's, the health
// summary every caller may read (PluginHealth).
func (n *Node) plugins(ctx context.Context) ([]*daemonv1.Plugin, error) {
	full, err := n.cfg.Daemon.Plugins(ctx, &daemonv1.PluginsRequest{})
	if status.Code(err) != codes.PermissionDenied {
		return full.GetPlugins(), err
	}
	summary, err := n.cfg.Daemon.PluginHealth(ctx, &daemonv1.PluginHealthRequest{})
	if err != nil {
		return nil, err
	}
	return SummaryPlugins(summary.GetPlugins()), nil
}

// SummaryPlugins turns PluginHealth's entries into the plugin list
// Conditions reads, which needs only names, kinds and health.
func SummaryPlugins(entries []*daemonv1.PluginHealthEntry) []*daemonv1.Plugin {
	out := make([]*daemonv1.Plugin, 0, len(entries))
	for _, e := range entries {
		out = append(out, &daemonv1.Plugin{Name: e.GetName(), Kind: e.GetKind(), Health: e.GetHealth(), Targets: e.GetTargets()})
	}
	return out
}

// capacity is the delegated policy as node resources.
func (n *Node) capacity(ctx context.Context) (corev1.ResourceList, error) {
	resp, err := n.cfg.Daemon.PolicyList(ctx, &daemonv1.PolicyListRequest{Path: n.cfg.Domain})
	if err != nil {
		return nil, fmt.Errorf("policy of %q: %w", n.cfg.Domain, err)
	}
	root := strings.TrimPrefix(n.cfg.Root, ":")
	for _, e := range resp.GetPolicies() {
		if strings.TrimPrefix(e.GetPath(), ":") == root && e.GetPolicy() != nil {
			return Capacity(e.GetPolicy()), nil
		}
	}
	if n.cfg.Delegated != nil {
		return Capacity(n.cfg.Delegated), nil
	}
	return nil, fmt.Errorf("no policy is delegated to %q", root)
}

// foreignVMs are the VMs under the agent's path that it did not make:
// they take from the delegated share what pods cannot have.
func (n *Node) foreignVMs(ctx context.Context) ([]*daemonv1.VM, error) {
	resp, err := n.cfg.Daemon.Info(ctx, &daemonv1.InfoRequest{Name: n.cfg.Domain})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	var out []*daemonv1.VM
	for _, vm := range resp.GetVms() {
		if l := LastLabel(vm.GetName()); !IsManaged(l) || !ownedBy(vm, l) {
			out = append(out, vm)
		}
	}
	return out, nil
}

// Allocatable is what pods may use: the capacity less what VMs made
// outside Kubernetes take (never below zero).
func Allocatable(capacity corev1.ResourceList, foreign []*daemonv1.VM) corev1.ResourceList {
	pods, mem := capacity.Pods().Value(), capacity.Memory().Value()
	for _, vm := range foreign {
		pods--
		mem -= int64(vm.GetMemoryMb()) * mib
	}
	out := capacity.DeepCopy()
	out[corev1.ResourcePods] = *resource.NewQuantity(max(pods, 0), resource.DecimalSI)
	out[corev1.ResourceMemory] = *resource.NewQuantity(max(mem, 0), resource.BinarySI)
	return out
}

// Capacity turns a Petrel policy into node resources: VMs are pods,
// memory is memory, and each CPU the policy allows is one CPU.
func Capacity(p *daemonv1.Policy) corev1.ResourceList {
	cpus := int64(len(p.GetCpus()))
	if cpus == 0 {
		cpus = 1
	}
	return corev1.ResourceList{
		corev1.ResourcePods:   *resource.NewQuantity(int64(p.GetVms()), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(p.GetMemoryMb()*mib, resource.BinarySI),
		corev1.ResourceCPU:    *resource.NewQuantity(cpus, resource.DecimalSI),
	}
}

// Conditions are the node conditions for a plugin list (err set when
// petreld could not be asked): Ready while petreld answers and a backend
// is usable, ConditionPlugins from every plugin's health, and the
// pressure conditions a kubelet reports, always False.
func Conditions(old []corev1.NodeCondition, plugins []*daemonv1.Plugin, err error) []corev1.NodeCondition {
	now := metav1.Now()
	prev := map[corev1.NodeConditionType]corev1.NodeCondition{}
	for _, c := range old {
		prev[c.Type] = c
	}
	set := func(t corev1.NodeConditionType, ok bool, reason, msg string) corev1.NodeCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		if p, ok := prev[t]; ok && p.Status == s {
			c.LastTransitionTime = p.LastTransitionTime
		}
		return c
	}
	var ready, healthy bool
	var readyMsg, pluginMsg string
	if err != nil {
		readyMsg = "petreld: " + err.Error()
		pluginMsg = readyMsg
	} else {
		healthy = true
		var parts []string
		for _, p := range plugins {
			parts = append(parts, p.GetName()+" "+p.GetHealth())
			usable := p.GetHealth() == "healthy" || p.GetHealth() == "degraded"
			if p.GetHealth() != "healthy" {
				healthy = false
			}
			if p.GetKind() == "hypervisor" && usable {
				ready = true
			}
		}
		sort.Strings(parts)
		pluginMsg = strings.Join(parts, ", ")
		readyMsg = "a backend is usable: " + pluginMsg
		if !ready {
			readyMsg = "no backend is usable: " + pluginMsg
		}
	}
	readyReason, plugReason := "KubeletReady", "PluginsHealthy"
	if !ready {
		readyReason = "PetrelNotReady"
	}
	if !healthy {
		plugReason = "PluginsUnhealthy"
	}
	return []corev1.NodeCondition{
		set(corev1.NodeReady, ready, readyReason, readyMsg),
		set(ConditionPlugins, healthy, plugReason, pluginMsg),
		set(corev1.NodeMemoryPressure, false, "PolicyBounded", "memory is bounded by the delegated policy"),
		set(corev1.NodeDiskPressure, false, "PolicyBounded", "storage is bounded by the delegated policy"),
		set(corev1.NodePIDPressure, false, "NoPIDs", "VMs use no host PIDs beyond their tender"),
		set(corev1.NodeNetworkUnavailable, false, "Bridges", "VMs use host bridges"),
	}
}

// HiddenConditions are the node conditions when petreld answers but
// keeps its plugins' health to the host's owner (an agent connected
// through petrel-endpoint to a petreld without PluginHealth): Ready, and
// ConditionPlugins Unknown.
func HiddenConditions(old []corev1.NodeCondition) []corev1.NodeCondition {
	conds := Conditions(old, []*daemonv1.Plugin{{Name: "petreld", Kind: "hypervisor", Health: "healthy"}}, nil)
	conds[0].Message = "petreld answers; it does not report its plugins' health to delegates"
	conds[1].Status, conds[1].Reason, conds[1].Message = corev1.ConditionUnknown, "ReservedToOwner",
		"this petreld reports plugin health on its own socket only (it has no PluginHealth); run the agent there (--socket) or upgrade petreld"
	return conds
}

// nodeDigest is what of a node's status is worth an update.
func nodeDigest(n *corev1.Node) string {
	var b strings.Builder
	for _, r := range []corev1.ResourceName{corev1.ResourcePods, corev1.ResourceMemory, corev1.ResourceCPU} {
		q, a := n.Status.Capacity[r], n.Status.Allocatable[r]
		b.WriteString(q.String() + "/" + a.String() + "|")
	}
	for _, c := range n.Status.Conditions {
		b.WriteString(string(c.Type) + string(c.Status) + c.Message + "|")
	}
	return b.String()
}
