package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func intp(n int) *int { return &n }

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		want string // substring of the error; "" means valid
	}{
		{"zero", Policy{}, ""},
		{"full", Policy{VMs: 4, CPUs: []int{0, 3}, MemoryMB: 1024, BlockMB: intp(100), Bridges: []string{"br0", "service"}}, ""},
		{"block zero", Policy{BlockMB: intp(0)}, ""},
		{"fifteen bytes", Policy{Bridges: []string{"abcdefghijklmno"}}, ""},
		{"negative vms", Policy{VMs: -1}, "vms -1 is outside"},
		{"too many vms", Policy{VMs: MaxVMs + 1}, "vms 1048577 is outside"},
		{"negative memory", Policy{MemoryMB: -5}, "memory -5 MB"},
		{"negative block", Policy{BlockMB: intp(-1)}, "block -1 MB"},
		{"negative cpu", Policy{CPUs: []int{-1}}, "cpu id -1"},
		{"huge cpu", Policy{CPUs: []int{MaxCPUID + 1}}, "cpu id 8192"},
		{"duplicate cpu", Policy{CPUs: []int{1, 2, 1}}, "cpu id 1 is listed twice"},
		{"empty bridge", Policy{Bridges: []string{""}}, "bridge name is empty"},
		{"long bridge", Policy{Bridges: []string{"abcdefghijklmnop"}}, "16 bytes long, the limit is 15"},
		{"slash bridge", Policy{Bridges: []string{"a/b"}}, `contains '/'`},
		{"colon bridge", Policy{Bridges: []string{"a:b"}}, `contains ':'`},
		{"space bridge", Policy{Bridges: []string{"a b"}}, `contains ' '`},
		{"dot bridge", Policy{Bridges: []string{".."}}, `".." is not allowed`},
		{"non-ascii bridge", Policy{Bridges: []string{"brü"}}, `contains`},
		{"duplicate bridge", Policy{Bridges: []string{"br0", "br0"}}, `bridge "br0" is listed twice`},
	} {
		err := tc.p.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: Validate() = %v, want nil", tc.name, err)
		case tc.want != "" && err == nil:
			t.Errorf("%s: Validate() = nil, want error containing %q", tc.name, tc.want)
		case tc.want != "" && !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: Validate() = %v, want it to contain %q", tc.name, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "\n"):
			t.Errorf("%s: error spans lines: %q", tc.name, err)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	err := Policy{VMs: -1, MemoryMB: -1, CPUs: []int{-2}}.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	for _, want := range []string{"vms -1", "memory -1", "cpu id -2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestWithin(t *testing.T) {
	parent := Policy{VMs: 2, CPUs: []int{0, 1}, MemoryMB: 1024, BlockMB: intp(100), Bridges: []string{"br0", "br1"}}
	for _, tc := range []struct {
		name   string
		child  Policy
		parent Policy
		want   []string // substrings; nil means within
	}{
		{"equal", parent, parent, nil},
		{"smaller", Policy{VMs: 1, CPUs: []int{1}, MemoryMB: 512, BlockMB: intp(10), Bridges: []string{"br1"}}, parent, nil},
		{"empty", Policy{}, parent, nil},
		{"nil block under block", Policy{}, parent, nil},
		{"zero block under nil", Policy{BlockMB: intp(0)}, Policy{}, nil},
		{"nil block under nil", Policy{}, Policy{}, nil},
		{"vms", Policy{VMs: 3}, parent, []string{"vms 3 > 2"}},
		{"memory", Policy{MemoryMB: 2048}, parent, []string{"memory 2048 MB > 1024 MB"}},
		{"block", Policy{BlockMB: intp(101)}, parent, []string{"block 101 MB > 100 MB"}},
		{"block under nil", Policy{BlockMB: intp(1)}, Policy{}, []string{"block 1 MB > none"}},
		{"cpus", Policy{CPUs: []int{0, 2, 3}}, parent, []string{"cpus [2 3] not in [0 1]"}},
		{"bridges", Policy{Bridges: []string{"br2"}}, parent, []string{`bridges ["br2"] not in`}},
		{"every field", Policy{VMs: 9, MemoryMB: 9999, BlockMB: intp(999), CPUs: []int{7}, Bridges: []string{"x"}}, parent,
			[]string{"vms 9 > 2", "memory 9999 MB", "block 999 MB", "cpus [7]", `bridges ["x"]`}},
	} {
		err := tc.child.Within(tc.parent)
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: Within() = %v, want nil", tc.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: Within() = nil, want %q", tc.name, tc.want)
			continue
		}
		if !errors.Is(err, ErrExceeded) {
			t.Errorf("%s: error %v does not wrap ErrExceeded", tc.name, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: Within() = %q, want it to contain %q", tc.name, err, w)
			}
		}
	}
}

func TestWithinIsTransitive(t *testing.T) {
	a := Policy{VMs: 4, CPUs: []int{0, 1, 2}, MemoryMB: 4096, BlockMB: intp(100), Bridges: []string{"a", "b"}}
	b := Policy{VMs: 2, CPUs: []int{1, 2}, MemoryMB: 2048, BlockMB: intp(50), Bridges: []string{"b"}}
	c := Policy{VMs: 1, CPUs: []int{2}, MemoryMB: 100, Bridges: []string{"b"}}
	if b.Within(a) != nil || c.Within(b) != nil || c.Within(a) != nil {
		t.Fatalf("chain a ⊇ b ⊇ c not within: %v %v %v", b.Within(a), c.Within(b), c.Within(a))
	}
}

func TestCanonicalAndJSON(t *testing.T) {
	p := Policy{VMs: 1, CPUs: []int{3, 1, 3}, MemoryMB: 10, BlockMB: intp(0), Bridges: []string{"b", "a"}}
	c := p.Canonical()
	if got := c.String(); got != "vms 1, cpus [1 3], memory 10 MB, block 0 MB, bridges [a b]" {
		t.Errorf("Canonical().String() = %q", got)
	}
	if !p.Equal(c) {
		t.Error("policy not Equal to its canonical form")
	}
	q := c.Clone()
	q.BlockMB = nil
	if c.Equal(q) {
		t.Error("nil and zero BlockMB compare equal")
	}
	*c.BlockMB = 5
	if *p.BlockMB != 0 {
		t.Error("Canonical shares BlockMB with the original")
	}
	b, err := json.Marshal(Policy{VMs: 2, MemoryMB: 3}.Canonical())
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"vms":2,"cpus":[],"memory_mb":3,"bridges":[]}` {
		t.Errorf("JSON = %s", b)
	}
	var back Policy
	if err := json.Unmarshal([]byte(`{"vms":2,"cpus":[0],"memory_mb":3,"block_mb":7,"bridges":["br0"]}`), &back); err != nil {
		t.Fatal(err)
	}
	if back.Block() != 7 || back.VMs != 2 || back.Bridges[0] != "br0" {
		t.Errorf("decoded %v", back)
	}
}
