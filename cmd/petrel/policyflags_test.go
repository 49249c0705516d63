package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// policyArgs give every policy flag, and wantPolicy is what they say.
var (
	policyArgs = []string{"--vms", "3", "--mem", "512", "--cpu", "2", "--cpu", "0", "--block", "100M", "--images", "64", "--bridge", "br1", "--bridge", "br0"}
	wantPolicy = policy.Policy{VMs: 3, CPUs: []int{0, 2}, MemoryMB: 512, BlockMB: ptr(100), Bridges: []string{"br0", "br1"}, ImagesMB: ptr(64)}
)

func ptr(v int) *int { return &v }

// checkEveryField fails unless got is wantPolicy and sets every field of
// policy.Policy: a field without a flag in bindPolicyFlags stays zero.
func checkEveryField(t *testing.T, what string, got policy.Policy) {
	t.Helper()
	v := reflect.ValueOf(got)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("%s: Policy.%s is not set: give it a flag in bindPolicyFlags and a value in policyArgs", what, v.Type().Field(i).Name)
		}
	}
	if !got.Equal(wantPolicy) {
		t.Errorf("%s: policy %v, want %v", what, got, wantPolicy)
	}
}

// TestPolicyFlagsSetEveryField: `petrel policy add` and `petrel ca
// sign-policy` take the same flags for every field of a policy, and what
// they give reaches petreld and the certificate.
func TestPolicyFlagsSetEveryField(t *testing.T) {
	d := &stubDaemon{}
	sock := startStub(t, d)
	if code, _, errText := runPetrel(append([]string{"--socket", sock, "policy", "add", "team"}, policyArgs...)...); code != exitOK {
		t.Fatalf("policy add: exit %d: %s", code, errText)
	}
	checkEveryField(t, "policy add", policy.FromProto(d.lastPolicyAdd().GetPolicy()))

	dir := t.TempDir()
	if err := pki.InitCA(filepath.Join(dir, "ca"), pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	in := func(name string) string { return filepath.Join(dir, name) }
	if code, _, errText := runPetrel("ca", "csr", "alice", "--key-out", in("alice.key"), "--out", in("alice.csr")); code != exitOK {
		t.Fatalf("ca csr: exit %d: %s", code, errText)
	}
	args := append([]string{"--ca", in("ca/ca.pem"), "--ca-key", in("ca/ca.key"), "ca", "sign-policy", in("alice.csr"), "--out", in("alice.pem")}, policyArgs...)
	if code, _, errText := runPetrel(args...); code != exitOK {
		t.Fatalf("ca sign-policy: exit %d: %s", code, errText)
	}
	certs, err := pki.ReadCertsFile(in("alice.pem"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := pki.PolicyOf(certs[0])
	if err != nil || p == nil {
		t.Fatalf("policy of the signed certificate: %v %v", p, err)
	}
	checkEveryField(t, "ca sign-policy", *p)

	// Both commands define each policy flag alike.
	a := &app{}
	root := a.rootCmd()
	add, _, _ := root.Find([]string{"policy", "add"})
	sign, _, _ := root.Find([]string{"ca", "sign-policy"})
	for i := 0; i < len(policyArgs); i += 2 {
		name := strings.TrimPrefix(policyArgs[i], "--")
		fa, fs := add.Flags().Lookup(name), sign.Flags().Lookup(name)
		if fa == nil || fs == nil || fa.Usage != fs.Usage || fa.Value.Type() != fs.Value.Type() {
			t.Errorf("--%s differs between policy add (%v) and ca sign-policy (%v)", name, fa, fs)
		}
	}
}

// TestPolicyFlagsRefuseWhatTheAPICannotCarry: VMs and CPU ids travel as
// int32; a larger number is a mistake on the command line, refused before
// anything is sent or signed.
func TestPolicyFlagsRefuseWhatTheAPICannotCarry(t *testing.T) {
	d := &stubDaemon{}
	sock := startStub(t, d)
	for _, args := range [][]string{
		{"--vms", "3000000000", "--mem", "1"},
		{"--vms", "1", "--mem", "1", "--cpu", "0", "--cpu", "-2147483649"},
	} {
		code, _, errText := runPetrel(append([]string{"--socket", sock, "policy", "add", "team"}, args...)...)
		if code != exitUsage || !strings.Contains(errText, "out of range") {
			t.Errorf("policy add %v: exit %d: %s", args, code, errText)
		}
		code, _, errText = runPetrel(append([]string{"--ca", "ca.pem", "--ca-key", "ca.key", "ca", "sign-policy", "x.csr", "--out", "x.pem"}, args...)...)
		if code != exitUsage || !strings.Contains(errText, "out of range") {
			t.Errorf("ca sign-policy %v: exit %d: %s", args, code, errText)
		}
	}
	if d.lastPolicyAdd() != nil {
		t.Errorf("sent %v", d.lastPolicyAdd())
	}
}

// TestPolicyListOutputIsStable: `petrel policy` and `petrel policy
// --json` print what they printed before the listing went through
// policy.Policy (testdata/policy-list.*).
func TestPolicyListOutputIsStable(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	full := &daemonv1.Policy{Vms: 3, Cpus: []int32{0, 2}, MemoryMb: 512, BlockMb: n(100), Bridges: []string{"br0", "br1"}, ImagesMb: n(64)}
	bare := &daemonv1.Policy{Vms: 1, MemoryMb: 64}
	zero := &daemonv1.Policy{BlockMb: n(0), ImagesMb: n(0)}
	d := &stubDaemon{policies: []*daemonv1.PolicyEntry{
		{Path: ":", Policy: &daemonv1.Policy{Vms: 100, Cpus: []int32{0, 1, 2, 3}, MemoryMb: 1 << 40, BlockMb: n(1 << 40), Bridges: []string{"br0", "br1"}, ImagesMb: n(1 << 40)},
			UsedVms: 2, UsedMemoryMb: 96, UsedBlockMb: 10, UsedImagesMb: 5},
		{Path: "alice", Policy: full, UsedVms: 1, UsedMemoryMb: 32, UsedBlockMb: 10, UsedImagesMb: 5, Local: full, Certificate: full},
		{Path: "bob", Policy: bare, Certificate: bare},
		{Path: "zed", Policy: zero, Local: zero},
	}}
	sock := startStub(t, d)
	for file, args := range map[string][]string{
		"testdata/policy-list.json": {"policy", "--json"},
		"testdata/policy-list.txt":  {"policy"},
	} {
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		code, out, errText := runPetrel(append([]string{"--socket", sock}, args...)...)
		if code != exitOK {
			t.Fatalf("petrel %v: exit %d: %s", args, code, errText)
		}
		if out != string(want) {
			t.Errorf("petrel %v printed\n%s\nwant (%s)\n%s", args, out, file, want)
		}
	}
}
