package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// MaxIfNameLen is the longest interface name Linux and FreeBSD accept
// (IFNAMSIZ minus the terminating NUL).
const MaxIfNameLen = 15

// MaxAliasLen is the longest tag a Linux interface can carry (IFALIASZ
// minus the terminating NUL). FreeBSD descriptions allow more, so tags are
// held to the smaller limit everywhere.
const MaxAliasLen = 255

// TapPrefix starts every interface name TapName derives, so that an
// operator can tell Petrel's taps apart in `ip link` at a glance.
const TapPrefix = "pt"

// TapName returns the host interface name for device netName of VM vm:
// TapPrefix followed by the first 12 lower-case hex digits of
// SHA-256(vm + "/" + netName), 14 bytes in all (device names never hold
// '/', so distinct pairs hash distinct strings). The name depends only on
// its inputs, so petreld, a restarted plugin and an operator all compute
// the same name for the same VM device, and it always fits IFNAMSIZ
// whatever the length of the VM name. The 48-bit hash makes collisions
// between the taps of one host negligible; a collision would be refused by
// Attach because the existing interface carries another VM's Tag.
func TapName(vm, netName string) string {
	sum := sha256.Sum256([]byte(vm + "/" + netName))
	return TapPrefix + hex.EncodeToString(sum[:6])
}

// TapNameFor is TapName for the taps of the petreld instance owner (its
// data directory's instance id): TapPrefix followed by the first 12 hex
// digits of SHA-256(owner + "/" + vm + "/" + netName), so that two
// instances on one host (each with its own data directory) never derive
// the same name, even for VMs of the same name. An empty owner gives
// TapName.
func TapNameFor(owner, vm, netName string) string {
	if owner == "" {
		return TapName(vm, netName)
	}
	sum := sha256.Sum256([]byte(owner + "/" + vm + "/" + netName))
	return TapPrefix + hex.EncodeToString(sum[:6])
}

// DeriveMAC returns the guest MAC address used when the user gives none:
// the first six bytes of SHA-256("petrel-mac/" + vm + "/" + netName), with
// the first octet's locally-administered bit (0x02) set and its multicast
// bit (0x01) cleared, written as xx:xx:xx:xx:xx:xx in lower case. A first
// octet of 0xfe is replaced by 0xfa, because 0xfe starts the MAC of the
// host side of a tap (see HostMAC). The address depends only on the VM
// name and device name, so a restarted VM keeps its address (and its DHCP
// lease and neighbour entries). With 46 free bits, two VMs on one host
// collide with negligible probability; petreld still checks for
// duplicates among running VMs.
func DeriveMAC(vm, netName string) string {
	return deriveMAC("petrel-mac/" + vm + "/" + netName)
}

// DeriveMACFor is DeriveMAC for the VMs of the petreld instance owner: the
// same construction over "petrel-mac/" + owner + "/" + vm + "/" + netName,
// so that VMs of the same name under two instances sharing a bridge get
// different addresses. An empty owner gives DeriveMAC.
func DeriveMACFor(owner, vm, netName string) string {
	if owner == "" {
		return DeriveMAC(vm, netName)
	}
	return deriveMAC("petrel-mac/" + owner + "/" + vm + "/" + netName)
}

// deriveMAC turns the SHA-256 of seed into a locally administered unicast
// address that never starts like a tap's host side.
func deriveMAC(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	b := sum[:6]
	b[0] = (b[0] | 0x02) &^ 0x01
	if b[0] == 0xfe {
		b[0] = 0xfa
	}
	return net.HardwareAddr(b).String()
}

// HostMAC returns the MAC address of the host side of the tap that
// carries a guest with MAC guest: the guest address with its first octet
// replaced by 0xfe (0xfa when the guest address itself starts with 0xfe).
// A Linux bridge takes the lowest MAC among its ports as its own unless
// one was set; a high, fixed first octet keeps a new tap from changing the
// bridge's address, and differing from the guest keeps the bridge from
// treating frames for the guest as its own.
func HostMAC(guest string) (string, error) {
	mac, err := ParseMAC(guest)
	if err != nil {
		return "", err
	}
	hw, _ := net.ParseMAC(mac)
	if hw[0] == 0xfe {
		hw[0] = 0xfa
	} else {
		hw[0] = 0xfe
	}
	return hw.String(), nil
}

// ParseMAC checks and normalises a MAC address given by a user. It accepts
// the forms net.ParseMAC does for 48-bit addresses (colons, dashes, or
// dotted groups, either case) and returns xx:xx:xx:xx:xx:xx in lower case.
// Multicast and all-zero addresses are refused with ErrInvalid: a guest
// NIC with either would never receive unicast traffic.
func ParseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("%w: MAC address %q: %v", ErrInvalid, s, err)
	}
	if len(hw) != 6 {
		return "", fmt.Errorf("%w: MAC address %q is not a 48-bit address", ErrInvalid, s)
	}
	if hw[0]&0x01 != 0 {
		return "", fmt.Errorf("%w: MAC address %q is a multicast address", ErrInvalid, s)
	}
	if string(hw) == "\x00\x00\x00\x00\x00\x00" {
		return "", fmt.Errorf("%w: MAC address %q is all zeroes", ErrInvalid, s)
	}
	return hw.String(), nil
}

// ValidIfName checks that name is usable as a host interface name on
// Linux and FreeBSD: 1 to MaxIfNameLen bytes, not "." or "..", and free of
// '/', ':', whitespace and control characters. A bad name is reported with
// ErrInvalid.
func ValidIfName(name string) error {
	if name == "" || len(name) > MaxIfNameLen {
		return fmt.Errorf("%w: interface name %q must be 1 to %d bytes", ErrInvalid, name, MaxIfNameLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w: interface name %q is reserved", ErrInvalid, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c == 0x7f || c == '/' || c == ':' {
			return fmt.Errorf("%w: interface name %q contains %q", ErrInvalid, name, c)
		}
	}
	return nil
}

// aliasPrefix starts every Tag's encoding. The version lets a later
// encoding coexist with interfaces tagged by older plugins.
const aliasPrefix = "petrel/v1"

// Tag identifies the VM device an interface belongs to. Plugins write it
// on the interface itself (the link alias on Linux, the description on
// FreeBSD), which is what lets a stateless plugin recognise its own
// interfaces, refuse to touch anyone else's, and find orphans.
type Tag struct {
	// VM is the VM's name, e.g. "team:app:web" (it may contain ':').
	VM string
	// Net is the device name from the image's manifest, e.g. "service0".
	Net string
	// MAC is the guest's MAC address; it may be empty.
	MAC string
	// Owner identifies the petreld instance that made the interface (its
	// data directory's instance id), so that reconciliation, which
	// removes the interfaces no VM uses any more, touches only its own
	// instance's. It is empty on interfaces tagged before instances had
	// an id, which no instance removes as an orphan.
	Owner string
}

// Alias encodes t as the text stored on an interface:
//
//	petrel/v1 vm=<VM> net=<Net> mac=<MAC> owner=<Owner>
//
// Each value is escaped with url.PathEscape, so it holds no spaces and
// fields split unambiguously on ' ' and on the first '=' whatever
// characters the names contain; the mac and owner fields are left out
// when empty. Alias fails with ErrInvalid when VM or Net is empty, MAC is not a
// valid address, or the encoding exceeds MaxAliasLen.
func (t Tag) Alias() (string, error) {
	if t.VM == "" || t.Net == "" {
		return "", fmt.Errorf("%w: interface tag needs a VM and a device name", ErrInvalid)
	}
	s := aliasPrefix + " vm=" + url.PathEscape(t.VM) + " net=" + url.PathEscape(t.Net)
	if t.MAC != "" {
		mac, err := ParseMAC(t.MAC)
		if err != nil {
			return "", err
		}
		s += " mac=" + mac
	}
	if t.Owner != "" {
		s += " owner=" + url.PathEscape(t.Owner)
	}
	if len(s) > MaxAliasLen {
		return "", fmt.Errorf("%w: interface tag for VM %q device %q is %d bytes, longer than %d", ErrInvalid, t.VM, t.Net, len(s), MaxAliasLen)
	}
	return s, nil
}

// Same reports whether t and o name the same VM device of the same
// instance; the MAC is not compared, since it identifies the guest rather
// than the device. A tag without an owner (made before instances had one)
// matches any owner, so that a VM started before an upgrade keeps its tap.
func (t Tag) Same(o Tag) bool {
	return t.VM == o.VM && t.Net == o.Net && (t.Owner == o.Owner || t.Owner == "" || o.Owner == "")
}

// ParseAlias decodes an interface tag written by Tag.Alias. ok is false
// for anything else (another program's alias, an empty one), which is how
// plugins tell their interfaces from the host's. Unknown fields are
// ignored so that later versions can add some.
func ParseAlias(alias string) (t Tag, ok bool) {
	rest, found := strings.CutPrefix(alias, aliasPrefix+" ")
	if !found {
		return Tag{}, false
	}
	for _, field := range strings.Split(rest, " ") {
		key, val, found := strings.Cut(field, "=")
		if !found {
			return Tag{}, false
		}
		v, err := url.PathUnescape(val)
		if err != nil {
			return Tag{}, false
		}
		switch key {
		case "vm":
			t.VM = v
		case "net":
			t.Net = v
		case "mac":
			mac, err := ParseMAC(v)
			if err != nil {
				return Tag{}, false
			}
			t.MAC = mac
		case "owner":
			t.Owner = v
		}
	}
	if t.VM == "" || t.Net == "" {
		return Tag{}, false
	}
	return t, true
}
