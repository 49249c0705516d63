package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/petrel-vmm/petrel/core/name"
)

// ErrNotFound is wrapped by errors about paths that have no policy, so
// callers can tell "nothing to remove" from a refusal.
var ErrNotFound = errors.New("no policy")

// Entry is a policy together with the path it is attached to; it is the
// unit the daemon persists and lists.
//
// petreld stores one Entry per policy set with `petrel policy add` in its
// state store's Collection, and one per policy recorded from a
// certificate chain in CertCollection; the root policy is never stored,
// it is discovered from the host.
type Entry struct {
	// Path is where the policy is attached.
	Path name.Path `json:"path"`
	// Policy is the policy itself, in canonical form.
	Policy Policy `json:"policy"`
}

// Collection is the state store collection of the policies set by a
// domain's owner or an ancestor (`petrel policy add`, locally or
// remotely).
const Collection = "policies"

// CertCollection is the state store collection of the policies recorded
// from the CA certificates of callers' chains. They are kept apart from
// those of Collection so that neither replaces the other: a domain's
// effective policy is the meet of both.
const CertCollection = "certificate-policies"

// Tree holds the policies of one host, keyed by path, and enforces the
// delegation rules of the package on every change and every deploy. It
// is safe for concurrent use.
//
// The root policy always exists; it comes from the host (HostPolicy) and
// is replaced only through SetRoot, never persisted. Every other path may
// have two records: the policy its owner or an ancestor set (Set, Entries,
// Load) and the policy a certificate of a caller's chain carries
// (SetCertificate, CertificateEntries, LoadCertificates). The path's
// effective policy, which Get, List, Governing and every check use, is
// the meet of the two (Policy.Meet): a certificate never loosens what the
// owner set, and a local policy never loosens what a certificate's
// issuer delegated.
//
// Callbacks named usageUnder return the usage of every VM governed by the
// policy at the given path (see Sum). They are called with the Tree
// locked and must not call back into it. CheckDeploy is a check, not a
// reservation: the daemon must serialise deploys (check, then record the
// new VM's allocation) so that two concurrent deploys cannot both fit.
type Tree struct {
	mu   sync.RWMutex
	root Policy
	// m holds the policies set by owners and ancestors, certs those
	// recorded from certificate chains.
	m     map[string]Entry
	certs map[string]Entry
}

// NewTree returns a Tree whose root policy is root and which has no other
// policy.
func NewTree(root Policy) (*Tree, error) {
	if err := root.Validate(); err != nil {
		return nil, fmt.Errorf("root policy: %w", err)
	}
	return &Tree{root: root.Canonical(), m: map[string]Entry{}, certs: map[string]Entry{}}, nil
}

// SetRoot replaces the root policy, as discovered from the host at
// start-up. It is accepted even if existing policies are now larger (the
// host may have lost memory or disk): deploys stay bounded because they
// are checked against the root too, and Conflicts reports what no longer
// nests so the daemon can warn the owner.
func (t *Tree) SetRoot(p Policy) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("root policy: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.root = p.Canonical()
	return nil
}

// Set records p as the policy the owner (or an ancestor) sets for path,
// replacing the one set before; a policy recorded from a certificate for
// path is kept, and the effective policy is the meet of both. It refuses
// the root (see SetRoot), an invalid policy, a policy larger than the
// effective policy of any ancestor (every one, not only the nearest), a
// policy smaller than one set for a descendant, and a policy that the
// VMs already under path would not fit. usageUnder may be nil when no VM
// exists yet.
func (t *Tree) Set(path name.Path, p Policy, usageUnder func(name.Path) Usage) error {
	if path.IsRoot() {
		return errors.New(`policy for ":": the root policy is discovered from the host and cannot be set`)
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("policy for %q: %w", path, err)
	}
	p = p.Canonical()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range path.Ancestors() {
		pa, ok := t.get(a)
		if !ok {
			continue
		}
		if err := p.Within(pa); err != nil {
			return fmt.Errorf("policy for %q exceeds the policy of %q: %w", path, a, err)
		}
	}
	for _, e := range t.sorted() {
		if e.Path.Equal(path) || !path.IsPrefixOf(e.Path) {
			continue
		}
		if err := e.Policy.Within(p); err != nil {
			return fmt.Errorf("policy for %q is smaller than the existing policy of %q: %w", path, e.Path, err)
		}
	}
	if usageUnder != nil {
		if probs := exceeds(usageUnder(path), p); len(probs) > 0 {
			return fmt.Errorf("policy for %q is below the current usage under it: %w", path,
				&exceededError{msg: strings.Join(probs, ", ")})
		}
	}
	t.m[path.String()] = Entry{Path: path, Policy: p}
	return nil
}

// SetCertificate records p as the policy a CA certificate of a caller's
// chain carries for path, replacing the one recorded before (the owner
// may re-sign a certificate with another policy). The policy set for
// path with Set, if any, is kept, and the effective policy is the meet of
// both, so a certificate can tighten but never loosen what was set.
// Nothing else is checked: the chain's policies nest among themselves
// (the verifier checked that), and every deploy is checked against every
// ancestor's effective policy anyway.
func (t *Tree) SetCertificate(path name.Path, p Policy) error {
	if path.IsRoot() {
		return errors.New(`policy for ":": the root policy is discovered from the host and cannot be set`)
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("policy for %q: %w", path, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.certs[path.String()] = Entry{Path: path, Policy: p.Canonical()}
	return nil
}

// Records returns copies of the policies recorded for path: the one set
// by its owner or an ancestor and the one from a certificate, each nil
// when absent.
func (t *Tree) Records(path name.Path) (local, cert *Policy) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if e, ok := t.m[path.String()]; ok {
		p := e.Policy.Clone()
		local = &p
	}
	if e, ok := t.certs[path.String()]; ok {
		p := e.Policy.Clone()
		cert = &p
	}
	return local, cert
}

// Remove detaches every policy recorded at path, the one set and the one
// from a certificate (which a chain carrying it records again at its next
// deploy). VMs under path stay governed by the remaining ancestors'
// policies, and descendants' policies remain valid because they were
// within path's, which was within its ancestors'.
func (t *Tree) Remove(path name.Path) error {
	if path.IsRoot() {
		return errors.New(`policy for ":": the root policy is discovered from the host and cannot be removed`)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := path.String()
	_, local := t.m[k]
	_, cert := t.certs[k]
	if !local && !cert {
		return fmt.Errorf("policy for %q: %w", path, ErrNotFound)
	}
	delete(t.m, k)
	delete(t.certs, k)
	return nil
}

// RemoveLocal detaches only the policy set for path, keeping one recorded
// from a certificate; it undoes a Set that could not be persisted.
func (t *Tree) RemoveLocal(path name.Path) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, path.String())
}

// RemoveCertificate detaches only the policy recorded for path from a
// certificate; it undoes a SetCertificate that could not be persisted.
func (t *Tree) RemoveCertificate(path name.Path) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.certs, path.String())
}

// Get returns a copy of the effective policy of path (the meet of the
// policies recorded for it); the root always has one.
func (t *Tree) Get(path name.Path) (Policy, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	p, ok := t.get(path)
	if !ok {
		return Policy{}, false
	}
	return p.Clone(), true
}

// get returns the effective policy at path, the meet of the policies
// recorded for it; a single record is returned without copying. t.mu must
// be held.
func (t *Tree) get(path name.Path) (Policy, bool) {
	if path.IsRoot() {
		return t.root, true
	}
	k := path.String()
	local, lok := t.m[k]
	cert, cok := t.certs[k]
	switch {
	case lok && cok:
		return local.Policy.Meet(cert.Policy), true
	case lok:
		return local.Policy, true
	case cok:
		return cert.Policy, true
	}
	return Policy{}, false
}

// List returns the effective policies of under and of every path below
// it that has one, including the root when under is the root, parents
// before their children.
func (t *Tree) List(under name.Path) []Entry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []Entry
	if under.IsRoot() {
		out = append(out, Entry{Path: name.Root, Policy: t.root.Clone()})
	}
	for _, e := range t.effective() {
		if under.IsPrefixOf(e.Path) {
			out = append(out, Entry{Path: e.Path, Policy: e.Policy.Clone()})
		}
	}
	return out
}

// Governing returns the policies that govern a VM named vm, that is those
// of its proper ancestors, root first. It is what CheckDeploy checks and
// what `petrel info` can show to explain a refusal.
func (t *Tree) Governing(vm name.Path) []Entry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []Entry
	for _, a := range vm.Ancestors() {
		if p, ok := t.get(a); ok {
			out = append(out, Entry{Path: a, Policy: p.Clone()})
		}
	}
	return out
}

// CPUs returns the CPUs a VM named vm runs within when it is pinned to
// none: those listed by every governing policy that lists any (the
// root's, which are the host's, included), so that a VM under a policy
// with CPUs never runs outside them, pinned or not. A policy that lists no
// CPU confines nothing by itself (its VMs may not be pinned, and run where
// its ancestors allow). confined is false when no policy below the root
// lists CPUs: the VM then runs wherever petreld may. When the governing
// policies have no CPU in common with the host (which lost CPUs since
// they were set), the VM cannot run, and the error wraps ErrExceeded.
func (t *Tree) CPUs(vm name.Path) (cpus []int, confined bool, err error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	set := slices.Clone(t.root.CPUs)
	var from []string
	for _, a := range vm.Ancestors() {
		p, ok := t.get(a)
		if !ok || a.IsRoot() || len(p.CPUs) == 0 {
			continue
		}
		confined = true
		from = append(from, fmt.Sprintf("%q %v", a, p.CPUs))
		allowed := make(map[int]bool, len(p.CPUs))
		for _, c := range p.CPUs {
			allowed[c] = true
		}
		set = slices.DeleteFunc(set, func(c int) bool { return !allowed[c] })
	}
	if !confined {
		return nil, false, nil
	}
	if len(set) == 0 {
		return nil, true, fmt.Errorf("deploy %q: %w", vm, &exceededError{msg: fmt.Sprintf(
			"the CPUs its policies allow (%s) have none in common with the host's %v", strings.Join(from, ", "), t.root.CPUs)})
	}
	return set, true, nil
}

// Entries returns every policy set with Set, parents before children,
// for the daemon to persist.
func (t *Tree) Entries() []Entry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := t.sorted()
	for i := range out {
		out[i].Policy = out[i].Policy.Clone()
	}
	return out
}

// CertificateEntries returns every policy recorded from a certificate,
// parents before children, for the daemon to persist.
func (t *Tree) CertificateEntries() []Entry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := sortEntries(t.certs)
	for i := range out {
		out[i].Policy = out[i].Policy.Clone()
	}
	return out
}

// LoadCertificates replaces every policy recorded from a certificate with
// entries, as read back from the daemon's store. It is all or nothing: it
// refuses the root, duplicate paths and invalid policies.
func (t *Tree) LoadCertificates(entries []Entry) error {
	m := make(map[string]Entry, len(entries))
	for _, e := range entries {
		if e.Path.IsRoot() {
			return errors.New(`load certificate policies: the root policy is discovered from the host and cannot be loaded`)
		}
		k := e.Path.String()
		if _, dup := m[k]; dup {
			return fmt.Errorf("load certificate policies: %q appears twice", k)
		}
		if err := e.Policy.Validate(); err != nil {
			return fmt.Errorf("load certificate policies: policy for %q: %w", k, err)
		}
		m[k] = Entry{Path: e.Path, Policy: e.Policy.Canonical()}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.certs = m
	return nil
}

// Load replaces every policy except the root's with entries, as read back
// from the daemon's store. It is all or nothing: it refuses the root,
// duplicate paths, invalid policies and policies larger than a loaded
// ancestor's. Policies larger than the root are accepted (the host may
// have shrunk since they were set) and reported by Conflicts.
func (t *Tree) Load(entries []Entry) error {
	m := make(map[string]Entry, len(entries))
	for _, e := range entries {
		if e.Path.IsRoot() {
			return errors.New(`load policies: the root policy is discovered from the host and cannot be loaded`)
		}
		k := e.Path.String()
		if _, dup := m[k]; dup {
			return fmt.Errorf("load policies: %q appears twice", k)
		}
		if err := e.Policy.Validate(); err != nil {
			return fmt.Errorf("load policies: policy for %q: %w", k, err)
		}
		m[k] = Entry{Path: e.Path, Policy: e.Policy.Canonical()}
	}
	for _, e := range m {
		for _, a := range e.Path.Ancestors() {
			pa, ok := m[a.String()]
			if !ok {
				continue
			}
			if err := e.Policy.Within(pa.Policy); err != nil {
				return fmt.Errorf("load policies: policy for %q exceeds the policy of %q: %w", e.Path, a, err)
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m = m
	return nil
}

// Conflicts describes, one line each, every effective policy that is not
// within the effective policy of one of its ancestors. Set and Load keep
// the policies set by owners free of them except against the root, so
// they appear when the host has shrunk or when an owner set a policy
// tighter than a certificate below it delegates; the daemon logs them at
// start-up so the owner can shrink the delegations. Deploys are bounded
// regardless, since they are checked against every ancestor.
func (t *Tree) Conflicts() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []string
	for _, e := range t.effective() {
		for _, a := range e.Path.Ancestors() {
			pa, ok := t.get(a)
			if !ok {
				continue
			}
			if err := e.Policy.Within(pa); err != nil {
				out = append(out, fmt.Sprintf("policy for %q exceeds the policy of %q: %v", e.Path, a, err))
			}
		}
	}
	return out
}

// CheckDeploy decides whether a VM named vm, taking want, may be
// deployed. It checks the policy of every ancestor of vm that has one,
// root first, against the usage of all VMs already under that ancestor
// plus want (counted as one VM, whatever want.VMs says): so sibling
// delegations together can never exceed their parent. CPUs and bridges
// must be allowed by every one of those policies. A resource the VM does
// not take (no block devices, say) is not checked, so a VM that adds
// nothing of it is not refused because the host has shrunk.
//
// usageUnder must not include the VM itself: for a force-create or a
// restart with new parameters, leave its old allocation out. Every
// problem is reported, on one line, and the error wraps ErrExceeded.
func (t *Tree) CheckDeploy(vm name.Path, want Usage, usageUnder func(name.Path) Usage) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var governing []Entry
	for _, a := range vm.Ancestors() {
		if p, ok := t.get(a); ok {
			governing = append(governing, Entry{Path: a, Policy: p})
		}
	}
	return CheckDeployAgainst(governing, vm, want, usageUnder)
}

// CheckDeployAgainst is CheckDeploy for policies that are not in a Tree,
// such as those a client's certificate chain carries: it applies every
// entry whose path is a proper ancestor of vm, in the order given, and
// ignores the others.
func CheckDeployAgainst(policies []Entry, vm name.Path, want Usage, usageUnder func(name.Path) Usage) error {
	if vm.IsRoot() {
		return errors.New(`deploy: a VM name needs at least one label`)
	}
	if want.MemoryMB < 0 || want.BlockMB < 0 {
		return fmt.Errorf("deploy %q: negative memory or block size requested", vm)
	}
	var probs []string
	for _, e := range policies {
		a, p := e.Path, e.Policy
		if a.Equal(vm) || !a.IsPrefixOf(vm) {
			continue
		}
		var used Usage
		if usageUnder != nil {
			used = usageUnder(a)
		}
		where := fmt.Sprintf("policy of %q: ", a)
		if n, ok := addInt(used.VMs, 1); !ok || n > p.VMs {
			probs = append(probs, fmt.Sprintf("%s%s VMs would exceed the limit of %d", where, sumText(used.VMs, 1, n, ok), p.VMs))
		}
		if n, ok := addInt(used.MemoryMB, want.MemoryMB); want.MemoryMB > 0 && (!ok || n > p.MemoryMB) {
			probs = append(probs, fmt.Sprintf("%s%s MB of memory would exceed the limit of %d MB", where, sumText(used.MemoryMB, want.MemoryMB, n, ok), p.MemoryMB))
		}
		if n, ok := addInt(used.BlockMB, want.BlockMB); want.BlockMB > 0 && (!ok || n > p.Block()) {
			if p.BlockMB == nil {
				probs = append(probs, fmt.Sprintf("%sno block storage allowed, %d MB requested", where, want.BlockMB))
			} else {
				probs = append(probs, fmt.Sprintf("%s%s MB of block storage would exceed the limit of %d MB", where, sumText(used.BlockMB, want.BlockMB, n, ok), p.Block()))
			}
		}
		if extra := missing(want.CPUs, p.CPUs); len(extra) > 0 {
			probs = append(probs, fmt.Sprintf("%scpus %v are not among the allowed %v", where, extra, p.CPUs))
		}
		if extra := missing(want.Bridges, p.Bridges); len(extra) > 0 {
			probs = append(probs, fmt.Sprintf("%sbridges %q are not among the allowed %q", where, extra, p.Bridges))
		}
	}
	if len(probs) > 0 {
		return fmt.Errorf("deploy %q: %w", vm, &exceededError{msg: strings.Join(probs, "; ")})
	}
	return nil
}

// sumText renders the sum of used and want for a refusal: the sum when it
// is exact (ok), else both terms, since the sum itself does not fit.
func sumText(used, want, sum int, ok bool) string {
	if ok {
		return fmt.Sprint(sum)
	}
	return fmt.Sprintf("%d + %d", used, want)
}

// sorted returns the policies set with Set, ordered label by label, so
// that a parent precedes its children; t.mu must be held. The policies
// are not copied.
func (t *Tree) sorted() []Entry { return sortEntries(t.m) }

// effective returns the effective policy of every non-root path that has
// a policy recorded, ordered like sorted; t.mu must be held. Policies
// recorded once are not copied.
func (t *Tree) effective() []Entry {
	out := make([]Entry, 0, len(t.m)+len(t.certs))
	for _, e := range t.m {
		p, _ := t.get(e.Path)
		out = append(out, Entry{Path: e.Path, Policy: p})
	}
	for k, e := range t.certs {
		if _, ok := t.m[k]; !ok {
			out = append(out, e)
		}
	}
	sortByPath(out)
	return out
}

// sortEntries returns the entries of m ordered label by label.
func sortEntries(m map[string]Entry) []Entry {
	out := make([]Entry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	sortByPath(out)
	return out
}

// sortByPath orders entries label by label, parents before children.
func sortByPath(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		return slices.Compare(a.Path.Labels(), b.Path.Labels())
	})
}
