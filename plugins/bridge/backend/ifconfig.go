package backend

import (
	"fmt"
	"strconv"
	"strings"
)

// ifconfigInfo is what FreeBSD's `ifconfig NAME` reports about one
// interface. The parsers live in a file without build constraints so that
// they are tested on every platform.
type ifconfigInfo struct {
	name        string
	flags       []string
	mtu         int
	description string
	ether       string
	groups      []string
	members     []string
}

// up reports whether the interface is administratively up.
func (i ifconfigInfo) up() bool { return hasString(i.flags, "UP") }

// inGroup reports whether the interface belongs to an interface group
// ("bridge", "tap"), which is how FreeBSD tells interface types apart.
func (i ifconfigInfo) inGroup(g string) bool { return hasString(i.groups, g) }

func hasString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// parseIfconfig reads the output of `ifconfig NAME` for one interface:
//
//	bridge0: flags=1008843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST,LOWER_UP> metric 0 mtu 1500
//		description: petrel/v1 vm=a net=b
//		ether 58:9c:fc:10:ff:a8
//		member: tap0 flags=143<LEARNING,DISCOVER,AUTOEDGE,AUTOPTP>
//		groups: bridge
func parseIfconfig(out string) (ifconfigInfo, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	head := lines[0]
	name, rest, ok := strings.Cut(head, ": ")
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return ifconfigInfo{}, fmt.Errorf("unexpected ifconfig output %q", head)
	}
	info := ifconfigInfo{name: name}
	if f, ok := strings.CutPrefix(rest, "flags="); ok {
		if i, j := strings.IndexByte(f, '<'), strings.IndexByte(f, '>'); i >= 0 && j > i {
			if s := f[i+1 : j]; s != "" {
				info.flags = strings.Split(s, ",")
			}
		}
	}
	fields := strings.Fields(rest)
	for k := 0; k+1 < len(fields); k++ {
		if fields[k] == "mtu" {
			mtu, err := strconv.Atoi(fields[k+1])
			if err != nil {
				return ifconfigInfo{}, fmt.Errorf("unexpected mtu in %q", head)
			}
			info.mtu = mtu
		}
	}
	for _, l := range lines[1:] {
		l = strings.TrimLeft(l, " \t")
		switch {
		case strings.HasPrefix(l, "description: "):
			info.description = strings.TrimPrefix(l, "description: ")
		case strings.HasPrefix(l, "ether "):
			if f := strings.Fields(l); len(f) >= 2 {
				info.ether = f[1]
			}
		case strings.HasPrefix(l, "groups: "):
			info.groups = strings.Fields(strings.TrimPrefix(l, "groups: "))
		case strings.HasPrefix(l, "member: "):
			if f := strings.Fields(l); len(f) >= 2 {
				info.members = append(info.members, f[1])
			}
		}
	}
	return info, nil
}

// netstatCounters reads the link-level line of `netstat -i -b -d -n -W -I
// NAME`. Columns are matched by header name and aligned from the right,
// because the Address column is empty for interfaces without one.
func netstatCounters(out, name string) (map[string]uint64, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("no netstat output for %s", name)
	}
	header := strings.Fields(lines[0])
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 2 || strings.TrimSuffix(f[0], "*") != name || !strings.Contains(l, "<Link#") {
			continue
		}
		if len(f) > len(header) {
			return nil, fmt.Errorf("unexpected netstat line %q", l)
		}
		off := len(header) - len(f)
		counters := map[string]uint64{}
		for i := len(f) - 1; i >= 0 && i+off >= 0; i-- {
			col := header[i+off]
			switch col {
			case "Ipkts", "Ierrs", "Idrop", "Ibytes", "Opkts", "Oerrs", "Obytes", "Drop":
				v, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					return nil, fmt.Errorf("netstat column %s of %s: %q", col, name, f[i])
				}
				counters[col] = v
			}
		}
		return counters, nil
	}
	return nil, fmt.Errorf("no link-level netstat line for %s", name)
}
