// Package name implements Albatross-compatible names for VMs and policies,
// so that operators moving from Albatross keep the same naming scheme and
// the same hierarchical resource policies.
//
// A name is a path of labels joined by ':', for example "a:b:vm". Each
// label is 1–63 characters from [a-z0-9.-], must not start with '-' and
// must not be made only of dots: "." and ".." would name the directory
// entries of the same names wherever a name becomes a file, and a label of
// dots alone names nothing a reader could tell apart.
// Upper-case letters are refused, not lower-cased: a name is what its user
// typed or nothing, so "Web" never turns into an existing "web" behind
// their back (and the refusal says which lower-case name is valid). The
// path with no labels is the
// root; it is written ":" and also parsed from the empty string. Policies
// attach to any path, including the root; a VM name is a non-empty path,
// and the policies of all its ancestors apply to it.
package name

import (
	"errors"
	"fmt"
	"strings"
)

const (
	// MaxLabelLength is the longest label Albatross accepts; longer labels
	// would not round-trip through Albatross tooling.
	MaxLabelLength = 63
	// MaxLength bounds the canonical string form of a path so that a
	// name always fits in a single file name (see Path.FileKey) and in
	// log lines and socket messages without truncation.
	MaxLength = 255
)

// Path is a hierarchical VM or policy name. It is immutable: every method
// returns fresh values, so a Path can be shared between goroutines and
// used as a value in records. The zero value is the root.
type Path struct {
	labels []string
}

// Root is the path with no labels. Policies attached to it apply to every
// VM.
var Root = Path{}

// Parse parses the string form of a path. It accepts ":" and "" as the
// root and tolerates one leading ':' (":a:b" is "a:b"), because Albatross
// tools print names both ways. Errors name the offending label and the
// reason, on one line.
func Parse(s string) (Path, error) {
	rest := strings.TrimPrefix(s, ":")
	if rest == "" {
		return Path{}, nil
	}
	if len(rest) > MaxLength {
		return Path{}, fmt.Errorf("name %.40q...: %d bytes long, the limit is %d", s, len(rest), MaxLength)
	}
	parts := strings.Split(rest, ":")
	for i, l := range parts {
		if err := checkLabel(l); err != nil {
			return Path{}, fmt.Errorf("name %q: label %d %w", s, i+1, err)
		}
	}
	return Path{labels: parts}, nil
}

// ParseVM parses a VM name, which unlike a policy name cannot be the root:
// a VM always needs a label of its own.
func ParseVM(s string) (Path, error) {
	p, err := Parse(s)
	if err != nil {
		return Path{}, err
	}
	if p.IsRoot() {
		return Path{}, fmt.Errorf("name %q: a VM name needs at least one label", s)
	}
	return p, nil
}

// MustParse is Parse for names known to be valid at compile time, such as
// test fixtures and constants. It panics on an invalid name, so it must
// never be applied to input.
func MustParse(s string) Path {
	p, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return p
}

// String returns the canonical form, "a:b:vm", or ":" for the root. Parse
// of the result yields an equal Path.
func (p Path) String() string {
	if len(p.labels) == 0 {
		return ":"
	}
	return strings.Join(p.labels, ":")
}

// Labels returns a copy of the labels, root first, so callers cannot
// mutate the Path.
func (p Path) Labels() []string {
	return append([]string(nil), p.labels...)
}

// IsRoot reports whether p has no labels.
func (p Path) IsRoot() bool { return len(p.labels) == 0 }

// Parent returns p without its last label; the parent of the root is the
// root.
func (p Path) Parent() Path {
	if len(p.labels) <= 1 {
		return Path{}
	}
	n := len(p.labels) - 1
	return Path{labels: p.labels[:n:n]}
}

// Last returns the final label, or "" for the root.
func (p Path) Last() string {
	if len(p.labels) == 0 {
		return ""
	}
	return p.labels[len(p.labels)-1]
}

// Child returns p extended by label, which is validated like a label in
// Parse.
func (p Path) Child(label string) (Path, error) {
	l := label
	if err := checkLabel(l); err != nil {
		return Path{}, fmt.Errorf("child of %q: label %w", p.String(), err)
	}
	labels := make([]string, len(p.labels), len(p.labels)+1)
	copy(labels, p.labels)
	labels = append(labels, l)
	q := Path{labels: labels}
	if n := len(q.String()); n > MaxLength {
		return Path{}, fmt.Errorf("child of %q: label %q makes the name %d bytes long, the limit is %d", p.String(), l, n, MaxLength)
	}
	return q, nil
}

// IsPrefixOf reports whether p is an ancestor of q or q itself. Policy
// checks use it to decide which policies govern a VM.
func (p Path) IsPrefixOf(q Path) bool {
	if len(p.labels) > len(q.labels) {
		return false
	}
	for i, l := range p.labels {
		if q.labels[i] != l {
			return false
		}
	}
	return true
}

// Ancestors returns every proper ancestor of p, root first, so policies
// can be applied from the most general to the most specific. The root has
// no ancestors.
func (p Path) Ancestors() []Path {
	out := make([]Path, 0, len(p.labels))
	for i := 0; i < len(p.labels); i++ {
		out = append(out, Path{labels: p.labels[:i:i]})
	}
	return out
}

// Equal reports whether p and q have the same labels. Use it instead of
// == because Path holds a slice.
func (p Path) Equal(q Path) bool {
	if len(p.labels) != len(q.labels) {
		return false
	}
	for i, l := range p.labels {
		if q.labels[i] != l {
			return false
		}
	}
	return true
}

// FileKey returns a key for naming the store file of p: the canonical
// string form, which on Linux is always a valid file name of at most
// MaxLength bytes, because labels contain neither '/' nor NUL and are
// never made only of dots (so a key is never "." or ".."). The root's
// key is ":".
func (p Path) FileKey() string { return p.String() }

// FromFileKey inverts FileKey. It accepts only keys FileKey produces (no
// upper case, no leading ':' except for the root, no label made only of
// dots), so every key found on disk maps to exactly one Path and back.
func FromFileKey(s string) (Path, error) {
	switch s {
	case ":":
		return Path{}, nil
	case "":
		return Path{}, fmt.Errorf("file key %q: not a key produced by FileKey", s)
	}
	if len(s) > MaxLength {
		return Path{}, fmt.Errorf("file key %.40q...: %d bytes long, the limit is %d", s, len(s), MaxLength)
	}
	parts := strings.Split(s, ":")
	for i, l := range parts {
		if err := checkLabel(l); err != nil {
			return Path{}, fmt.Errorf("file key %q: label %d %w", s, i+1, err)
		}
	}
	return Path{labels: parts}, nil
}

// MarshalText encodes p in its canonical string form, so Paths can be
// stored in JSON records and used as map keys.
func (p Path) MarshalText() ([]byte, error) {
	return []byte(p.String()), nil
}

// UnmarshalText parses text with Parse, so records with invalid names are
// rejected when they are decoded rather than later.
func (p *Path) UnmarshalText(text []byte) error {
	q, err := Parse(string(text))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

var errEmptyLabel = errors.New("is empty")

// checkLabel validates a label. Its errors read as the continuation of
// "label N ".
func checkLabel(l string) error {
	if l == "" {
		return errEmptyLabel
	}
	if len(l) > MaxLabelLength {
		return fmt.Errorf("%.20q... is %d characters long, the limit is %d", l, len(l), MaxLabelLength)
	}
	if l[0] == '-' {
		return fmt.Errorf("%q starts with '-'", l)
	}
	if strings.Trim(l, ".") == "" {
		return fmt.Errorf("%q is made only of dots; a label needs at least one of a-z, 0-9 or '-'", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' {
			continue
		}
		what := fmt.Sprintf("%q", rune(c))
		if c >= 0x80 {
			what = fmt.Sprintf("byte 0x%02x", c)
		}
		if c >= 'A' && c <= 'Z' {
			return fmt.Errorf("%q contains the upper-case %s: names are lower case, only a-z, 0-9, '.' and '-' (write %q)", l, what, lowerASCII(l))
		}
		return fmt.Errorf("%q contains %s, only a-z, 0-9, '.' and '-' are allowed", l, what)
	}
	return nil
}

// lowerASCII lower-cases ASCII letters only, for the suggestion of a
// refusal; strings.ToLower would also map some non-ASCII runes (such as
// the Kelvin sign) onto ASCII letters and suggest a name the user never
// wrote.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
