package network

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
)

func TestTapName(t *testing.T) {
	seen := map[string]string{}
	for _, vm := range []string{"a", "team:app:web", strings.Repeat("x", 300), "a/b"} {
		for _, dev := range []string{"service0", "mgmt", "b"} {
			name := TapName(vm, dev)
			if name != TapName(vm, dev) {
				t.Fatalf("TapName(%q, %q) not deterministic", vm, dev)
			}
			if len(name) != 14 || len(name) > MaxIfNameLen || !strings.HasPrefix(name, TapPrefix) {
				t.Fatalf("TapName(%q, %q) = %q; want %s + 12 hex digits", vm, dev, name, TapPrefix)
			}
			if err := ValidIfName(name); err != nil {
				t.Fatalf("TapName(%q, %q) = %q: %v", vm, dev, name, err)
			}
			if strings.ToLower(name) != name {
				t.Fatalf("TapName %q not lower case", name)
			}
			key := vm + "\x00" + dev
			if prev, ok := seen[name]; ok && prev != key {
				t.Fatalf("TapName collision for %q and %q", prev, key)
			}
			seen[name] = key
		}
	}
	if TapName("a", "b") == TapName("b", "a") || TapName("a:b", "c") == TapName("a", "b:c") {
		t.Fatal("TapName confuses distinct inputs")
	}
}

// The schemes are part of the contract between petreld and plugins and
// must not change: pin one value of each (checked against sha256sum).
func TestSchemesPinned(t *testing.T) {
	if got, want := TapName("vm", "net"), "pt4851d6684f15"; got != want {
		t.Errorf("TapName(vm, net) = %s; want %s", got, want)
	}
	if got, want := DeriveMAC("vm", "net"), "ee:df:1a:17:ed:52"; got != want {
		t.Errorf("DeriveMAC(vm, net) = %s; want %s", got, want)
	}
}

func TestDeriveMAC(t *testing.T) {
	seen := map[string]bool{}
	for i := range 2000 {
		vm, dev := fmt.Sprintf("team:vm%d", i), "service0"
		mac := DeriveMAC(vm, dev)
		if mac != DeriveMAC(vm, dev) {
			t.Fatalf("DeriveMAC(%q) not deterministic", vm)
		}
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 || hw.String() != mac {
			t.Fatalf("DeriveMAC = %q: not a canonical 48-bit MAC (%v)", mac, err)
		}
		if hw[0]&0x02 == 0 || hw[0]&0x01 != 0 || hw[0] == 0xfe {
			t.Fatalf("DeriveMAC = %q: want locally administered, unicast, not 0xfe", mac)
		}
		if seen[mac] {
			t.Fatalf("DeriveMAC collision at %q", mac)
		}
		seen[mac] = true
		if _, err := ParseMAC(mac); err != nil {
			t.Fatalf("ParseMAC refuses derived %q: %v", mac, err)
		}
	}
	if DeriveMAC("vm", "a") == DeriveMAC("vm", "b") || DeriveMAC("vm1", "a") == DeriveMAC("vm2", "a") {
		t.Fatal("DeriveMAC ignores an input")
	}
}

func TestParseMAC(t *testing.T) {
	good := map[string]string{
		"02:AA:bb:CC:dd:EE":  "02:aa:bb:cc:dd:ee",
		"02-aa-bb-cc-dd-ee":  "02:aa:bb:cc:dd:ee",
		"02aa.bbcc.ddee":     "02:aa:bb:cc:dd:ee",
		" 52:54:00:12:34:56": "52:54:00:12:34:56",
	}
	for in, want := range good {
		if got, err := ParseMAC(in); err != nil || got != want {
			t.Errorf("ParseMAC(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "junk", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "02:00:00:00:00:00:00:01", "02:00:00:00:00"} {
		if got, err := ParseMAC(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseMAC(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
}

func TestHostMAC(t *testing.T) {
	for guest, want := range map[string]string{
		"02:11:22:33:44:55": "fe:11:22:33:44:55",
		"fe:11:22:33:44:55": "fa:11:22:33:44:55",
	} {
		if got, err := HostMAC(guest); err != nil || got != want {
			t.Errorf("HostMAC(%s) = %s, %v; want %s", guest, got, err, want)
		}
	}
	if _, err := HostMAC("01:00:00:00:00:00"); !errors.Is(err, ErrInvalid) {
		t.Errorf("HostMAC(multicast) = %v; want ErrInvalid", err)
	}
}

func TestValidIfName(t *testing.T) {
	for _, ok := range []string{"br0", "pt0123456789ab", "a", "x-y_z.1", strings.Repeat("a", 15)} {
		if err := ValidIfName(ok); err != nil {
			t.Errorf("ValidIfName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a:b", "a b", "a\tb", "a\x00", strings.Repeat("a", 16)} {
		if err := ValidIfName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidIfName(%q) = %v; want ErrInvalid", bad, err)
		}
	}
}

func TestAliasRoundTrip(t *testing.T) {
	tags := []Tag{
		{VM: "team:app:web", Net: "service0", MAC: "02:aa:bb:cc:dd:ee"},
		{VM: "a b=c%d/e", Net: "n", MAC: ""},
		{VM: "vm", Net: "x mac=02:00:00:00:00:01"},
		{VM: "ünïcode:vm", Net: "service0"},
	}
	for _, tag := range tags {
		s, err := tag.Alias()
		if err != nil {
			t.Fatalf("Alias(%+v): %v", tag, err)
		}
		if !strings.HasPrefix(s, "petrel/v1 vm=") || len(s) > MaxAliasLen {
			t.Fatalf("Alias(%+v) = %q", tag, s)
		}
		back, ok := ParseAlias(s)
		if !ok || back != tag || !back.Same(tag) {
			t.Fatalf("ParseAlias(%q) = %+v, %v; want %+v", s, back, ok, tag)
		}
	}
	a, _ := Tag{VM: "vm", Net: "n", MAC: "02:00:00:00:00:01"}.Alias()
	if a != "petrel/v1 vm=vm net=n mac=02:00:00:00:00:01" {
		t.Fatalf("encoding changed: %q", a)
	}
	if !(Tag{VM: "a", Net: "b", MAC: "02:00:00:00:00:01"}).Same(Tag{VM: "a", Net: "b"}) || (Tag{VM: "a", Net: "b"}).Same(Tag{VM: "a", Net: "c"}) {
		t.Fatal("Same compares the wrong fields")
	}
}

func TestAliasRefusals(t *testing.T) {
	for _, tag := range []Tag{{Net: "n"}, {VM: "v"}, {VM: "v", Net: "n", MAC: "junk"}, {VM: strings.Repeat("v", 250), Net: "n"}} {
		if s, err := tag.Alias(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Alias(%+v) = %q, %v; want ErrInvalid", tag, s, err)
		}
	}
	for _, s := range []string{"", "libvirt tap", "petrel/v1", "petrel/v1 ", "petrel/v1 vm=a", "petrel/v1 net=b", "petrel/v2 vm=a net=b",
		"petrel/v1 vm=a net=b mac=01:00:00:00:00:00", "petrel/v1 vm=a net=b junk", "petrel/v1 vm=%zz net=b", "petrel/v1  vm=a net=b"} {
		if tag, ok := ParseAlias(s); ok {
			t.Errorf("ParseAlias(%q) = %+v; want not ours", s, tag)
		}
	}
	if tag, ok := ParseAlias("petrel/v1 vm=a net=b future=1"); !ok || tag.VM != "a" || tag.Net != "b" {
		t.Errorf("unknown fields not ignored: %+v %v", tag, ok)
	}
}

// TestOwnedNames: names and addresses derived for an instance differ from
// those of another instance and from the ownerless ones, and an owner
// rides in the tag.
func TestOwnedNames(t *testing.T) {
	a, b := "0123456789abcdef", "fedcba9876543210"
	if TapNameFor("", "web", "service0") != TapName("web", "service0") || DeriveMACFor("", "web", "service0") != DeriveMAC("web", "service0") {
		t.Fatal("an empty owner does not give the ownerless names")
	}
	names := map[string]bool{TapName("web", "service0"): true, TapNameFor(a, "web", "service0"): true, TapNameFor(b, "web", "service0"): true}
	macs := map[string]bool{DeriveMAC("web", "service0"): true, DeriveMACFor(a, "web", "service0"): true, DeriveMACFor(b, "web", "service0"): true}
	if len(names) != 3 || len(macs) != 3 {
		t.Fatalf("instances share names or addresses: %v %v", names, macs)
	}
	for n := range names {
		if err := ValidIfName(n); err != nil || !strings.HasPrefix(n, TapPrefix) {
			t.Errorf("tap name %q: %v", n, err)
		}
	}
	for m := range macs {
		if _, err := ParseMAC(m); err != nil {
			t.Errorf("MAC %q: %v", m, err)
		}
	}
	tag := Tag{VM: "team:web", Net: "service0", MAC: DeriveMACFor(a, "team:web", "service0"), Owner: a}
	s, err := tag.Alias()
	if err != nil || !strings.HasSuffix(s, " owner="+a) {
		t.Fatalf("Alias = %q, %v", s, err)
	}
	back, ok := ParseAlias(s)
	if !ok || back != tag {
		t.Fatalf("ParseAlias(%q) = %+v, %v", s, back, ok)
	}
	if tag.Same(Tag{VM: "team:web", Net: "service0", Owner: b}) {
		t.Error("taps of two instances are the same")
	}
	if !tag.Same(Tag{VM: "team:web", Net: "service0"}) {
		t.Error("an ownerless tap is not adopted by its VM")
	}
}
