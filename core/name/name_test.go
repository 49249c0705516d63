package name

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   string
		labels []string
	}{
		{"", ":", nil},
		{":", ":", nil},
		{"vm", "vm", []string{"vm"}},
		{"a:b:vm", "a:b:vm", []string{"a", "b", "vm"}},
		{":a:b", "a:b", []string{"a", "b"}},
		{"a-b.c:0", "a-b.c:0", []string{"a-b.c", "0"}},
		{"a.:.b", "a.:.b", []string{"a.", ".b"}},
		{"...x", "...x", []string{"...x"}},
		{"x-", "x-", []string{"x-"}},
		{strings.Repeat("a", 63), strings.Repeat("a", 63), []string{strings.Repeat("a", 63)}},
		{strings.Repeat("a:", 127) + "a", strings.Repeat("a:", 127) + "a", nil},
	} {
		p, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if p.String() != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, p.String(), tc.want)
		}
		if tc.labels != nil && !slices.Equal(p.Labels(), tc.labels) {
			t.Errorf("Parse(%q).Labels() = %q, want %q", tc.in, p.Labels(), tc.labels)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // substring of the error
	}{
		{"a::b", `label 2 is empty`},
		{"a:", `label 2 is empty`},
		{"::", `label 1 is empty`},
		{"::a", `label 1 is empty`},
		{"a_b", `"a_b" contains '_'`},
		{"Hello", `name "Hello": label 1 "Hello" contains the upper-case 'H': names are lower case, only a-z, 0-9, '.' and '-' (write "hello")`},
		{"team:Web.Front", `label 2 "Web.Front" contains the upper-case 'W'`},
		{"team:web.Front", `(write "web.front")`},
		{"a/b", `contains '/'`},
		{"a b", `contains ' '`},
		{"vm\n", `contains '\n'`},
		{"caf\u00e9", `contains byte 0xc3`},
		{"\u212a", `contains byte 0xe2`}, // Kelvin sign: must not become "k"
		{"ok:-bad", `label 2 "-bad" starts with '-'`},
		{".", `label 1 "." is made only of dots; a label needs at least one of a-z, 0-9 or '-'`},
		{"..", `label 1 ".." is made only of dots`},
		{"a:...", `label 2 "..." is made only of dots`},
		{":..:vm", `label 1 ".." is made only of dots`},
		{strings.Repeat("a", 64), `64 characters long, the limit is 63`},
		{strings.Repeat("a:", 128), `256 bytes long, the limit is 255`},
	} {
		_, err := Parse(tc.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %q, want it to mention %q", tc.in, err, tc.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q) error spans lines: %q", tc.in, err)
		}
	}
}

func TestParseVM(t *testing.T) {
	for _, s := range []string{"", ":"} {
		if _, err := ParseVM(s); err == nil {
			t.Errorf("ParseVM(%q) accepted the root", s)
		}
	}
	if _, err := ParseVM("a::b"); err == nil {
		t.Error("ParseVM accepted an empty label")
	}
	p, err := ParseVM("a:vm")
	if err != nil || p.String() != "a:vm" {
		t.Fatalf("ParseVM(a:vm) = %v, %v", p, err)
	}
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustParse of an invalid name did not panic")
		}
	}()
	MustParse("a::b")
}

func TestRootAndAccessors(t *testing.T) {
	var zero Path
	if !zero.IsRoot() || zero.String() != ":" || zero.Last() != "" || len(zero.Labels()) != 0 {
		t.Fatalf("zero value is not the root: %q", zero)
	}
	if !zero.Parent().IsRoot() || len(zero.Ancestors()) != 0 {
		t.Fatal("root has a parent or ancestors")
	}
	if !Root.Equal(MustParse(":")) || !Root.Equal(MustParse("")) {
		t.Fatal("Root differs from parsed root")
	}

	p := MustParse("a:b:vm")
	if p.Last() != "vm" || p.Parent().String() != "a:b" || p.Parent().Parent().Parent().String() != ":" {
		t.Fatalf("accessors wrong for %q", p)
	}
	labels := p.Labels()
	labels[0] = "mutated"
	if p.String() != "a:b:vm" {
		t.Fatal("Labels exposed internal storage")
	}
}

func TestChild(t *testing.T) {
	p := MustParse("a:b")
	c1, err := p.Child("vm1")
	if err != nil || c1.String() != "a:b:vm1" {
		t.Fatalf("Child = %v, %v", c1, err)
	}
	// Children of a shared parent must not alias each other.
	parent := MustParse("a:b:c").Parent()
	x, _ := parent.Child("x")
	y, _ := parent.Child("y")
	if x.String() != "a:b:x" || y.String() != "a:b:y" {
		t.Fatalf("children alias: %q %q", x, y)
	}
	for _, bad := range []string{".", "..", "", "-x", "a:b", "a/b", "Vm1", strings.Repeat("z", 64)} {
		if _, err := p.Child(bad); err == nil {
			t.Errorf("Child(%q) succeeded", bad)
		}
	}
	long := MustParse(strings.Repeat("a:", 126) + "a") // 253 bytes
	if _, err := long.Child("bb"); err == nil {
		t.Error("Child exceeded MaxLength")
	}
	if _, err := long.Child("b"); err != nil {
		t.Errorf("Child reaching exactly MaxLength: %v", err)
	}
	root, err := Root.Child("top")
	if err != nil || root.String() != "top" {
		t.Fatalf("Root.Child = %v, %v", root, err)
	}
}

func TestAncestry(t *testing.T) {
	for _, tc := range []struct {
		p, q string
		want bool
	}{
		{":", ":", true},
		{":", "a:b", true},
		{"a", "a:b", true},
		{"a:b", "a:b", true},
		{"a:b", "a", false},
		{"a", "ab", false},
		{"a:b", "a:bc", false},
		{"b", "a:b", false},
		{"a:b", ":", false},
	} {
		if got := MustParse(tc.p).IsPrefixOf(MustParse(tc.q)); got != tc.want {
			t.Errorf("%q.IsPrefixOf(%q) = %v, want %v", tc.p, tc.q, got, tc.want)
		}
	}

	var got []string
	for _, a := range MustParse("a:b:vm").Ancestors() {
		got = append(got, a.String())
	}
	if want := []string{":", "a", "a:b"}; !slices.Equal(got, want) {
		t.Fatalf("Ancestors = %q, want %q", got, want)
	}
	for _, a := range MustParse("a:b:vm").Ancestors() {
		if !a.IsPrefixOf(MustParse("a:b:vm")) {
			t.Errorf("ancestor %q is not a prefix", a)
		}
	}
}

func TestEqual(t *testing.T) {
	if !MustParse("a:b").Equal(MustParse(":a:b")) {
		t.Error("equal names differ")
	}
	if MustParse("a:b").Equal(MustParse("a")) || MustParse("a:b").Equal(MustParse("a:c")) {
		t.Error("different names are equal")
	}
}

func TestFileKey(t *testing.T) {
	for _, tc := range []struct{ name, key string }{
		{":", ":"},
		{"vm", "vm"},
		{"a:b:vm", "a:b:vm"},
		{".a", ".a"},
		{"a.:..b", "a.:..b"},
	} {
		p := MustParse(tc.name)
		k := p.FileKey()
		if k != tc.key {
			t.Errorf("%q.FileKey() = %q, want %q", tc.name, k, tc.key)
		}
		if k == "" || k == "." || k == ".." || strings.ContainsAny(k, "/\x00") {
			t.Errorf("%q.FileKey() = %q is not a safe file name", tc.name, k)
		}
		back, err := FromFileKey(k)
		if err != nil || !back.Equal(p) {
			t.Errorf("FromFileKey(%q) = %q, %v; want %q", k, back, err, p)
		}
	}
	for _, bad := range []string{"", ".", "..", "...", "%2e", "%2e%2e", "a:..", "A", ":a", "a::b", "%2e:a", "a:%2e", "%2E", "a/b", "%", strings.Repeat("a:", 128)} {
		if p, err := FromFileKey(bad); err == nil {
			t.Errorf("FromFileKey(%q) = %q, want an error", bad, p)
		}
	}
}

func TestJSON(t *testing.T) {
	type rec struct {
		Name Path `json:"name"`
	}
	b, err := json.Marshal(rec{Name: MustParse("a:vm")})
	if err != nil || string(b) != `{"name":"a:vm"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var r rec
	if err := json.Unmarshal([]byte(`{"name":"x:y"}`), &r); err != nil || r.Name.String() != "x:y" {
		t.Fatalf("Unmarshal = %q, %v", r.Name, err)
	}
	if err := json.Unmarshal([]byte(`{"name":"X:Y"}`), &r); err == nil {
		t.Fatal("Unmarshal accepted an upper-case name")
	}
	if err := json.Unmarshal([]byte(`{"name":"a::b"}`), &r); err == nil {
		t.Fatal("Unmarshal accepted an invalid name")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", ":", "a:b:vm", ":a", ".", "..", "a::b", "-a", "A:B", "\u212a", strings.Repeat("a", 64), "%2e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error for %q: %q", s, err)
			}
			return
		}
		str := p.String()
		if len(str) > MaxLength {
			t.Fatalf("Parse(%q) gave %d bytes", s, len(str))
		}
		q, err := Parse(str)
		if err != nil || !q.Equal(p) {
			t.Fatalf("Parse(%q) = %q, %v; want %q", str, q, err, p)
		}
		k := p.FileKey()
		if k == "" || k == "." || k == ".." || strings.ContainsAny(k, "/\x00") || len(k) > MaxLength {
			t.Fatalf("unsafe file key %q for %q", k, p)
		}
		r, err := FromFileKey(k)
		if err != nil || !r.Equal(p) {
			t.Fatalf("FromFileKey(%q) = %q, %v; want %q", k, r, err, p)
		}
		if fk, err := FromFileKey(s); err == nil && fk.FileKey() != s {
			t.Fatalf("FromFileKey accepted non-canonical key %q", s)
		}
	})
}
