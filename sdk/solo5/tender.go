package solo5

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ErrHelp is returned by ParseTenderArgs when --help appears among the
// tender options, so a tender can print TenderUsage and exit successfully.
var ErrHelp = errors.New("tender help requested")

// ErrVersion is returned by ParseTenderArgs when --version appears among the
// tender options, so a tender can print its version and exit successfully.
var ErrVersion = errors.New("tender version requested")

// ErrDeviceMismatch is wrapped by ValidateDevices errors, so callers can
// tell a configuration problem from other failures.
var ErrDeviceMismatch = errors.New("device configuration does not match the image manifest")

// TenderUsage is the option summary of a Solo5 tender, for --help output and
// usage errors.
const TenderUsage = `usage: TENDER [--mem=MB] [--net:NAME=IFACE]... [--net-mac:NAME=MAC]...
              [--block:NAME=PATH]... [--block-sector-size:NAME=N]...
              -- IMAGE [ARGS...]
  --mem=MB                     guest memory in MB
  --net:NAME=IFACE             attach network device NAME to host interface IFACE
  --net-mac:NAME=MAC           guest MAC address (xx:xx:xx:xx:xx:xx) of NAME
  --block:NAME=PATH            attach block device NAME to host file PATH
  --block-sector-size:NAME=N   sector size of NAME, a power of two >= 512
  --help, --version            print help or version and exit`

// MaxCmdline is the size of a Solo5 guest's command line buffer in bytes,
// terminating NUL included (HVT_CMDLINE_SIZE and SPT_CMDLINE_SIZE, the
// same for virtio): the tender joins the
// unikernel's arguments with single spaces and copies them, with a
// terminating NUL, into it. Arguments that do not fit are refused by the
// tender when it starts, so Petrel refuses them before anything starts.
const MaxCmdline = 8192

// CheckArgs reports whether args fit a Solo5 guest's command line: every
// argument free of NUL bytes, and all of them joined with single spaces
// at most MaxCmdline-1 bytes (one argument alone included). The error
// names the limit.
func CheckArgs(args []string) error {
	n := 0
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("argument %d contains a NUL byte, which a command line cannot carry", i+1)
		}
		if i > 0 {
			n++
		}
		n += len(a)
	}
	if n > MaxCmdline-1 {
		return fmt.Errorf("the unikernel's arguments take %d bytes joined with spaces; a Solo5 command line holds at most %d (%d bytes with its terminating NUL)", n, MaxCmdline-1, MaxCmdline)
	}
	return nil
}

// NetArg attaches the manifest network device Name to the host interface
// Iface (a tap device for hvt and spt). MAC is the guest MAC address, or ""
// to let the tender choose one.
type NetArg struct {
	Name  string
	Iface string
	MAC   string
}

// BlockArg attaches the manifest block device Name to the host file Path.
// SectorSize is the sector size in bytes, or 0 for the tender's default.
type BlockArg struct {
	Name       string
	Path       string
	SectorSize int
}

// TenderArgs is the command line of a Solo5 tender (solo5-hvt, solo5-spt and
// Petrel's own tenders), without the program name. Petrel builds one to start
// a tender and a tender parses its own command line into one, so both sides
// agree on the syntax.
type TenderArgs struct {
	// MemMB is the guest memory in MB; 0 means not given (tender default).
	MemMB int
	// Nets and Blocks are the attached devices, in command-line order.
	Nets   []NetArg
	Blocks []BlockArg
	// Image is the unikernel path and Args its arguments.
	Image string
	Args  []string
}

// Argv renders t in canonical order: --mem, then each network device with
// its MAC, then each block device with its sector size, then "--", the image
// and its arguments. The result excludes the program name, so it is ready
// for exec.Command(tender, t.Argv()...).
func (t TenderArgs) Argv() []string {
	var argv []string
	if t.MemMB != 0 {
		argv = append(argv, "--mem="+strconv.Itoa(t.MemMB))
	}
	for _, n := range t.Nets {
		argv = append(argv, "--net:"+n.Name+"="+n.Iface)
		if n.MAC != "" {
			argv = append(argv, "--net-mac:"+n.Name+"="+n.MAC)
		}
	}
	for _, b := range t.Blocks {
		argv = append(argv, "--block:"+b.Name+"="+b.Path)
		if b.SectorSize != 0 {
			argv = append(argv, "--block-sector-size:"+b.Name+"="+strconv.Itoa(b.SectorSize))
		}
	}
	argv = append(argv, "--", t.Image)
	return append(argv, t.Args...)
}

// Validate checks that t renders to a command line that ParseTenderArgs
// accepts, so a configuration is rejected before a tender is started rather
// than by the tender.
func (t TenderArgs) Validate() error {
	_, err := ParseTenderArgs(t.Argv())
	return err
}

// NetNames returns the configured network device names, sorted, for
// ValidateDevices.
func (t TenderArgs) NetNames() []string {
	names := make([]string, 0, len(t.Nets))
	for _, n := range t.Nets {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	return names
}

// BlockNames returns the configured block device names, sorted, for
// ValidateDevices.
func (t TenderArgs) BlockNames() []string {
	names := make([]string, 0, len(t.Blocks))
	for _, b := range t.Blocks {
		names = append(names, b.Name)
	}
	sort.Strings(names)
	return names
}

// ParseTenderArgs parses a tender command line (without the program name).
// It is strict so that mistakes surface before a VM starts: every option
// must be known, given before "--" and well-formed; device names must be
// valid and unique across network and block devices; --net-mac and
// --block-sector-size need a matching --net or --block (in any order); and
// "--" must be followed by the image path. If --help or --version appears
// before "--", ParseTenderArgs returns ErrHelp or ErrVersion (whichever comes
// first) without checking the rest.
func ParseTenderArgs(argv []string) (TenderArgs, error) {
	for _, a := range argv {
		if a == "--" {
			break
		}
		switch a {
		case "--help":
			return TenderArgs{}, ErrHelp
		case "--version":
			return TenderArgs{}, ErrVersion
		}
	}

	var t TenderArgs
	memSet := false
	macs := map[string]string{}
	sectors := map[string]int{}
	kinds := map[string]string{} // device name -> "net" or "block"
	var macOrder, sectorOrder []string
	i := 0
	for ; i < len(argv) && argv[i] != "--"; i++ {
		a := argv[i]
		opt, val, hasVal := strings.Cut(a, "=")
		key, name, hasName := strings.Cut(opt, ":")
		if !strings.HasPrefix(a, "--") || !hasVal {
			return TenderArgs{}, fmt.Errorf("tender argument %q: want --OPTION=VALUE before \"--\"", a)
		}
		named := hasName && (key == "--net" || key == "--net-mac" || key == "--block" || key == "--block-sector-size")
		if named && !ValidDeviceName(name) {
			return TenderArgs{}, fmt.Errorf("tender option %q: %w", a, deviceNameError(name))
		}
		switch {
		case key == "--mem" && !hasName:
			if memSet {
				return TenderArgs{}, fmt.Errorf("tender option %q: --mem given more than once", a)
			}
			n, err := parsePositive(val)
			if err != nil {
				return TenderArgs{}, fmt.Errorf("tender option %q: memory size: %w", a, err)
			}
			t.MemMB, memSet = n, true
		case key == "--net" && hasName:
			if err := claimName(kinds, name, "net"); err != nil {
				return TenderArgs{}, fmt.Errorf("tender option %q: %w", a, err)
			}
			if val == "" {
				return TenderArgs{}, fmt.Errorf("tender option %q: empty interface name", a)
			}
			t.Nets = append(t.Nets, NetArg{Name: name, Iface: val})
		case key == "--net-mac" && hasName:
			if _, dup := macs[name]; dup {
				return TenderArgs{}, fmt.Errorf("tender option %q: MAC address of %q given more than once", a, name)
			}
			if !validMAC(val) {
				return TenderArgs{}, fmt.Errorf("tender option %q: MAC address must be six hex pairs separated by colons (xx:xx:xx:xx:xx:xx)", a)
			}
			macs[name] = val
			macOrder = append(macOrder, name)
		case key == "--block" && hasName:
			if err := claimName(kinds, name, "block"); err != nil {
				return TenderArgs{}, fmt.Errorf("tender option %q: %w", a, err)
			}
			if val == "" {
				return TenderArgs{}, fmt.Errorf("tender option %q: empty path", a)
			}
			t.Blocks = append(t.Blocks, BlockArg{Name: name, Path: val})
		case key == "--block-sector-size" && hasName:
			if _, dup := sectors[name]; dup {
				return TenderArgs{}, fmt.Errorf("tender option %q: sector size of %q given more than once", a, name)
			}
			n, err := parsePositive(val)
			if err != nil || n < 512 || n&(n-1) != 0 {
				return TenderArgs{}, fmt.Errorf("tender option %q: sector size must be a power of two of at least 512", a)
			}
			sectors[name] = n
			sectorOrder = append(sectorOrder, name)
		default:
			return TenderArgs{}, fmt.Errorf("tender option %q: unknown option", a)
		}
	}
	for _, name := range macOrder {
		if kinds[name] != "net" {
			return TenderArgs{}, fmt.Errorf("tender option --net-mac:%s: no --net:%s=IFACE", name, name)
		}
	}
	for _, name := range sectorOrder {
		if kinds[name] != "block" {
			return TenderArgs{}, fmt.Errorf("tender option --block-sector-size:%s: no --block:%s=PATH", name, name)
		}
	}
	for k := range t.Nets {
		t.Nets[k].MAC = macs[t.Nets[k].Name]
	}
	for k := range t.Blocks {
		t.Blocks[k].SectorSize = sectors[t.Blocks[k].Name]
	}
	if i == len(argv) {
		return TenderArgs{}, errors.New(`tender command line: missing "--" before the unikernel image`)
	}
	if i+1 == len(argv) || argv[i+1] == "" {
		return TenderArgs{}, errors.New(`tender command line: missing unikernel image after "--"`)
	}
	t.Image = argv[i+1]
	t.Args = append([]string(nil), argv[i+2:]...)
	return t, nil
}

// ParseTenderCommandLine parses a tender's own command line (without the
// program name) the way solo5-hvt and solo5-spt accept it: as
// ParseTenderArgs does, except that options also end at the first argument
// that does not start with "-", so the image may be given without a
// preceding "--". Petrel's built-in tenders use it so that scripts written
// for the upstream tenders run unchanged.
func ParseTenderCommandLine(argv []string) (TenderArgs, error) {
	for i, a := range argv {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			fixed := make([]string, 0, len(argv)+1)
			fixed = append(fixed, argv[:i]...)
			fixed = append(fixed, "--")
			argv = append(fixed, argv[i:]...)
			break
		}
	}
	return ParseTenderArgs(argv)
}

// GuestCmdline returns the command line a tender hands its guest: args
// joined with single spaces, as the Solo5 tenders join them, and a NUL. It
// fails, as they do, when the result does not fit in MaxCmdline bytes.
func GuestCmdline(args []string) ([]byte, error) {
	var b []byte
	for i, a := range args {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, a...)
		if len(b) >= MaxCmdline {
			return nil, fmt.Errorf("guest command line too long (max=%d characters)", MaxCmdline-1)
		}
	}
	return append(b, 0), nil
}

// claimName records that name is used by a device of kind, failing if any
// device already uses it: manifest names are unique across types.
func claimName(kinds map[string]string, name, kind string) error {
	if prev, ok := kinds[name]; ok {
		return fmt.Errorf("device %q already configured as a %s device", name, prev)
	}
	kinds[name] = kind
	return nil
}

// parsePositive parses a decimal number of plain digits greater than zero.
func parsePositive(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	if n == 0 {
		return 0, errors.New("must be greater than zero")
	}
	return n, nil
}

// validMAC reports whether s has the form xx:xx:xx:xx:xx:xx with hex digits.
func validMAC(s string) bool {
	if len(s) != 17 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i%3 == 2 {
			if c != ':' {
				return false
			}
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// ValidateDevices checks that the configured network and block device names
// are, per type, exactly the devices declared in the image's manifest: the
// Solo5 tenders refuse to start otherwise, with a less helpful message. The
// error names every difference and wraps ErrDeviceMismatch.
func ValidateDevices(im *Image, nets, blocks []string) error {
	declared := map[string]DeviceType{}
	for _, d := range im.Manifest {
		declared[d.Name] = d.Type
	}
	configured := map[string]DeviceType{}
	var msgs []string
	for _, c := range []struct {
		names []string
		typ   DeviceType
	}{{nets, DeviceNet}, {blocks, DeviceBlock}} {
		for _, name := range c.names {
			if prev, ok := configured[name]; ok {
				if prev == c.typ {
					msgs = append(msgs, fmt.Sprintf("%v device %q is configured more than once", c.typ, name))
				} else {
					msgs = append(msgs, fmt.Sprintf("device %q is configured as both a %v and a %v device", name, prev, c.typ))
				}
				continue
			}
			configured[name] = c.typ
			want, ok := declared[name]
			switch {
			case !ok:
				msgs = append(msgs, fmt.Sprintf("%v device %q is configured but not declared in the image's manifest", c.typ, name))
			case want != c.typ:
				msgs = append(msgs, fmt.Sprintf("device %q is configured as a %v device but the image's manifest declares it as %v", name, c.typ, want))
			}
		}
	}
	for _, d := range im.Manifest {
		if _, ok := configured[d.Name]; !ok {
			msgs = append(msgs, fmt.Sprintf("manifest declares %v device %q but it is not configured", d.Type, d.Name))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrDeviceMismatch, joinMessages(msgs))
}
