package solo5

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestTenderArgsArgv(t *testing.T) {
	ta := TenderArgs{
		MemMB: 512,
		Nets: []NetArg{
			{Name: "service0", Iface: "tap0", MAC: "02:00:00:00:00:01"},
			{Name: "admin", Iface: "tap1"},
		},
		Blocks: []BlockArg{
			{Name: "disk", Path: "/var/lib/petrel/disk.img", SectorSize: 4096},
			{Name: "cfg", Path: "cfg=odd.img"},
		},
		Image: "/images/unikernel.hvt",
		Args:  []string{"--ipv4=10.0.0.2/24", "--", "x"},
	}
	want := []string{
		"--mem=512",
		"--net:service0=tap0", "--net-mac:service0=02:00:00:00:00:01",
		"--net:admin=tap1",
		"--block:disk=/var/lib/petrel/disk.img", "--block-sector-size:disk=4096",
		"--block:cfg=cfg=odd.img",
		"--", "/images/unikernel.hvt", "--ipv4=10.0.0.2/24", "--", "x",
	}
	got := ta.Argv()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Argv =\n%q\nwant\n%q", got, want)
	}
	back, err := ParseTenderArgs(got)
	if err != nil {
		t.Fatalf("ParseTenderArgs(Argv): %v", err)
	}
	if !reflect.DeepEqual(back, ta) {
		t.Fatalf("round trip = %+v, want %+v", back, ta)
	}
	if n, b := ta.NetNames(), ta.BlockNames(); !reflect.DeepEqual(n, []string{"admin", "service0"}) || !reflect.DeepEqual(b, []string{"cfg", "disk"}) {
		t.Fatalf("names = %v %v", n, b)
	}

	if err := ta.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for _, bad := range []TenderArgs{
		{},
		{MemMB: -1, Image: "u"},
		{Nets: []NetArg{{Name: "a", Iface: "t", MAC: "zz"}}, Image: "u"},
		{Blocks: []BlockArg{{Name: "a b", Path: "/d"}}, Image: "u"},
		{Blocks: []BlockArg{{Name: "a", Path: "/d", SectorSize: 100}}, Image: "u"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) succeeded", bad)
		}
	}

	minimal := TenderArgs{Image: "u.spt"}
	if got := minimal.Argv(); !reflect.DeepEqual(got, []string{"--", "u.spt"}) {
		t.Fatalf("minimal Argv = %q", got)
	}
}

func TestParseTenderArgsAnyOrder(t *testing.T) {
	argv := []string{
		"--block-sector-size:d=512", "--net-mac:n=AA:bb:cc:dd:ee:ff", "--block:d=/d",
		"--mem=64", "--net:n=tap9", "--", "img", "arg",
	}
	got, err := ParseTenderArgs(argv)
	if err != nil {
		t.Fatal(err)
	}
	want := TenderArgs{
		MemMB:  64,
		Nets:   []NetArg{{Name: "n", Iface: "tap9", MAC: "AA:bb:cc:dd:ee:ff"}},
		Blocks: []BlockArg{{Name: "d", Path: "/d", SectorSize: 512}},
		Image:  "img",
		Args:   []string{"arg"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	canon := []string{"--mem=64", "--net:n=tap9", "--net-mac:n=AA:bb:cc:dd:ee:ff", "--block:d=/d", "--block-sector-size:d=512", "--", "img", "arg"}
	if a := got.Argv(); !reflect.DeepEqual(a, canon) {
		t.Fatalf("canonical Argv = %q", a)
	}
}

func TestParseTenderArgsSpecial(t *testing.T) {
	cases := []struct {
		argv []string
		want error
	}{
		{[]string{"--help"}, ErrHelp},
		{[]string{"--version"}, ErrVersion},
		{[]string{"--mem=x", "--version", "--help"}, ErrVersion},
		{[]string{"--net:a=b", "--help", "--", "img"}, ErrHelp},
	}
	for _, c := range cases {
		if _, err := ParseTenderArgs(c.argv); !errors.Is(err, c.want) {
			t.Errorf("ParseTenderArgs(%q) = %v, want %v", c.argv, err, c.want)
		}
	}
	got, err := ParseTenderArgs([]string{"--", "img", "--help", "--version"})
	if err != nil || !reflect.DeepEqual(got.Args, []string{"--help", "--version"}) {
		t.Fatalf("--help after -- must belong to the unikernel: %+v, %v", got, err)
	}
	if !strings.Contains(TenderUsage, "--block-sector-size:NAME=N") {
		t.Fatal("usage misses an option")
	}
}

func TestParseTenderArgsErrors(t *testing.T) {
	cases := []struct {
		name string
		argv []string
		msg  string
	}{
		{"empty", nil, `missing "--"`},
		{"no separator", []string{"--mem=2", "img"}, `"img": want --OPTION=VALUE`},
		{"no image", []string{"--mem=2", "--"}, "missing unikernel image"},
		{"empty image", []string{"--", ""}, "missing unikernel image"},
		{"unknown option", []string{"--dumpcore=/tmp", "--", "img"}, "unknown option"},
		{"unknown named option", []string{"--disk:a=b", "--", "img"}, "unknown option"},
		{"mem with name", []string{"--mem:a=1", "--", "img"}, "unknown option"},
		{"option without value", []string{"--mem", "--", "img"}, "want --OPTION=VALUE"},
		{"single dash", []string{"-mem=1", "--", "img"}, "want --OPTION=VALUE"},
		{"net without name", []string{"--net=tap0", "--", "img"}, "unknown option"},
		{"mem non-numeric", []string{"--mem=lots", "--", "img"}, "not a decimal number"},
		{"mem signed", []string{"--mem=+5", "--", "img"}, "not a decimal number"},
		{"mem negative", []string{"--mem=-5", "--", "img"}, "not a decimal number"},
		{"mem zero", []string{"--mem=0", "--", "img"}, "greater than zero"},
		{"mem empty", []string{"--mem=", "--", "img"}, "empty number"},
		{"mem overflow", []string{"--mem=99999999999999999999999", "--", "img"}, "out of range"},
		{"mem twice", []string{"--mem=1", "--mem=2", "--", "img"}, "more than once"},
		{"duplicate net", []string{"--net:a=t0", "--net:a=t1", "--", "img"}, `device "a" already configured as a net device`},
		{"duplicate block", []string{"--block:a=/x", "--block:a=/y", "--", "img"}, "already configured as a block device"},
		{"net and block same name", []string{"--net:a=t0", "--block:a=/x", "--", "img"}, "already configured as a net device"},
		{"bad device name", []string{"--net:a-b=t0", "--", "img"}, "characters other than"},
		{"empty device name", []string{"--block:=/x", "--", "img"}, "device name is empty"},
		{"empty iface", []string{"--net:a=", "--", "img"}, "empty interface name"},
		{"empty path", []string{"--block:a=", "--", "img"}, "empty path"},
		{"mac without net", []string{"--net-mac:a=02:00:00:00:00:01", "--", "img"}, "no --net:a=IFACE"},
		{"mac for block", []string{"--block:a=/x", "--net-mac:a=02:00:00:00:00:01", "--", "img"}, "no --net:a=IFACE"},
		{"mac twice", []string{"--net:a=t", "--net-mac:a=02:00:00:00:00:01", "--net-mac:a=02:00:00:00:00:02", "--", "img"}, "more than once"},
		{"mac short", []string{"--net:a=t", "--net-mac:a=02:00:00:00:00", "--", "img"}, "six hex pairs"},
		{"mac dashes", []string{"--net:a=t", "--net-mac:a=02-00-00-00-00-01", "--", "img"}, "six hex pairs"},
		{"mac not hex", []string{"--net:a=t", "--net-mac:a=0g:00:00:00:00:01", "--", "img"}, "six hex pairs"},
		{"sector without block", []string{"--block-sector-size:a=512", "--", "img"}, "no --block:a=PATH"},
		{"sector not power of two", []string{"--block:a=/x", "--block-sector-size:a=1000", "--", "img"}, "power of two"},
		{"sector too small", []string{"--block:a=/x", "--block-sector-size:a=256", "--", "img"}, "power of two"},
		{"sector non-numeric", []string{"--block:a=/x", "--block-sector-size:a=4k", "--", "img"}, "power of two"},
		{"sector twice", []string{"--block:a=/x", "--block-sector-size:a=512", "--block-sector-size:a=4096", "--", "img"}, "more than once"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseTenderArgs(c.argv)
			if err == nil {
				t.Fatalf("ParseTenderArgs(%q) = %+v, want error", c.argv, got)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not contain %q", err, c.msg)
			}
			if errors.Is(err, ErrHelp) || errors.Is(err, ErrVersion) {
				t.Fatalf("error %v is a help/version sentinel", err)
			}
		})
	}
}

func TestValidateDevices(t *testing.T) {
	im := &Image{Target: TargetHVT, Manifest: []Device{{"service0", DeviceNet}, {"disk", DeviceBlock}}}
	if err := ValidateDevices(im, []string{"service0"}, []string{"disk"}); err != nil {
		t.Fatalf("matching configuration: %v", err)
	}
	if err := ValidateDevices(&Image{}, nil, nil); err != nil {
		t.Fatalf("no devices: %v", err)
	}
	cases := []struct {
		name          string
		nets, blocks  []string
		wantFragments []string
	}{
		{"missing net", nil, []string{"disk"}, []string{`manifest declares net device "service0" but it is not configured`}},
		{"missing block", []string{"service0"}, nil, []string{`manifest declares block device "disk" but it is not configured`}},
		{"extra block", []string{"service0"}, []string{"disk", "scratch"}, []string{`block device "scratch" is configured but not declared in the image's manifest`}},
		{"extra net", []string{"service0", "admin"}, []string{"disk"}, []string{`net device "admin" is configured but not declared in the image's manifest`}},
		{"wrong type", []string{"service0", "disk"}, nil, []string{`device "disk" is configured as a net device but the image's manifest declares it as block`}},
		{"duplicate", []string{"service0", "service0"}, []string{"disk"}, []string{`net device "service0" is configured more than once`}},
		{"both types", []string{"service0"}, []string{"disk", "service0"}, []string{`device "service0" is configured as both a net and a block device`}},
		{"several", nil, []string{"other"}, []string{
			`block device "other" is configured but not declared`,
			`manifest declares net device "service0" but it is not configured`,
			`manifest declares block device "disk" but it is not configured`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ValidateDevices(im, c.nets, c.blocks)
			if !errors.Is(err, ErrDeviceMismatch) {
				t.Fatalf("error %v does not wrap ErrDeviceMismatch", err)
			}
			for _, f := range c.wantFragments {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not contain %q", err, f)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans several lines", err)
			}
		})
	}
}

// TestValidateBuiltImage ties the pieces together: the devices declared by a
// built image, read back, match a command line naming the same devices.
func TestValidateBuiltImage(t *testing.T) {
	im, err := readBytes(defaultImage(t))
	if err != nil {
		t.Fatal(err)
	}
	ta, err := ParseTenderArgs([]string{"--net:service0=tap0", "--block:disk=/d", "--block:data_1=/e", "--", "u.hvt"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateDevices(im, ta.NetNames(), ta.BlockNames()); err != nil {
		t.Fatal(err)
	}
	ta.Blocks = ta.Blocks[:1]
	if err := ValidateDevices(im, ta.NetNames(), ta.BlockNames()); err == nil || !strings.Contains(err.Error(), `"data_1"`) {
		t.Fatalf("missing data_1: %v", err)
	}
}

func TestParseTenderCommandLine(t *testing.T) {
	a, err := ParseTenderCommandLine([]string{"--mem=64", "--block:storage=/d", "img", "x", "--y"})
	if err != nil {
		t.Fatal(err)
	}
	if a.MemMB != 64 || a.Image != "img" || len(a.Args) != 2 || a.Args[1] != "--y" ||
		len(a.Blocks) != 1 || a.Blocks[0].Path != "/d" {
		t.Errorf("without -- = %+v", a)
	}
	a, err = ParseTenderCommandLine([]string{"--net:service0=tap0", "--net-mac:service0=02:00:00:00:00:01", "--", "img", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Image != "img" || len(a.Nets) != 1 || a.Nets[0].MAC != "02:00:00:00:00:01" || a.Nets[0].Iface != "tap0" {
		t.Errorf("with -- = %+v", a)
	}
	a, err = ParseTenderCommandLine([]string{"--", "img", "-v", "--", "z"})
	if err != nil || a.Image != "img" || !reflect.DeepEqual(a.Args, []string{"-v", "--", "z"}) {
		t.Errorf("arguments after -- = %+v, %v", a, err)
	}
	if _, err := ParseTenderCommandLine([]string{"--version", "img"}); !errors.Is(err, ErrVersion) {
		t.Errorf("--version: %v", err)
	}
	for _, bad := range [][]string{nil, {"--mem=x", "img"}, {"--bogus", "img"}, {"--"}} {
		if _, err := ParseTenderCommandLine(bad); err == nil {
			t.Errorf("ParseTenderCommandLine(%q) accepted", bad)
		}
	}
}

func TestGuestCmdline(t *testing.T) {
	got, err := GuestCmdline([]string{"a", "b c", ""})
	if err != nil || string(got) != "a b c \x00" {
		t.Errorf("GuestCmdline = %q, %v", got, err)
	}
	got, err = GuestCmdline(nil)
	if err != nil || string(got) != "\x00" {
		t.Errorf("empty GuestCmdline = %q, %v", got, err)
	}
	if _, err := GuestCmdline([]string{strings.Repeat("x", MaxCmdline-1)}); err != nil {
		t.Errorf("longest command line refused: %v", err)
	}
	if _, err := GuestCmdline([]string{strings.Repeat("x", MaxCmdline-2), "y"}); err == nil {
		t.Errorf("too long command line accepted")
	}
}

func TestCheckArgs(t *testing.T) {
	fits := strings.Repeat("a", MaxCmdline-3)
	for _, ok := range [][]string{nil, {}, {"a", "b"}, {fits, "b"}, {strings.Repeat("x", MaxCmdline-1)}} {
		if err := CheckArgs(ok); err != nil {
			t.Errorf("CheckArgs(%d args) = %v", len(ok), err)
		}
	}
	for _, bad := range [][]string{
		{strings.Repeat("x", MaxCmdline)},
		{fits, "bc"},
		{strings.Repeat("x", 200<<10)},
		{"a\x00b"},
	} {
		err := CheckArgs(bad)
		if err == nil {
			t.Errorf("CheckArgs accepted %d bytes", len(strings.Join(bad, " ")))
			continue
		}
		if !strings.Contains(bad[0], "\x00") && !strings.Contains(err.Error(), "8191") {
			t.Errorf("CheckArgs error does not name the limit: %v", err)
		}
	}
}
