package tender

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// netArg is one --net:NAME=TAP option, with its --net-mac:NAME=MAC if given.
type netArg struct {
	Name, Iface, MAC string
}

// blockArg is one --block:NAME=PATH option, with its
// --block-sector-size:NAME=N if given (0 otherwise).
type blockArg struct {
	Name, Path string
	SectorSize int
}

// tenderArgs is the parsed solo5-hvt command line.
type tenderArgs struct {
	MemMB  int
	Nets   []netArg
	Blocks []blockArg
	Image  string
	Args   []string
}

// parseArgs parses the solo5-hvt command line (without the program name):
// options, an optional "--", the image and the guest's arguments.
func parseArgs(argv []string) (tenderArgs, error) {
	a := tenderArgs{MemMB: DefaultMemMB}
	nets := map[string]int{}
	blocks := map[string]int{}
	macs := map[string]string{}
	sizes := map[string]int{}
	i := 0
	for ; i < len(argv) && strings.HasPrefix(argv[i], "-"); i++ {
		opt := argv[i]
		if opt == "--" {
			i++
			break
		}
		if v, ok := strings.CutPrefix(opt, "--mem="); ok {
			mb, err := strconv.Atoi(v)
			if err != nil || mb <= 0 {
				return a, fmt.Errorf("malformed argument to --mem: %q", v)
			}
			a.MemMB = mb
			continue
		}
		kind, rest, ok := strings.Cut(strings.TrimPrefix(opt, "--"), ":")
		if !ok || !strings.HasPrefix(opt, "--") {
			return a, fmt.Errorf("invalid option: `%s'", opt)
		}
		name, val, ok := strings.Cut(rest, "=")
		if !ok || val == "" {
			return a, fmt.Errorf("malformed option %q: want --%s:NAME=VALUE", opt, kind)
		}
		if !solo5.ValidDeviceName(name) {
			return a, fmt.Errorf("option %q: invalid device name %q", opt, name)
		}
		switch kind {
		case "net":
			if _, dup := nets[name]; dup {
				return a, fmt.Errorf("net device %q given more than once", name)
			}
			nets[name] = len(a.Nets)
			a.Nets = append(a.Nets, netArg{Name: name, Iface: val})
		case "net-mac":
			if _, err := net.ParseMAC(val); err != nil {
				return a, fmt.Errorf("option %q: malformed MAC address: %w", opt, err)
			}
			macs[name] = val
		case "block":
			if _, dup := blocks[name]; dup {
				return a, fmt.Errorf("block device %q given more than once", name)
			}
			blocks[name] = len(a.Blocks)
			a.Blocks = append(a.Blocks, blockArg{Name: name, Path: val})
		case "block-sector-size":
			n, err := strconv.Atoi(val)
			if err != nil || n < 512 || n&(n-1) != 0 || n > 1<<16-1 {
				return a, fmt.Errorf("option %q: sector size must be a power of two, at least 512 and below 65536", opt)
			}
			sizes[name] = n
		default:
			return a, fmt.Errorf("invalid option: `%s'", opt)
		}
	}
	for name, mac := range macs {
		j, ok := nets[name]
		if !ok {
			return a, fmt.Errorf("--net-mac:%s given without --net:%s", name, name)
		}
		a.Nets[j].MAC = mac
	}
	for name, n := range sizes {
		j, ok := blocks[name]
		if !ok {
			return a, fmt.Errorf("--block-sector-size:%s given without --block:%s", name, name)
		}
		a.Blocks[j].SectorSize = n
	}
	if i >= len(argv) {
		return a, fmt.Errorf("missing KERNEL operand")
	}
	a.Image = argv[i]
	a.Args = argv[i+1:]
	return a, nil
}
