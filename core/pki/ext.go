package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/petrel-vmm/petrel/core/policy"
)

// Object identifiers of Petrel's certificate extensions; see the package
// documentation for the arc and the schemas.
var (
	// OIDArc is the project's arc; every Petrel extension lives below it.
	OIDArc = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7077}
	// OIDPolicy identifies the PolicyExt extension of CA certificates.
	OIDPolicy = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7077, 1}
	// OIDCommand identifies the CommandExt extension of leaf certificates.
	OIDCommand = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7077, 2}
)

const (
	// ExtVersion is the schema version written into both extensions and
	// the only one the decoders accept.
	ExtVersion = 1
	// MaxExtensionSize bounds an encoded extension value; a policy with
	// every CPU and bridge the policy package allows stays well below it.
	MaxExtensionSize = 64 << 10
	// MaxCommandName bounds the length of Command.Name.
	MaxCommandName = 64
	// MaxCommandArgs bounds the number of Command.Args.
	MaxCommandArgs = 64
	// MaxCommandArg bounds the length of one argument in bytes.
	MaxCommandArg = 4096
)

// Command is the one operation a capability certificate allows.
type Command struct {
	// Name is the daemon operation, such as "create" or "destroy".
	Name string `json:"name"`
	// Args are the operation's arguments, in the order the CLI takes
	// them.
	Args []string `json:"args,omitempty"`
}

// Validate checks the limits of the CommandExt schema, so that a command
// that encodes also decodes.
func (c Command) Validate() error {
	if c.Name == "" || len(c.Name) > MaxCommandName {
		return fmt.Errorf("command name %.70q must be 1 to %d bytes", c.Name, MaxCommandName)
	}
	for i := 0; i < len(c.Name); i++ {
		if b := c.Name[i]; b < 0x20 || b > 0x7e {
			return fmt.Errorf("command name %q contains byte 0x%02x, only printable ASCII is allowed", c.Name, b)
		}
	}
	if len(c.Args) > MaxCommandArgs {
		return fmt.Errorf("command %q has %d arguments, the limit is %d", c.Name, len(c.Args), MaxCommandArgs)
	}
	for i, a := range c.Args {
		if len(a) > MaxCommandArg {
			return fmt.Errorf("command %q: argument %d is %d bytes long, the limit is %d", c.Name, i+1, len(a), MaxCommandArg)
		}
		if !utf8.ValidString(a) || bytes.IndexByte([]byte(a), 0) >= 0 {
			return fmt.Errorf("command %q: argument %d is not UTF-8 text without NUL", c.Name, i+1)
		}
	}
	return nil
}

// Equal reports whether c and d name the same operation with the same
// arguments; the endpoint uses it to match a request against a
// capability.
func (c Command) Equal(d Command) bool {
	return c.Name == d.Name && slices.Equal(c.Args, d.Args)
}

// MarshalPolicy encodes p, in canonical form, as a PolicyExt value. It
// and unmarshalPolicy are the one place the extension lists Policy's
// fields; a field added to policy.Policy gets an OPTIONAL element at the
// end here, and core/policy's tests fail until it does (see that
// package's documentation).
func MarshalPolicy(p policy.Policy) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	p = p.Canonical()
	var w derWriter
	w.value(ExtVersion, "")
	w.value(p.VMs, "")
	w.value(p.CPUs, "")
	w.value(p.MemoryMB, "")
	if p.BlockMB != nil {
		w.value(*p.BlockMB, "tag:0")
	}
	w.utf8Seq(p.Bridges)
	if p.ImagesMB != nil {
		w.value(*p.ImagesMB, "tag:1")
	}
	return w.sequence()
}

// UnmarshalPolicy decodes a PolicyExt value, refusing anything but the
// canonical encoding of a valid version-1 policy.
func UnmarshalPolicy(der []byte) (policy.Policy, error) {
	p, err := unmarshalPolicy(der)
	if err != nil {
		return policy.Policy{}, fmt.Errorf("policy extension: %w", err)
	}
	return p, nil
}

func unmarshalPolicy(der []byte) (policy.Policy, error) {
	var p policy.Policy
	r, err := openSequence(der)
	if err != nil {
		return p, err
	}
	if err := r.version(); err != nil {
		return p, err
	}
	if p.VMs, err = r.int("vms"); err != nil {
		return p, err
	}
	if p.CPUs, err = r.intSeq("cpus", policy.MaxCPUID+1); err != nil {
		return p, err
	}
	if p.MemoryMB, err = r.int("memoryMB"); err != nil {
		return p, err
	}
	if r.peekTag(asn1.ClassContextSpecific, 0) {
		el, _ := r.next()
		var b int
		if _, err := asn1.UnmarshalWithParams(el.FullBytes, &b, "tag:0"); err != nil {
			return p, fmt.Errorf("blockMB: %w", err)
		}
		p.BlockMB = &b
	}
	if p.Bridges, err = r.utf8Seq("bridges", policy.MaxBridges); err != nil {
		return p, err
	}
	if r.peekTag(asn1.ClassContextSpecific, 1) {
		el, _ := r.next()
		var n int
		if _, err := asn1.UnmarshalWithParams(el.FullBytes, &n, "tag:1"); err != nil {
			return p, fmt.Errorf("imagesMB: %w", err)
		}
		p.ImagesMB = &n
	}
	if err := r.end(); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return p, err
	}
	again, err := MarshalPolicy(p)
	if err != nil || !bytes.Equal(again, der) {
		return p, errors.New("not in canonical form (CPUs and bridges must be ascending and unique)")
	}
	return p, nil
}

// MarshalCommand encodes c as a CommandExt value.
func MarshalCommand(c Command) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var w derWriter
	w.value(ExtVersion, "")
	w.utf8(c.Name)
	if len(c.Args) > 0 {
		w.utf8Seq(c.Args)
	}
	return w.sequence()
}

// UnmarshalCommand decodes a CommandExt value, refusing anything but the
// canonical encoding of a valid version-1 command.
func UnmarshalCommand(der []byte) (Command, error) {
	c, err := unmarshalCommand(der)
	if err != nil {
		return Command{}, fmt.Errorf("command extension: %w", err)
	}
	return c, nil
}

func unmarshalCommand(der []byte) (Command, error) {
	var c Command
	r, err := openSequence(der)
	if err != nil {
		return c, err
	}
	if err := r.version(); err != nil {
		return c, err
	}
	if c.Name, err = r.utf8("command"); err != nil {
		return c, err
	}
	if !r.done() {
		if c.Args, err = r.utf8Seq("args", MaxCommandArgs); err != nil {
			return c, err
		}
	}
	if err := r.end(); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	again, err := MarshalCommand(c)
	if err != nil || !bytes.Equal(again, der) {
		return c, errors.New("not in canonical form (an empty argument list must be omitted)")
	}
	return c, nil
}

// PolicyOf returns the policy a certificate carries, or nil if it carries
// none.
func PolicyOf(cert *x509.Certificate) (*policy.Policy, error) {
	v, ok, err := extension(cert, OIDPolicy)
	if err != nil || !ok {
		return nil, err
	}
	p, err := UnmarshalPolicy(v)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// CommandOf returns the command a certificate carries, or nil if it
// carries none.
func CommandOf(cert *x509.Certificate) (*Command, error) {
	v, ok, err := extension(cert, OIDCommand)
	if err != nil || !ok {
		return nil, err
	}
	c, err := UnmarshalCommand(v)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// extension returns the value of the extension id of cert. The x509
// parser already refuses duplicate extensions; the check here keeps that
// guarantee independent of it.
func extension(cert *x509.Certificate, id asn1.ObjectIdentifier) ([]byte, bool, error) {
	var found []byte
	n := 0
	for _, e := range cert.Extensions {
		if e.Id.Equal(id) {
			found = e.Value
			n++
		}
	}
	if n > 1 {
		return nil, false, fmt.Errorf("extension %s appears %d times", id, n)
	}
	return found, n == 1, nil
}

// derWriter builds the contents of one SEQUENCE, keeping the first
// encoding error so that callers check once.
type derWriter struct {
	body []byte
	err  error
}

// value appends the DER encoding of v with encoding/asn1 parameters.
func (w *derWriter) value(v any, params string) {
	if w.err != nil {
		return
	}
	enc, err := asn1.MarshalWithParams(v, params)
	if err != nil {
		w.err = fmt.Errorf("encode %T: %w", v, err)
		return
	}
	w.body = append(w.body, enc...)
}

// raw appends one element with the given tag and contents.
func (w *derWriter) raw(class, tag int, compound bool, contents []byte) {
	w.value(asn1.RawValue{Class: class, Tag: tag, IsCompound: compound, Bytes: contents}, "")
}

// utf8 appends s as a UTF8String (asn1.Marshal would choose
// PrintableString for ASCII text).
func (w *derWriter) utf8(s string) {
	w.raw(asn1.ClassUniversal, asn1.TagUTF8String, false, []byte(s))
}

// utf8Seq appends a SEQUENCE OF UTF8String.
func (w *derWriter) utf8Seq(ss []string) {
	var inner derWriter
	for _, s := range ss {
		inner.utf8(s)
	}
	if inner.err != nil {
		w.err = inner.err
		return
	}
	w.raw(asn1.ClassUniversal, asn1.TagSequence, true, inner.body)
}

// sequence returns the contents wrapped in a SEQUENCE header.
func (w *derWriter) sequence() ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	var out derWriter
	out.raw(asn1.ClassUniversal, asn1.TagSequence, true, w.body)
	return out.body, out.err
}

// derReader walks the elements of one SEQUENCE with strict DER checks
// (encoding/asn1 refuses non-minimal lengths and integers and invalid
// UTF-8).
type derReader struct{ rest []byte }

// openSequence checks the size limit and the outer SEQUENCE, and returns
// a reader over its elements.
func openSequence(der []byte) (*derReader, error) {
	if len(der) > MaxExtensionSize {
		return nil, fmt.Errorf("%d bytes long, the limit is %d", len(der), MaxExtensionSize)
	}
	var outer asn1.RawValue
	rest, err := asn1.Unmarshal(der, &outer)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%d bytes of trailing data", len(rest))
	}
	if outer.Class != asn1.ClassUniversal || outer.Tag != asn1.TagSequence || !outer.IsCompound {
		return nil, errors.New("not a SEQUENCE")
	}
	return &derReader{rest: outer.Bytes}, nil
}

func (r *derReader) done() bool { return len(r.rest) == 0 }

func (r *derReader) end() error {
	if !r.done() {
		return fmt.Errorf("%d bytes of unexpected data at the end", len(r.rest))
	}
	return nil
}

func (r *derReader) next() (asn1.RawValue, error) {
	if r.done() {
		return asn1.RawValue{}, errors.New("truncated")
	}
	var v asn1.RawValue
	rest, err := asn1.Unmarshal(r.rest, &v)
	if err != nil {
		return v, err
	}
	r.rest = rest
	return v, nil
}

func (r *derReader) peekTag(class, tag int) bool {
	if r.done() {
		return false
	}
	var v asn1.RawValue
	if _, err := asn1.Unmarshal(r.rest, &v); err != nil {
		return false
	}
	return v.Class == class && v.Tag == tag
}

func (r *derReader) version() error {
	v, err := r.int("version")
	if err != nil {
		return err
	}
	if v != ExtVersion {
		return fmt.Errorf("schema version %d is not supported (this build reads version %d)", v, ExtVersion)
	}
	return nil
}

func (r *derReader) int(field string) (int, error) {
	el, err := r.next()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return parseInt(field, el)
}

func parseInt(field string, el asn1.RawValue) (int, error) {
	if el.Class != asn1.ClassUniversal || el.Tag != asn1.TagInteger {
		return 0, fmt.Errorf("%s: not an INTEGER", field)
	}
	var n int
	if _, err := asn1.Unmarshal(el.FullBytes, &n); err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return n, nil
}

func (r *derReader) seq(field string) (*derReader, error) {
	el, err := r.next()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if el.Class != asn1.ClassUniversal || el.Tag != asn1.TagSequence || !el.IsCompound {
		return nil, fmt.Errorf("%s: not a SEQUENCE", field)
	}
	return &derReader{rest: el.Bytes}, nil
}

func (r *derReader) intSeq(field string, limit int) ([]int, error) {
	s, err := r.seq(field)
	if err != nil {
		return nil, err
	}
	out := []int{}
	for !s.done() {
		if len(out) == limit {
			return nil, fmt.Errorf("%s: more than %d elements", field, limit)
		}
		n, err := s.int(field)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func (r *derReader) utf8(field string) (string, error) {
	el, err := r.next()
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	if el.Class != asn1.ClassUniversal || el.Tag != asn1.TagUTF8String || el.IsCompound {
		return "", fmt.Errorf("%s: not a UTF8String", field)
	}
	if !utf8.Valid(el.Bytes) {
		return "", fmt.Errorf("%s: invalid UTF-8", field)
	}
	return string(el.Bytes), nil
}

func (r *derReader) utf8Seq(field string, limit int) ([]string, error) {
	s, err := r.seq(field)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for !s.done() {
		if len(out) == limit {
			return nil, fmt.Errorf("%s: more than %d elements", field, limit)
		}
		v, err := s.utf8(field)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
