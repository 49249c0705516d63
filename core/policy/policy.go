// Package policy implements resource policies attached to paths of the
// name tree, so that a host's owner can hand part of its resources to
// others, who can hand part of theirs on in turn, without any of them
// being able to exceed what they were given.
//
// A Policy bounds the number of VMs, the total memory, block storage and
// image storage, and the sets of CPU ids and bridges that VMs governed by
// it may use. A
// policy at path P governs every VM whose name has P as a proper
// ancestor: the policy at "a" governs "a:vm" and "a:b:vm", but not a VM
// named "a" itself (Albatross's rule: a VM is governed by its domain).
//
// Two rules keep delegation sound:
//
//   - A child policy is never larger than its parent in any field, checked
//     against every ancestor when it is inserted (Tree.Set).
//   - At every deploy the VM is checked against the policy of every
//     ancestor path, with the usage of all VMs under that path summed
//     (Tree.CheckDeploy). A parent allowing 2 VMs whose two children each
//     allow 2 therefore admits 2 VMs in total, not 4. Albatross checks only
//     the nearest policy at deploy time, so its delegated sub-policies can
//     together exceed their parent; Petrel does not repeat that.
//
// CPUs and bridges are not counted: a VM may use a CPU or bridge only if
// every governing policy allows it, and any number of VMs may share them.
// A VM pinned to no CPU is confined to the CPUs every governing policy
// lists (Tree.CPUs), so a policy's CPUs bound where its VMs run whether
// or not they ask for CPUs (Albatross pins every unikernel to a CPU of its
// policy).
//
// Image storage is a counted resource too: the images held for a path
// (those its VMs use and those its callers uploaded for VMs to come) are
// a set of digests with sizes (Usage.Images), bounded by Policy.Images
// at every ancestor, and at the root by the host's image store limit
// (CheckImagesAgainst, ImageRoom); a domain some policy allows no VM may
// upload nothing (CheckMayDeploy).
//
// A path may hold two policies, one set by its owner or an ancestor and
// one carried by a certificate of a caller's chain (Tree.Set and
// Tree.SetCertificate). Its effective policy is their meet (Policy.Meet),
// so that neither can loosen what the other allows: a tenant presenting
// a certificate cannot undo a limit the host's owner set, and the owner's
// local policy cannot exceed what the tenant's issuer delegated.
//
// The root policy is discovered from the host (HostPolicy) rather than
// configured, so that a policy never promises resources the machine does
// not have.
//
// # One definition
//
// The Policy type is the one definition of a policy's fields; every other
// form derives from it or is checked against it. Adding a field means
// adding it to Policy (with its JSON key) and then to each of these, all
// of which wire_test.go and the tests named below walk field by field,
// so that one forgotten fails them:
//
//   - this package: Clone, Canonical, Equal, Meet, String, Validate and
//     Within in policy.go (TestEveryFieldIsCompared), the usage checks in
//     usage.go and tree.go if the field is a counted resource, and
//     HostPolicy for the root policy;
//   - the daemon API: message Policy in sdk/proto/daemon/v1/daemon.proto
//     (a new field number; regenerate with `make proto`) and ToProto and
//     FromProto in proto.go (TestEveryFieldRoundTrips);
//   - the certificate extension: MarshalPolicy and UnmarshalPolicy in
//     core/pki/ext.go and the PolicyExt schema in core/pki/doc.go, a new
//     field being an OPTIONAL context-tagged element at the end
//     (TestEveryFieldRoundTrips);
//   - the JSON petreld stores and `petrel policy --json` prints: the
//     struct tags here (TestWireFormatsAreStable);
//   - the command line: policyFlags in cmd/petrel/policyflags.go, the one
//     binder of `petrel policy add` and `petrel ca sign-policy`
//     (TestPolicyFlagsSetEveryField), and the tables of `petrel policy`
//     and `petrel state show`;
//   - the web console: policyView and policyForm in cmd/petrel/ui/api.go
//     (TestPolicyViewAndFormCoverEveryField) and the policy form and table
//     in cmd/petrel/ui/assets/app.js;
//   - the README's description of policies.
//
// Encodings written before must keep reading the same, and a policy that
// leaves a new field unset must keep encoding the same
// (TestWireFormatsAreStable, TestIssuedCertificatesStillRead): a new
// field is optional on every wire, omitted when unset.
package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Limits on policy fields. They keep sums of usage far from integer
// overflow and bound the size of a policy when it travels in a
// certificate extension; all are well above what any real host offers.
const (
	// MaxVMs bounds Policy.VMs.
	MaxVMs = 1 << 20
	// MaxMemoryMB bounds Policy.MemoryMB (1 EiB).
	MaxMemoryMB = 1 << 40
	// MaxBlockMB bounds Policy.BlockMB (1 EiB).
	MaxBlockMB = 1 << 40
	// MaxImagesMB bounds Policy.ImagesMB (1 EiB).
	MaxImagesMB = 1 << 40
	// MaxCPUID is the largest CPU id accepted; Linux supports at most
	// 8192 CPUs (NR_CPUS).
	MaxCPUID = 8191
	// MaxBridges bounds the number of bridges in a policy.
	MaxBridges = 256
	// MaxBridgeName is the longest interface name Linux accepts
	// (IFNAMSIZ - 1).
	MaxBridgeName = 15
)

// ErrExceeded is wrapped by every error that reports a policy being
// exceeded, whether by a child policy, by current usage or by a deploy,
// so that callers can map it to a "permission denied" or "resource
// exhausted" status with errors.Is.
var ErrExceeded = errors.New("policy exceeded")

// Policy is a set of resource limits for the VMs under one path. The
// JSON form is what petreld stores and what `petrel policy --json` shows.
type Policy struct {
	// VMs is the largest number of VMs that may exist under the path.
	VMs int `json:"vms"`
	// CPUs lists the CPU ids VMs under the path may run on: a VM pinned to
	// CPUs must name some of them, one pinned to none is confined to them.
	// Empty: VMs may not be pinned, and run where the ancestors allow.
	CPUs []int `json:"cpus"`
	// MemoryMB is the total memory, in MiB, of all VMs under the path.
	MemoryMB int `json:"memory_mb"`
	// BlockMB is the total size, in MiB, of the block devices of all VMs
	// under the path. Nil means the policy states no block allowance,
	// which allows no block devices at all, exactly like a pointer to 0;
	// the distinction is kept only so that a policy round-trips through
	// storage and certificates unchanged.
	BlockMB *int `json:"block_mb,omitempty"`
	// Bridges lists the host bridges VMs under the path may attach to.
	Bridges []string `json:"bridges"`
	// ImagesMB is the total size, in MiB, of the images (unikernels,
	// kernels and initrds) that the VMs under the path use and that
	// callers in the path's domain have uploaded for VMs to come: what
	// they may make petreld's image store hold. Nil means the policy
	// states no image allowance, which allows as much as MemoryMB: an
	// image is loaded into its VM's memory, so VMs that fit the memory
	// allowance never need more, and a policy written before image
	// storage was counted keeps working.
	ImagesMB *int `json:"images_mb,omitempty"`
}

// Images returns the image allowance in MiB: ImagesMB, or MemoryMB when
// the policy states none.
func (p Policy) Images() int {
	if p.ImagesMB == nil {
		return p.MemoryMB
	}
	return *p.ImagesMB
}

// Block returns the block allowance in MiB, treating nil as 0, so that
// callers need not repeat the rule that an absent allowance allows none.
func (p Policy) Block() int {
	if p.BlockMB == nil {
		return 0
	}
	return *p.BlockMB
}

// Clone returns a deep copy, so that a Policy handed out by a Tree
// cannot be used to modify the Tree.
func (p Policy) Clone() Policy {
	q := p
	q.CPUs = slices.Clone(p.CPUs)
	q.Bridges = slices.Clone(p.Bridges)
	if p.BlockMB != nil {
		b := *p.BlockMB
		q.BlockMB = &b
	}
	if p.ImagesMB != nil {
		n := *p.ImagesMB
		q.ImagesMB = &n
	}
	return q
}

// Canonical returns a copy with CPUs and bridges sorted and duplicates
// removed, the form stored and encoded, so that two equal policies have
// one representation.
func (p Policy) Canonical() Policy {
	q := p.Clone()
	slices.Sort(q.CPUs)
	q.CPUs = slices.Compact(q.CPUs)
	slices.Sort(q.Bridges)
	q.Bridges = slices.Compact(q.Bridges)
	if q.CPUs == nil {
		q.CPUs = []int{}
	}
	if q.Bridges == nil {
		q.Bridges = []string{}
	}
	return q
}

// Equal reports whether p and q allow exactly the same resources, treating
// CPU and bridge lists as sets but keeping nil and zero BlockMB (and an
// unstated ImagesMB and one equal to MemoryMB) distinct.
func (p Policy) Equal(q Policy) bool {
	a, b := p.Canonical(), q.Canonical()
	if a.VMs != b.VMs || a.MemoryMB != b.MemoryMB || !slices.Equal(a.CPUs, b.CPUs) || !slices.Equal(a.Bridges, b.Bridges) {
		return false
	}
	if (a.BlockMB == nil) != (b.BlockMB == nil) || (a.ImagesMB == nil) != (b.ImagesMB == nil) {
		return false
	}
	if a.ImagesMB != nil && *a.ImagesMB != *b.ImagesMB {
		return false
	}
	return a.BlockMB == nil || *a.BlockMB == *b.BlockMB
}

// Meet returns the policy that allows only what both p and q allow: the
// smaller count and size of each field, and the CPUs and bridges both
// list. A domain's effective policy is the meet of every policy recorded
// for it (the one its owner set and the one its certificate carries), so
// that none of them can loosen another. A block allowance that either
// leaves unstated allows nothing, so the meet states none either; an
// image allowance left unstated is the memory allowance, so the meet's is
// the smaller of the two sides' (stated only when either side states
// one).
func (p Policy) Meet(q Policy) Policy {
	out := Policy{VMs: min(p.VMs, q.VMs), MemoryMB: min(p.MemoryMB, q.MemoryMB),
		CPUs: both(p.CPUs, q.CPUs), Bridges: both(p.Bridges, q.Bridges)}
	if p.BlockMB != nil && q.BlockMB != nil {
		b := min(*p.BlockMB, *q.BlockMB)
		out.BlockMB = &b
	}
	if p.ImagesMB != nil || q.ImagesMB != nil {
		n := min(p.Images(), q.Images())
		out.ImagesMB = &n
	}
	return out.Canonical()
}

// both returns the elements of a that are also in b, in a's order.
func both[T comparable](a, b []T) []T {
	in := make(map[T]bool, len(b))
	for _, x := range b {
		in[x] = true
	}
	out := []T{}
	for _, x := range a {
		if in[x] {
			out = append(out, x)
		}
	}
	return out
}

// String renders p on one line for logs and error messages; an image
// allowance appears only when the policy states one.
func (p Policy) String() string {
	block := "none"
	if p.BlockMB != nil {
		block = fmt.Sprintf("%d MB", *p.BlockMB)
	}
	images := ""
	if p.ImagesMB != nil {
		images = fmt.Sprintf(", images %d MB", *p.ImagesMB)
	}
	return fmt.Sprintf("vms %d, cpus %v, memory %d MB, block %s%s, bridges %v", p.VMs, p.CPUs, p.MemoryMB, block, images, p.Bridges)
}

// Validate checks that every field is in range: counts and sizes
// non-negative and below the package limits, CPU ids unique and
// non-negative, bridge names unique valid Linux interface names. All
// problems are reported, on one line.
func (p Policy) Validate() error {
	var probs []string
	if p.VMs < 0 || p.VMs > MaxVMs {
		probs = append(probs, fmt.Sprintf("vms %d is outside 0..%d", p.VMs, MaxVMs))
	}
	if p.MemoryMB < 0 || p.MemoryMB > MaxMemoryMB {
		probs = append(probs, fmt.Sprintf("memory %d MB is outside 0..%d", p.MemoryMB, MaxMemoryMB))
	}
	if p.BlockMB != nil && (*p.BlockMB < 0 || *p.BlockMB > MaxBlockMB) {
		probs = append(probs, fmt.Sprintf("block %d MB is outside 0..%d", *p.BlockMB, MaxBlockMB))
	}
	if p.ImagesMB != nil && (*p.ImagesMB < 0 || *p.ImagesMB > MaxImagesMB) {
		probs = append(probs, fmt.Sprintf("images %d MB is outside 0..%d", *p.ImagesMB, MaxImagesMB))
	}
	seenCPU := make(map[int]bool, len(p.CPUs))
	for _, c := range p.CPUs {
		switch {
		case c < 0 || c > MaxCPUID:
			probs = append(probs, fmt.Sprintf("cpu id %d is outside 0..%d", c, MaxCPUID))
		case seenCPU[c]:
			probs = append(probs, fmt.Sprintf("cpu id %d is listed twice", c))
		}
		seenCPU[c] = true
	}
	if len(p.Bridges) > MaxBridges {
		probs = append(probs, fmt.Sprintf("%d bridges, the limit is %d", len(p.Bridges), MaxBridges))
	}
	seenBr := make(map[string]bool, len(p.Bridges))
	for _, b := range p.Bridges {
		if err := CheckBridgeName(b); err != nil {
			probs = append(probs, err.Error())
		} else if seenBr[b] {
			probs = append(probs, fmt.Sprintf("bridge %q is listed twice", b))
		}
		seenBr[b] = true
	}
	if len(probs) > 0 {
		return fmt.Errorf("invalid policy: %s", strings.Join(probs, "; "))
	}
	return nil
}

// CheckBridgeName reports whether s is a name the Linux kernel accepts
// for a network interface (dev_valid_name): 1–15 bytes, not "." or "..",
// without '/', ':', NUL or white space. Bridges are checked when a
// policy is written rather than when a VM first attaches, so a typo is
// caught by the person who made it.
func CheckBridgeName(s string) error {
	if s == "" {
		return errors.New("bridge name is empty")
	}
	if len(s) > MaxBridgeName {
		return fmt.Errorf("bridge name %.20q is %d bytes long, the limit is %d", s, len(s), MaxBridgeName)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("bridge name %q is not allowed", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f || c >= 0x80 {
			return fmt.Errorf("bridge name %q contains %q, which interface names cannot contain", s, rune(c))
		}
	}
	return nil
}

// Within reports whether p is no larger than parent in any field: VMs,
// memory and block no greater, CPUs and bridges subsets. A parent without
// a block allowance admits only children without one (or with 0). An
// image allowance p states must not exceed the parent's (stated, or its
// memory); one p leaves unstated is p's memory, which nests already, and
// every deploy and upload is checked against every ancestor's allowance
// anyway. The error names every field that exceeds, on one line, and
// wraps ErrExceeded.
func (p Policy) Within(parent Policy) error {
	var probs []string
	if p.VMs > parent.VMs {
		probs = append(probs, fmt.Sprintf("vms %d > %d", p.VMs, parent.VMs))
	}
	if p.MemoryMB > parent.MemoryMB {
		probs = append(probs, fmt.Sprintf("memory %d MB > %d MB", p.MemoryMB, parent.MemoryMB))
	}
	if p.Block() > parent.Block() {
		if parent.BlockMB == nil {
			probs = append(probs, fmt.Sprintf("block %d MB > none", p.Block()))
		} else {
			probs = append(probs, fmt.Sprintf("block %d MB > %d MB", p.Block(), parent.Block()))
		}
	}
	if p.ImagesMB != nil && *p.ImagesMB > parent.Images() {
		probs = append(probs, fmt.Sprintf("images %d MB > %d MB", *p.ImagesMB, parent.Images()))
	}
	if extra := missing(p.CPUs, parent.CPUs); len(extra) > 0 {
		probs = append(probs, fmt.Sprintf("cpus %v not in %v", extra, parent.CPUs))
	}
	if extra := missing(p.Bridges, parent.Bridges); len(extra) > 0 {
		probs = append(probs, fmt.Sprintf("bridges %q not in %q", extra, parent.Bridges))
	}
	if len(probs) > 0 {
		return &exceededError{msg: strings.Join(probs, ", ")}
	}
	return nil
}

// exceededError carries a one-line message and matches ErrExceeded.
type exceededError struct{ msg string }

func (e *exceededError) Error() string        { return e.msg }
func (e *exceededError) Is(target error) bool { return target == ErrExceeded }

// missing returns the elements of have that are not in allowed, in order
// and without duplicates, in time linear in the lengths of both.
func missing[T comparable](have, allowed []T) []T {
	if len(have) == 0 {
		return nil
	}
	ok := make(map[T]bool, len(allowed))
	for _, x := range allowed {
		ok[x] = true
	}
	var out []T
	for _, x := range have {
		if !ok[x] {
			out = append(out, x)
			ok[x] = true
		}
	}
	return out
}
