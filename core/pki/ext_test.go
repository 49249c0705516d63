package pki

import (
	"bytes"
	"encoding/asn1"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/core/policy"
)

func TestPolicyExtRoundTrip(t *testing.T) {
	for _, p := range []policy.Policy{
		{},
		{VMs: 1},
		{VMs: 3, CPUs: []int{5, 0, 2}, MemoryMB: 1 << 40, BlockMB: intp(0), Bridges: []string{"br1", "br0"}},
		{VMs: policy.MaxVMs, MemoryMB: 256, BlockMB: intp(policy.MaxBlockMB), Bridges: []string{"abcdefghijklmno"}},
		{VMs: 2, MemoryMB: 256, ImagesMB: intp(64)},
		{VMs: 2, MemoryMB: 256, BlockMB: intp(10), ImagesMB: intp(0), Bridges: []string{"br0"}},
		{VMs: 1, ImagesMB: intp(policy.MaxImagesMB)},
	} {
		der, err := MarshalPolicy(p)
		if err != nil {
			t.Fatalf("MarshalPolicy(%v): %v", p, err)
		}
		got, err := UnmarshalPolicy(der)
		if err != nil {
			t.Fatalf("UnmarshalPolicy(MarshalPolicy(%v)): %v", p, err)
		}
		if !got.Equal(p) {
			t.Errorf("round trip of %v gave %v", p, got)
		}
	}
}

// TestPolicyExtEncoding pins the wire format, so a change to it is a
// deliberate schema change rather than an accident.
func TestPolicyExtEncoding(t *testing.T) {
	der, err := MarshalPolicy(policy.Policy{VMs: 2, CPUs: []int{1, 0}, MemoryMB: 512, BlockMB: intp(100), Bridges: []string{"br0"}})
	if err != nil {
		t.Fatal(err)
	}
	const want = "301c" + "020101" + "020102" + "3006020100020101" + "02020200" + "800164" + "30050c03627230"
	if got := hex.EncodeToString(der); got != want {
		t.Errorf("encoding = %s, want %s", got, want)
	}
	// imagesMB is the optional [1] after the bridges.
	der, err = MarshalPolicy(policy.Policy{VMs: 2, CPUs: []int{1, 0}, MemoryMB: 512, BlockMB: intp(100), Bridges: []string{"br0"}, ImagesMB: intp(64)})
	if err != nil {
		t.Fatal(err)
	}
	const wantImages = "301f" + "020101" + "020102" + "3006020100020101" + "02020200" + "800164" + "30050c03627230" + "810140"
	if got := hex.EncodeToString(der); got != wantImages {
		t.Errorf("encoding with images = %s, want %s", got, wantImages)
	}
	der, err = MarshalCommand(Command{Name: "create", Args: []string{"vm"}})
	if err != nil {
		t.Fatal(err)
	}
	const wantCmd = "3011" + "020101" + "0c06637265617465" + "30040c02766d"
	if got := hex.EncodeToString(der); got != wantCmd {
		t.Errorf("command encoding = %s, want %s", got, wantCmd)
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

func TestPolicyExtRejects(t *testing.T) {
	valid := "301c02010102010230060201000201010202020080016430050c03627230"
	if _, err := UnmarshalPolicy(mustHex(t, valid)); err != nil {
		t.Fatalf("valid encoding refused: %v", err)
	}
	for _, tc := range []struct {
		name, hex, want string
	}{
		{"empty", "", "policy extension:"},
		{"trailing data", valid + "00", "1 bytes of trailing data"},
		{"version 2", "301c02010202010230060201000201010202020080016430050c03627230", "schema version 2 is not supported"},
		{"version 0", "301c02010002010230060201000201010202020080016430050c03627230", "schema version 0"},
		{"not a sequence", "311c02010102010230060201000201010202020080016430050c03627230", "not a SEQUENCE"},
		{"unsorted cpus", "301c02010102010230060201010201000202020080016430050c03627230", "canonical"},
		{"duplicate cpus", "301c02010102010230060201010201010202020080016430050c03627230", "cpu id 1 is listed twice"},
		{"negative vms", "301c0201010201ff30060201000201010202020080016430050c03627230", "vms -1"},
		{"non-minimal integer", "301d0201010202000230060201000201010202020080016430050c03627230", "vms"},
		{"printable bridge", "301c02010102010230060201000201010202020080016430051303627230", "not a UTF8String"},
		{"missing bridges", "3015020101020102300602010002010102020200800164", "bridges: truncated"},
		{"extra field", "301f02010102010230060201000201010202020080016430050c03627230020100", "unexpected data at the end"},
		{"non-minimal block", "301d0201010201023006020100020101020202008002006430050c03627230", "blockMB"},
		{"non-minimal images", "302002010102010230060201000201010202020080016430050c0362723081020040", "imagesMB"},
		{"negative images", "301f02010102010230060201000201010202020080016430050c036272308101ff", "images -1 MB is outside"},
		{"images before bridges", "301f020101020102300602010002010102020200800164810140" + "30050c03627230", "bridges: not a SEQUENCE"},
		{"bad bridge name", "301c02010102010230060201000201010202020080016430050c03622f30", `contains '/'`},
		{"indefinite length", "308002010102010230060201000201010202020080016430050c036272300000", "policy extension:"},
		{"oversize", "30830100000201" + strings.Repeat("00", 65536), "bytes long, the limit is 65536"},
	} {
		_, err := UnmarshalPolicy(mustHex(t, tc.hex))
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want %q", tc.name, err, tc.want)
		}
	}
	// A SEQUENCE OF with more elements than the policy package allows is
	// refused while decoding, before anything is allocated for the rest.
	var body []byte
	for i := 0; i <= policy.MaxCPUID+1; i++ {
		b, _ := asn1.Marshal(i)
		body = append(body, b...)
	}
	cpus, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: body})
	var w derWriter
	w.value(1, "")
	w.value(1, "")
	w.body = append(w.body, cpus...)
	w.value(0, "")
	w.utf8Seq(nil)
	der, err := w.sequence()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnmarshalPolicy(der); err == nil || !strings.Contains(err.Error(), "more than 8192 elements") {
		t.Errorf("too many cpus: %v", err)
	}
}

func TestCommandExt(t *testing.T) {
	for _, c := range []Command{
		{Name: "create"},
		{Name: "policy add", Args: []string{"a:b", "--vms", "2", "ünïcode ok", ""}},
	} {
		der, err := MarshalCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalCommand(der)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(c) {
			t.Errorf("round trip of %+v gave %+v", c, got)
		}
	}
	for _, c := range []Command{
		{},
		{Name: strings.Repeat("x", 65)},
		{Name: "tab\there"},
		{Name: "x", Args: make([]string, 65)},
		{Name: "x", Args: []string{strings.Repeat("a", MaxCommandArg+1)}},
		{Name: "x", Args: []string{"nul\x00"}},
		{Name: "x", Args: []string{"\xff"}},
	} {
		if _, err := MarshalCommand(c); err == nil {
			t.Errorf("MarshalCommand(%.40q) accepted", c.Name)
		}
	}
	for _, tc := range []struct{ name, hex, want string }{
		{"empty args present", "300d0201010c066372656174653000", "canonical"},
		{"version 2", "300b0201020c06637265617465", "schema version 2"},
		{"trailing", "300b0201010c06637265617465ff", "trailing data"},
		{"name not utf8 string", "300b0201011306637265617465", "not a UTF8String"},
		{"invalid utf-8", "30080201010c03ff6162", "invalid UTF-8"},
		{"args not a sequence", "300f0201010c066372656174650c02766d", "not a SEQUENCE"},
	} {
		_, err := UnmarshalCommand(mustHex(t, tc.hex))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzUnmarshalPolicy(f *testing.F) {
	for _, p := range []policy.Policy{
		{},
		{VMs: 3, CPUs: []int{0, 2}, MemoryMB: 1024, BlockMB: intp(10), Bridges: []string{"br0", "br1"}},
		{VMs: 1, BlockMB: intp(0)},
		{VMs: 2, MemoryMB: 64, ImagesMB: intp(32), Bridges: []string{"br0"}},
	} {
		der, err := MarshalPolicy(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		p, err := UnmarshalPolicy(der)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("decoded an invalid policy %v: %v", p, err)
		}
		again, err := MarshalPolicy(p)
		if err != nil {
			t.Fatalf("decoded policy does not encode: %v", err)
		}
		if !bytes.Equal(again, der) {
			t.Fatalf("accepted a non-canonical encoding %x (canonical %x)", der, again)
		}
	})
}

func FuzzUnmarshalCommand(f *testing.F) {
	for _, c := range []Command{{Name: "create"}, {Name: "console", Args: []string{"a:vm", "--since", "10m"}}} {
		der, err := MarshalCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := UnmarshalCommand(der)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("decoded an invalid command %+v: %v", c, err)
		}
		again, err := MarshalCommand(c)
		if err != nil || !bytes.Equal(again, der) {
			t.Fatalf("accepted a non-canonical encoding %x: %v", der, err)
		}
	})
}
