package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/petrel-vmm/petrel/core/name"
)

var p = name.MustParse

func hostRoot() Policy {
	return Policy{VMs: 100, CPUs: []int{0, 1, 2, 3}, MemoryMB: 16384, BlockMB: intp(10000), Bridges: []string{"br0", "br1", "br2"}}
}

func newTree(t *testing.T) *Tree {
	t.Helper()
	tr, err := NewTree(hostRoot())
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func mustSet(t *testing.T, tr *Tree, path string, pol Policy) {
	t.Helper()
	if err := tr.Set(p(path), pol, nil); err != nil {
		t.Fatalf("Set(%q): %v", path, err)
	}
}

func wantErr(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want one containing %q", subs)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error spans lines: %q", err)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

func TestSetChecksAncestors(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 4, CPUs: []int{0, 1}, MemoryMB: 4096, BlockMB: intp(100), Bridges: []string{"br0"}})
	// No policy at "a:b": "a:b:c" is checked against "a" (and the root).
	err := tr.Set(p("a:b:c"), Policy{VMs: 5, MemoryMB: 100}, nil)
	wantErr(t, err, `policy for "a:b:c" exceeds the policy of "a"`, "vms 5 > 4")
	if !errors.Is(err, ErrExceeded) {
		t.Errorf("%v does not wrap ErrExceeded", err)
	}
	wantErr(t, tr.Set(p("x"), Policy{CPUs: []int{4}}, nil), `exceeds the policy of ":"`, "cpus [4] not in [0 1 2 3]")
	wantErr(t, tr.Set(p("a:b"), Policy{Bridges: []string{"br1"}}, nil), `bridges ["br1"] not in ["br0"]`)
	wantErr(t, tr.Set(p("a:b"), Policy{BlockMB: intp(101)}, nil), "block 101 MB > 100 MB")
	mustSet(t, tr, "a:b", Policy{VMs: 2, CPUs: []int{1}, MemoryMB: 1024, Bridges: []string{"br0"}})
	// Nil block at "a:b" allows none below it.
	wantErr(t, tr.Set(p("a:b:c"), Policy{BlockMB: intp(1)}, nil), `exceeds the policy of "a:b"`, "block 1 MB > none")
	mustSet(t, tr, "a:b:c", Policy{VMs: 1, MemoryMB: 512, BlockMB: intp(0)})
}

func TestSetChecksEveryAncestorNotOnlyNearest(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 10, MemoryMB: 8000})
	// The host shrinks: "a" now exceeds the root, and "a:b" fits "a" but
	// not the root.
	shrunk := hostRoot()
	shrunk.MemoryMB = 2000
	if err := tr.SetRoot(shrunk); err != nil {
		t.Fatal(err)
	}
	wantErr(t, tr.Set(p("a:b"), Policy{VMs: 1, MemoryMB: 4000}, nil), `exceeds the policy of ":"`, "memory 4000 MB > 2000 MB")
	mustSet(t, tr, "a:b", Policy{VMs: 1, MemoryMB: 1000})
	c := tr.Conflicts()
	if len(c) != 1 || !strings.Contains(c[0], `policy for "a" exceeds the policy of ":"`) {
		t.Errorf("Conflicts() = %q", c)
	}
}

func TestSetChecksDescendants(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 10, CPUs: []int{0, 1}, MemoryMB: 8000})
	mustSet(t, tr, "a:b:c", Policy{VMs: 3, CPUs: []int{1}, MemoryMB: 1000})
	wantErr(t, tr.Set(p("a"), Policy{VMs: 2, CPUs: []int{0}, MemoryMB: 8000}, nil),
		`policy for "a" is smaller than the existing policy of "a:b:c"`, "vms 3 > 2", "cpus [1] not in [0]")
	wantErr(t, tr.Set(p("a:b"), Policy{VMs: 3, CPUs: []int{1}, MemoryMB: 999}, nil), `"a:b:c"`, "memory 1000 MB > 999 MB")
	// Replacing a policy by a smaller one that still covers descendants.
	mustSet(t, tr, "a", Policy{VMs: 3, CPUs: []int{1}, MemoryMB: 1000})
	// A sibling with a common prefix string is not a descendant.
	mustSet(t, tr, "a-b", Policy{VMs: 50})
	mustSet(t, tr, "a", Policy{VMs: 3, CPUs: []int{1}, MemoryMB: 1000})
}

func TestSetChecksUsage(t *testing.T) {
	tr := newTree(t)
	allocs := []Allocation{
		{VM: p("a:vm1"), Usage: Usage{CPUs: []int{0}, MemoryMB: 512, BlockMB: 10, Bridges: []string{"br0"}}},
		{VM: p("a:b:vm2"), Usage: Usage{CPUs: []int{1}, MemoryMB: 512, Bridges: []string{"br1"}}},
		{VM: p("a"), Usage: Usage{MemoryMB: 9000}},     // governed by the root, not by "a"
		{VM: p("other"), Usage: Usage{MemoryMB: 9000}}, // elsewhere
	}
	under := UsageFunc(allocs)
	ok := Policy{VMs: 2, CPUs: []int{0, 1}, MemoryMB: 1024, BlockMB: intp(10), Bridges: []string{"br0", "br1"}}
	if err := tr.Set(p("a"), ok, under); err != nil {
		t.Fatalf("Set with usage that fits: %v", err)
	}
	for _, tc := range []struct {
		mod  func(*Policy)
		want string
	}{
		{func(q *Policy) { q.VMs = 1 }, "2 VMs > 1"},
		{func(q *Policy) { q.MemoryMB = 1000 }, "memory 1024 MB > 1000 MB"},
		{func(q *Policy) { q.BlockMB = nil }, "block 10 MB > 0 MB"},
		{func(q *Policy) { q.CPUs = []int{0} }, "cpus [1] in use are not in [0]"},
		{func(q *Policy) { q.Bridges = []string{"br1"} }, `bridges ["br0"] in use`},
	} {
		q := ok.Clone()
		tc.mod(&q)
		err := tr.Set(p("a"), q, under)
		wantErr(t, err, `policy for "a" is below the current usage under it`, tc.want)
		if !errors.Is(err, ErrExceeded) {
			t.Errorf("%v does not wrap ErrExceeded", err)
		}
	}
	got, _ := tr.Get(p("a"))
	if !got.Equal(ok) {
		t.Errorf("refused Set changed the policy to %v", got)
	}
}

// The case Albatross gets wrong: a parent allowing 2 VMs whose two
// children each allow 2 admits 2 VMs in total, not 4.
func TestAggregateDelegation(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 2, CPUs: []int{0}, MemoryMB: 2048})
	mustSet(t, tr, "a:x", Policy{VMs: 2, CPUs: []int{0}, MemoryMB: 2048})
	mustSet(t, tr, "a:y", Policy{VMs: 2, CPUs: []int{0}, MemoryMB: 2048})
	var allocs []Allocation
	deploy := func(vm string) error {
		want := Usage{VMs: 1, CPUs: []int{0}, MemoryMB: 256}
		if err := tr.CheckDeploy(p(vm), want, UsageFunc(allocs)); err != nil {
			return err
		}
		allocs = append(allocs, Allocation{VM: p(vm), Usage: want})
		return nil
	}
	if err := deploy("a:x:one"); err != nil {
		t.Fatal(err)
	}
	if err := deploy("a:y:one"); err != nil {
		t.Fatal(err)
	}
	for _, vm := range []string{"a:x:two", "a:y:two", "a:three", "a:z:three"} {
		err := deploy(vm)
		wantErr(t, err, `policy of "a": 3 VMs would exceed the limit of 2`)
		if !errors.Is(err, ErrExceeded) {
			t.Errorf("%v does not wrap ErrExceeded", err)
		}
		if strings.Contains(err.Error(), `policy of "a:x"`) || strings.Contains(err.Error(), `policy of "a:y"`) {
			t.Errorf("%s: child policy blamed: %v", vm, err)
		}
	}
	if err := deploy("b:free"); err != nil {
		t.Errorf("VM outside a: %v", err)
	}
}

func TestCheckDeploy(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 3, CPUs: []int{0, 1}, MemoryMB: 1024, BlockMB: intp(100), Bridges: []string{"br0", "br1"}})
	mustSet(t, tr, "a:b", Policy{VMs: 3, CPUs: []int{1}, MemoryMB: 1024, Bridges: []string{"br1"}})
	allocs := []Allocation{{VM: p("a:vm0"), Usage: Usage{MemoryMB: 600, BlockMB: 60}}}
	under := UsageFunc(allocs)
	for _, tc := range []struct {
		vm   string
		want Usage
		errs []string
	}{
		{"a:vm", Usage{CPUs: []int{0}, MemoryMB: 424, BlockMB: 40, Bridges: []string{"br0"}}, nil},
		{"a:b:vm", Usage{CPUs: []int{1}, MemoryMB: 100, Bridges: []string{"br1"}}, nil},
		{"a:vm", Usage{MemoryMB: 425}, []string{`policy of "a": 1025 MB of memory would exceed the limit of 1024 MB`}},
		{"a:vm", Usage{MemoryMB: 1, BlockMB: 41}, []string{`policy of "a": 101 MB of block storage would exceed the limit of 100 MB`}},
		{"a:b:vm", Usage{MemoryMB: 1, BlockMB: 1}, []string{`policy of "a:b": no block storage allowed, 1 MB requested`}},
		{"a:vm", Usage{MemoryMB: 1, CPUs: []int{2}}, []string{`policy of "a": cpus [2] are not among the allowed [0 1]`}},
		{"a:b:vm", Usage{MemoryMB: 1, CPUs: []int{0}}, []string{`policy of "a:b": cpus [0]`}},
		{"a:b:vm", Usage{MemoryMB: 1, Bridges: []string{"br0"}}, []string{`policy of "a:b": bridges ["br0"] are not among the allowed ["br1"]`}},
		{"a:vm", Usage{MemoryMB: 1, Bridges: []string{"br9"}}, []string{`policy of ":": bridges ["br9"]`, `policy of "a": bridges ["br9"]`}},
		{"c:vm", Usage{MemoryMB: 20000}, []string{`policy of ":": 20600 MB of memory would exceed the limit of 16384 MB`}},
	} {
		err := tr.CheckDeploy(p(tc.vm), tc.want, under)
		if tc.errs == nil {
			if err != nil {
				t.Errorf("CheckDeploy(%s, %+v) = %v", tc.vm, tc.want, err)
			}
			continue
		}
		wantErr(t, err, tc.errs...)
	}
	wantErr(t, tr.CheckDeploy(name.Root, Usage{}, nil), "needs at least one label")
	wantErr(t, tr.CheckDeploy(p("a:vm"), Usage{MemoryMB: -1}, nil), "negative")
}

func TestCheckDeployAgainst(t *testing.T) {
	entries := []Entry{
		{Path: name.Root, Policy: Policy{VMs: 10, CPUs: []int{0, 1}, MemoryMB: 1000}},
		{Path: p("a"), Policy: Policy{VMs: 1, CPUs: []int{1}, MemoryMB: 100}},
		{Path: p("b"), Policy: Policy{}},      // not an ancestor
		{Path: p("a:vm"), Policy: Policy{}},   // the VM's own path
		{Path: p("a:vm:x"), Policy: Policy{}}, // below the VM
	}
	if err := CheckDeployAgainst(entries, p("a:vm"), Usage{CPUs: []int{1}, MemoryMB: 100}, nil); err != nil {
		t.Fatal(err)
	}
	wantErr(t, CheckDeployAgainst(entries, p("a:vm"), Usage{CPUs: []int{0}, MemoryMB: 101}, nil),
		`policy of "a": 101 MB of memory would exceed the limit of 100 MB; policy of "a": cpus [0] are not among the allowed [1]`)
}

func TestCheckDeployRootOnly(t *testing.T) {
	tr, err := NewTree(Policy{VMs: 1, MemoryMB: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.CheckDeploy(p("vm"), Usage{MemoryMB: 100}, nil); err != nil {
		t.Fatal(err)
	}
	under := UsageFunc([]Allocation{{VM: p("vm"), Usage: Usage{MemoryMB: 100}}})
	wantErr(t, tr.CheckDeploy(p("vm2"), Usage{MemoryMB: 1}, under),
		`policy of ":": 2 VMs would exceed the limit of 1`, `101 MB of memory`)
}

func TestRootAndRemove(t *testing.T) {
	tr := newTree(t)
	wantErr(t, tr.Set(name.Root, Policy{}, nil), "cannot be set")
	wantErr(t, tr.Remove(name.Root), "cannot be removed")
	err := tr.Remove(p("nope"))
	wantErr(t, err, `policy for "nope"`)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("%v does not wrap ErrNotFound", err)
	}
	mustSet(t, tr, "a", Policy{VMs: 1})
	if err := tr.Remove(p("a")); err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.Get(p("a")); ok {
		t.Error("policy still present after Remove")
	}
	root, ok := tr.Get(name.Root)
	if !ok || !root.Equal(hostRoot()) {
		t.Errorf("Get(root) = %v, %v", root, ok)
	}
	if _, err := NewTree(Policy{VMs: -1}); err == nil {
		t.Error("NewTree accepted an invalid root")
	}
	if err := tr.SetRoot(Policy{VMs: -1}); err == nil {
		t.Error("SetRoot accepted an invalid policy")
	}
	wantErr(t, tr.Set(p("a"), Policy{VMs: -1}, nil), `policy for "a": invalid policy`)
}

func TestGetReturnsCopy(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 1, CPUs: []int{0}, BlockMB: intp(5)})
	got, _ := tr.Get(p("a"))
	got.CPUs[0] = 3
	*got.BlockMB = 6
	again, _ := tr.Get(p("a"))
	if again.CPUs[0] != 0 || *again.BlockMB != 5 {
		t.Errorf("Get exposed internal state: %v", again)
	}
}

func TestListEntriesLoad(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "b", Policy{VMs: 1})
	mustSet(t, tr, "a", Policy{VMs: 5, MemoryMB: 10})
	mustSet(t, tr, "a:z", Policy{VMs: 2, MemoryMB: 10})
	mustSet(t, tr, "a:c:d", Policy{VMs: 1})
	mustSet(t, tr, "a-b", Policy{VMs: 1})
	paths := func(es []Entry) string {
		var s []string
		for _, e := range es {
			s = append(s, e.Path.String())
		}
		return strings.Join(s, " ")
	}
	if got := paths(tr.List(name.Root)); got != ": a a:c:d a:z a-b b" {
		t.Errorf("List(root) = %s", got)
	}
	if got := paths(tr.List(p("a"))); got != "a a:c:d a:z" {
		t.Errorf("List(a) = %s", got)
	}
	if got := paths(tr.List(p("zz"))); got != "" {
		t.Errorf("List(zz) = %s", got)
	}

	b, err := json.Marshal(tr.Entries())
	if err != nil {
		t.Fatal(err)
	}
	var back []Entry
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	tr2 := newTree(t)
	if err := tr2.Load(back); err != nil {
		t.Fatal(err)
	}
	if got := paths(tr2.Entries()); got != "a a:c:d a:z a-b b" {
		t.Errorf("Entries after Load = %s", got)
	}
	if got, _ := tr2.Get(p("a:z")); got.VMs != 2 {
		t.Errorf("loaded a:z = %v", got)
	}
	if c := tr2.Conflicts(); len(c) != 0 {
		t.Errorf("Conflicts() = %q", c)
	}

	for _, tc := range []struct {
		entries []Entry
		want    string
	}{
		{[]Entry{{Path: name.Root}}, "cannot be loaded"},
		{[]Entry{{Path: p("a")}, {Path: p("a")}}, `"a" appears twice`},
		{[]Entry{{Path: p("a"), Policy: Policy{VMs: -1}}}, `policy for "a": invalid`},
		{[]Entry{{Path: p("a:b"), Policy: Policy{VMs: 2}}, {Path: p("a"), Policy: Policy{VMs: 1}}}, `policy for "a:b" exceeds the policy of "a"`},
	} {
		wantErr(t, tr2.Load(tc.entries), tc.want)
	}
	if got := paths(tr2.Entries()); got != "a a:c:d a:z a-b b" {
		t.Errorf("failed Load changed the tree: %s", got)
	}
}

func TestGoverning(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 5})
	mustSet(t, tr, "a:b:c", Policy{VMs: 1})
	mustSet(t, tr, "a:b:c:vm", Policy{VMs: 1}) // a policy at the VM's own path does not govern it
	var got []string
	for _, e := range tr.Governing(p("a:b:c:vm")) {
		got = append(got, e.Path.String())
	}
	if strings.Join(got, " ") != ": a a:b:c" {
		t.Errorf("Governing = %q", got)
	}
}

func TestConcurrent(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 50, CPUs: []int{0, 1}, MemoryMB: 8000})
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		allocs []Allocation
	)
	under := func(path name.Path) Usage {
		mu.Lock()
		defer mu.Unlock()
		return Sum(path, allocs)
	}
	var deployMu sync.Mutex // the daemon serialises check-and-record
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			child := p(fmt.Sprintf("a:g%d", g))
			for i := 0; i < 50; i++ {
				_ = tr.Set(child, Policy{VMs: 5, CPUs: []int{g % 2}, MemoryMB: 1000}, under)
				_, _ = tr.Get(child)
				_ = tr.List(name.Root)
				_ = tr.Entries()
				_ = tr.Conflicts()
				vm, _ := child.Child(fmt.Sprintf("vm%d", i))
				want := Usage{CPUs: []int{g % 2}, MemoryMB: 100}
				deployMu.Lock()
				if tr.CheckDeploy(vm, want, under) == nil {
					mu.Lock()
					allocs = append(allocs, Allocation{VM: vm, Usage: want})
					mu.Unlock()
				}
				deployMu.Unlock()
				if i%10 == 9 {
					_ = tr.Remove(child)
				}
			}
		}()
	}
	wg.Wait()
	total := Sum(p("a"), allocs)
	if total.VMs > 50 || total.MemoryMB > 8000 {
		t.Errorf("admitted %d VMs, %d MB under a, over its policy", total.VMs, total.MemoryMB)
	}
	if total.VMs == 0 {
		t.Error("no VM admitted")
	}
}

func TestUsageAdd(t *testing.T) {
	u := Usage{VMs: 1, CPUs: []int{2, 0}, MemoryMB: 10, BlockMB: 1, Bridges: []string{"b"}}
	v := Usage{VMs: 2, CPUs: []int{0, 1}, MemoryMB: 5, Bridges: []string{"a", "b"}}
	w := u.Add(v)
	if w.VMs != 3 || w.MemoryMB != 15 || w.BlockMB != 1 || fmt.Sprint(w.CPUs) != "[0 1 2]" || fmt.Sprint(w.Bridges) != "[a b]" {
		t.Errorf("Add = %+v", w)
	}
	if fmt.Sprint(u.CPUs) != "[2 0]" {
		t.Errorf("Add modified its receiver: %v", u.CPUs)
	}
}

// TestCPUs: a VM pinned to no CPU runs within the CPUs every governing
// policy lists (a policy without CPUs confines nothing by itself), is not
// confined when no policy below the root lists any, and cannot run when
// its policies share no CPU with the host.
func TestCPUs(t *testing.T) {
	tr := newTree(t)
	mustSet(t, tr, "a", Policy{VMs: 4, CPUs: []int{1, 2, 3}, MemoryMB: 4096})
	mustSet(t, tr, "a:b", Policy{VMs: 2, CPUs: []int{2, 3}, MemoryMB: 1024})
	mustSet(t, tr, "a:b:c", Policy{VMs: 1, MemoryMB: 512})
	mustSet(t, tr, "x", Policy{VMs: 1, MemoryMB: 512})
	for _, c := range []struct {
		vm       string
		cpus     []int
		confined bool
	}{
		{"vm", nil, false},
		{"x:vm", nil, false},
		{"a:vm", []int{1, 2, 3}, true},
		{"a:b:vm", []int{2, 3}, true},
		{"a:b:c:vm", []int{2, 3}, true},
		{"a:b:c:d:vm", []int{2, 3}, true},
	} {
		cpus, confined, err := tr.CPUs(p(c.vm))
		if err != nil || confined != c.confined || fmt.Sprint(cpus) != fmt.Sprint(c.cpus) {
			t.Errorf("CPUs(%s) = %v, %v, %v; want %v, %v", c.vm, cpus, confined, err, c.cpus, c.confined)
		}
	}
	shrunk := hostRoot()
	shrunk.CPUs = []int{0, 1}
	if err := tr.SetRoot(shrunk); err != nil {
		t.Fatal(err)
	}
	if cpus, _, err := tr.CPUs(p("a:vm")); err != nil || fmt.Sprint(cpus) != "[1]" {
		t.Errorf("CPUs(a:vm) on a shrunk host = %v, %v; want [1]", cpus, err)
	}
	_, confined, err := tr.CPUs(p("a:b:c:vm"))
	wantErr(t, err, `"a:b" [2 3]`, "none in common with the host's [0 1]")
	if !confined || !errors.Is(err, ErrExceeded) {
		t.Errorf("CPUs(a:b:c:vm) on a shrunk host: confined %v, %v", confined, err)
	}
}
