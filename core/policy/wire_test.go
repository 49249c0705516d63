package policy_test

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// The tests in this file walk the fields of policy.Policy by reflection,
// so that a field added to the type and forgotten by one of the places
// that derive from it (see the package documentation) fails here.

// fields lists the fields of Policy.
func fields() []reflect.StructField {
	t := reflect.TypeFor[policy.Policy]()
	out := make([]reflect.StructField, t.NumField())
	for i := range out {
		out[i] = t.Field(i)
	}
	return out
}

// sample returns a valid value for field f, different from the zero
// value, from 0 and from every other field's sample (seed is the field's
// index), so that a converter that drops a field or swaps two shows. A
// field of a type it does not know fails the test: teach it the type
// when adding such a field.
func sample(t *testing.T, f reflect.StructField, seed int) reflect.Value {
	t.Helper()
	n := 2 + 3*seed
	v := reflect.New(f.Type).Elem()
	switch {
	case f.Type.Kind() == reflect.Int:
		v.SetInt(int64(n))
	case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Int:
		p := reflect.New(f.Type.Elem())
		p.Elem().SetInt(int64(n))
		v.Set(p)
	case f.Type == reflect.TypeFor[[]int]():
		v.Set(reflect.ValueOf([]int{n, n + 1}))
	case f.Type == reflect.TypeFor[[]string]():
		v.Set(reflect.ValueOf([]string{fmt.Sprintf("br%d", n), fmt.Sprintf("br%d", n+1)}))
	default:
		t.Fatalf("Policy.%s has type %s, which sample cannot fill: add it", f.Name, f.Type)
	}
	return v
}

// full returns a policy with every field set to its sample.
func full(t *testing.T) policy.Policy {
	t.Helper()
	var p policy.Policy
	v := reflect.ValueOf(&p).Elem()
	for i, f := range fields() {
		v.Field(i).Set(sample(t, f, i))
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("the full sample policy is invalid: %v", err)
	}
	return p
}

// variants returns the policies every wire format must carry unchanged:
// the zero policy, the full one, each field alone, and for each optional
// (pointer) field the full policy with it absent and with it pointing to
// 0, which must stay distinct.
func variants(t *testing.T) map[string]policy.Policy {
	t.Helper()
	all := full(t)
	out := map[string]policy.Policy{"zero": {}, "full": all}
	for i, f := range fields() {
		var alone policy.Policy
		reflect.ValueOf(&alone).Elem().Field(i).Set(sample(t, f, i))
		out[f.Name+" alone"] = alone
		if f.Type.Kind() == reflect.Pointer {
			absent, zero := all.Clone(), all.Clone()
			reflect.ValueOf(&absent).Elem().Field(i).SetZero()
			reflect.ValueOf(&zero).Elem().Field(i).Set(reflect.New(f.Type.Elem()))
			out[f.Name+" absent"], out[f.Name+" zero"] = absent, zero
		}
	}
	return out
}

// same reports, field by field, how got differs from want in canonical
// form (CPUs and bridges as sorted sets); nil and empty lists are the
// same, nil and zero pointers are not.
func same(want, got policy.Policy) error {
	w, g := reflect.ValueOf(want.Canonical()), reflect.ValueOf(got.Canonical())
	var diffs []string
	for i, f := range fields() {
		if !reflect.DeepEqual(w.Field(i).Interface(), g.Field(i).Interface()) {
			diffs = append(diffs, fmt.Sprintf("%s is %s, want %s", f.Name, show(g.Field(i)), show(w.Field(i))))
		}
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

func show(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "nil"
		}
		return fmt.Sprintf("&%v", v.Elem())
	}
	return fmt.Sprint(v)
}

// wires are the round trips through every representation of a policy
// outside the process.
var wires = []struct {
	name string
	trip func(policy.Policy) (policy.Policy, error)
}{
	{"daemon API", func(p policy.Policy) (policy.Policy, error) {
		b, err := proto.Marshal(policy.ToProto(p))
		if err != nil {
			return policy.Policy{}, err
		}
		var m daemonv1.Policy
		if err := proto.Unmarshal(b, &m); err != nil {
			return policy.Policy{}, err
		}
		return policy.FromProto(&m), nil
	}},
	{"certificate extension", func(p policy.Policy) (policy.Policy, error) {
		der, err := pki.MarshalPolicy(p)
		if err != nil {
			return policy.Policy{}, err
		}
		return pki.UnmarshalPolicy(der)
	}},
	{"certificate", func(p policy.Policy) (policy.Policy, error) {
		key, err := pki.GenerateKey("", 0)
		if err != nil {
			return policy.Policy{}, err
		}
		c, err := pki.NewRoot("root", key, &p, 0)
		if err != nil {
			return policy.Policy{}, err
		}
		got, err := pki.PolicyOf(c)
		if err != nil || got == nil {
			return policy.Policy{}, fmt.Errorf("policy of the certificate: %v %v", got, err)
		}
		return *got, nil
	}},
	{"store JSON", func(p policy.Policy) (policy.Policy, error) {
		b, err := json.Marshal(p)
		if err != nil {
			return policy.Policy{}, err
		}
		var back policy.Policy
		err = json.Unmarshal(b, &back)
		return back, err
	}},
}

// TestEveryFieldRoundTrips: every field of Policy, alone and together,
// optional ones absent, zero and set, survives the daemon API's message,
// the certificate extension (bare and in a certificate) and the JSON
// petreld stores.
func TestEveryFieldRoundTrips(t *testing.T) {
	for name, p := range variants(t) {
		for _, w := range wires {
			got, err := w.trip(p)
			if err != nil {
				t.Errorf("%s through the %s: %v", name, w.name, err)
				continue
			}
			if err := same(p, got); err != nil {
				t.Errorf("%s through the %s: %v", name, w.name, err)
			}
		}
	}
}

// TestEveryFieldIsCompared: Equal, String, Within, Meet, Clone and
// Validate each take every field into account. For each field, a policy
// smaller than the full one in that field alone differs from it, is
// within it and not the other way round, is their meet, and a clone
// shares none of it; an out-of-range value is refused.
func TestEveryFieldIsCompared(t *testing.T) {
	for i, f := range fields() {
		all := full(t)
		smaller := all.Clone()
		field := reflect.ValueOf(&smaller).Elem().Field(i)
		switch f.Type.Kind() {
		case reflect.Int:
			field.SetInt(field.Int() - 1)
		case reflect.Pointer:
			field.Elem().SetInt(field.Elem().Int() - 1)
		case reflect.Slice:
			field.Set(field.Slice(0, field.Len()-1))
		}
		if all.Equal(smaller) || smaller.Equal(all) {
			t.Errorf("%s: Equal does not compare it", f.Name)
		}
		if all.String() == smaller.String() {
			t.Errorf("%s: String does not show it: %s", f.Name, all)
		}
		if err := smaller.Within(all); err != nil {
			t.Errorf("%s: a smaller policy is not Within: %v", f.Name, err)
		}
		if err := all.Within(smaller); !errors.Is(err, policy.ErrExceeded) {
			t.Errorf("%s: a larger policy is Within: %v", f.Name, err)
		}
		if err := same(smaller, all.Meet(smaller)); err != nil {
			t.Errorf("%s: Meet: %v", f.Name, err)
		}

		clone := all.Clone()
		cf := reflect.ValueOf(&clone).Elem().Field(i)
		switch f.Type.Kind() {
		case reflect.Pointer:
			cf.Elem().SetInt(cf.Elem().Int() + 1)
		case reflect.Slice:
			cf.Index(0).Set(cf.Index(1))
		}
		if err := same(full(t), all); err != nil {
			t.Errorf("%s: changing a Clone changed the original: %v", f.Name, err)
		}

		bad := full(t)
		bf := reflect.ValueOf(&bad).Elem().Field(i)
		switch {
		case f.Type.Kind() == reflect.Int:
			bf.SetInt(-1)
		case f.Type.Kind() == reflect.Pointer:
			bf.Elem().SetInt(-1)
		case f.Type == reflect.TypeFor[[]int]():
			bf.Index(0).SetInt(-1)
		case f.Type == reflect.TypeFor[[]string]():
			bf.Index(0).SetString("no/such/bridge")
		}
		if err := bad.Validate(); err == nil {
			t.Errorf("%s: Validate accepts %s", f.Name, show(bf))
		}
	}
}

// fixture is a policy with its encodings as this and earlier versions
// wrote them: certificates already issued and policies already stored
// must keep reading the same, and a policy that states nothing new must
// keep encoding the same.
type fixture struct {
	name   string
	policy policy.Policy
	proto  string // daemon API message, hex
	der    string // certificate extension, hex
	json   string // the JSON petreld stores
}

func intp(v int) *int { return &v }

var fixtures = []fixture{
	{"full", policy.Policy{VMs: 3, CPUs: []int{0, 2}, MemoryMB: 512, BlockMB: intp(100), Bridges: []string{"br0", "br1"}, ImagesMB: intp(64)},
		"08031202000218800420642a036272302a036272313040",
		"3024020101020103300602010002010202020200800164300a0c036272300c03627231810140",
		`{"vms":3,"cpus":[0,2],"memory_mb":512,"block_mb":100,"bridges":["br0","br1"],"images_mb":64}`},
	{"bare", policy.Policy{VMs: 1, MemoryMB: 64},
		"08011840",
		"300d02010102010130000201403000",
		`{"vms":1,"cpus":[],"memory_mb":64,"bridges":[]}`},
	{"zero allowances", policy.Policy{BlockMB: intp(0), ImagesMB: intp(0)},
		"20003000",
		"301302010102010030000201008001003000810100",
		`{"vms":0,"cpus":[],"memory_mb":0,"block_mb":0,"bridges":[],"images_mb":0}`},
	{"limits", policy.Policy{VMs: policy.MaxVMs, CPUs: []int{policy.MaxCPUID}, MemoryMB: policy.MaxMemoryMB, BlockMB: intp(policy.MaxBlockMB),
		Bridges: []string{"abcdefghijklmno"}, ImagesMB: intp(policy.MaxImagesMB)},
		"088080401202ff3f18808080808020208080808080202a0f6162636465666768696a6b6c6d6e6f30808080808020",
		"30390201010203100000300402021fff0206010000000000800601000000000030110c0f6162636465666768696a6b6c6d6e6f8106010000000000",
		`{"vms":1048576,"cpus":[8191],"memory_mb":1099511627776,"block_mb":1099511627776,"bridges":["abcdefghijklmno"],"images_mb":1099511627776}`},
}

// TestWireFormatsAreStable decodes encodings written before and checks
// that encoding gives them back byte for byte: proto field numbers, the
// ASN.1 schema and the JSON keys are fixed.
func TestWireFormatsAreStable(t *testing.T) {
	for _, fx := range fixtures {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(policy.ToProto(fx.policy.Canonical()))
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != fx.proto {
			t.Errorf("%s: daemon API message %s, want %s", fx.name, got, fx.proto)
		}
		var m daemonv1.Policy
		if err := proto.Unmarshal(mustHex(t, fx.proto), &m); err != nil {
			t.Fatal(err)
		}
		if err := same(fx.policy, policy.FromProto(&m)); err != nil {
			t.Errorf("%s: from the daemon API message: %v", fx.name, err)
		}

		der, err := pki.MarshalPolicy(fx.policy)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(der); got != fx.der {
			t.Errorf("%s: certificate extension %s, want %s", fx.name, got, fx.der)
		}
		p, err := pki.UnmarshalPolicy(mustHex(t, fx.der))
		if err != nil {
			t.Errorf("%s: certificate extension refused: %v", fx.name, err)
		} else if err := same(fx.policy, p); err != nil {
			t.Errorf("%s: from the certificate extension: %v", fx.name, err)
		}

		j, err := json.Marshal(fx.policy.Canonical())
		if err != nil {
			t.Fatal(err)
		}
		if string(j) != fx.json {
			t.Errorf("%s: JSON %s, want %s", fx.name, j, fx.json)
		}
		var back policy.Policy
		if err := json.Unmarshal([]byte(fx.json), &back); err != nil {
			t.Fatal(err)
		}
		if err := same(fx.policy, back); err != nil {
			t.Errorf("%s: from JSON: %v", fx.name, err)
		}
	}
}

// TestIssuedCertificatesStillRead reads sub-CA certificates that `petrel
// ca sign-policy` issued before, one with every field stated and one with
// the optional ones left out.
func TestIssuedCertificatesStillRead(t *testing.T) {
	for file, want := range map[string]policy.Policy{
		"testdata/policy-full.pem": fixtures[0].policy,
		"testdata/policy-bare.pem": fixtures[1].policy,
	} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		certs, err := pki.DecodeCerts(data)
		if err != nil || len(certs) != 1 {
			t.Fatalf("%s: %d certificates, %v", file, len(certs), err)
		}
		got, err := pki.PolicyOf(certs[0])
		if err != nil || got == nil {
			t.Fatalf("%s: policy %v, %v", file, got, err)
		}
		if err := same(want, *got); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// TestToProtoSaturates: a value the message's int32 cannot hold stays out
// of range rather than wrapping round to a valid one.
func TestToProtoSaturates(t *testing.T) {
	m := policy.ToProto(policy.Policy{VMs: 1<<32 + 1, CPUs: []int{-1 << 32}})
	if m.GetVms() != 1<<31-1 || m.GetCpus()[0] != -1<<31 {
		t.Errorf("ToProto gave vms %d, cpus %v", m.GetVms(), m.GetCpus())
	}
	if err := policy.FromProto(m).Validate(); err == nil {
		t.Error("an out-of-range policy became valid through the daemon API")
	}
	if got := policy.FromProto(nil); !reflect.DeepEqual(got, policy.Policy{}) {
		t.Errorf("FromProto(nil) = %v", got)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
