// Package backend is Petrel's bridge network plugin: it gives each VM network
// device a tap interface on an existing host bridge. On Linux it speaks
// netlink directly; on FreeBSD it drives ifconfig(8).
//
// The plugin keeps no state. Every tap it creates carries a network.Tag
// (the link alias on Linux, the description on FreeBSD) naming its VM and
// device and the petreld instance it serves (ConfigureRequest.instance_id),
// which is how any plugin process recognises its own taps, refuses to
// touch anyone else's, and finds orphans in Reconcile: the orphans of its
// own instance only, so that several petreld instances on one host (each
// with its own data directory) never remove each other's taps.
package backend

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/petrel-vmm/petrel/sdk/network"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Name is the plugin's short name in petreld's configuration.
const Name = "bridge"

// Settings the plugin accepts in Configure.
const (
	// SettingOwner is the numeric uid allowed to open new taps besides
	// CAP_NET_ADMIN holders (Linux only; default 0). Set it when tenders
	// run unprivileged.
	SettingOwner = "tap_owner"
	// SettingGroup is the numeric gid allowed to open new taps (Linux
	// only; default 0).
	SettingGroup = "tap_group"
)

// info describes the plugin binary.
func info(version string) *pluginv1.PluginInfo {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_NETWORK, Name: Name, Version: version, ApiVersions: []uint32{petrelplugin.ProtocolVersion}}
}

// settings are the values Configure accepts, with the petreld instance
// the plugin serves.
type settings struct {
	owner, group uint32
	// instance is the id of the petreld instance served: its taps carry
	// it, and Reconcile removes only taps that do.
	instance string
}

// parseSettings checks Configure's settings, refusing unknown keys so that
// a typo in petreld's configuration is reported rather than ignored.
func parseSettings(in map[string]string) (settings, error) {
	var s settings
	for k, v := range in {
		var dst *uint32
		switch k {
		case SettingOwner:
			dst = &s.owner
		case SettingGroup:
			dst = &s.group
		default:
			return settings{}, fmt.Errorf("%w: plugin %s: unknown setting %q (known: %s, %s)", network.ErrInvalid, Name, k, SettingOwner, SettingGroup)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return settings{}, fmt.Errorf("%w: plugin %s: setting %s=%q is not a numeric id", network.ErrInvalid, Name, k, v)
		}
		*dst = uint32(n)
	}
	return s, nil
}

// attachment is a checked AttachRequest with its defaults filled in.
type attachment struct {
	// name is the tap's interface name.
	name string
	// bridge is the bridge to enslave the tap to.
	bridge string
	// tag identifies the VM device; tag.MAC is the guest MAC.
	tag network.Tag
	// alias is tag encoded for the interface.
	alias string
	// hostMAC is the address of the tap itself.
	hostMAC string
	// derivedName tells whether name is TapName's, in which case a tap of
	// that name without a tag is taken to be one whose create was cut
	// short before the tag was written.
	derivedName bool
}

// parseAttach validates req and fills in the name and MAC derived for
// instance (see network.TapNameFor).
func parseAttach(req *pluginv1.AttachRequest, instance string) (attachment, error) {
	a := attachment{bridge: req.GetBridge(), name: req.GetHostIf()}
	if a.bridge == "" {
		return attachment{}, fmt.Errorf("%w: attach: no bridge given", network.ErrInvalid)
	}
	if err := network.ValidIfName(a.bridge); err != nil {
		return attachment{}, fmt.Errorf("attach: bridge: %w", err)
	}
	derived := network.TapNameFor(instance, req.GetVm(), req.GetNetName())
	if a.name == "" {
		a.name = derived
	}
	a.derivedName = a.name == derived
	if err := network.ValidIfName(a.name); err != nil {
		return attachment{}, fmt.Errorf("attach: %w", err)
	}
	mac := req.GetMac()
	if mac == "" {
		mac = network.DeriveMACFor(instance, req.GetVm(), req.GetNetName())
	}
	var err error
	a.tag = network.Tag{VM: req.GetVm(), Net: req.GetNetName(), MAC: mac, Owner: instance}
	if a.tag.MAC, err = network.ParseMAC(mac); err != nil {
		return attachment{}, fmt.Errorf("attach: %w", err)
	}
	if a.alias, err = a.tag.Alias(); err != nil {
		return attachment{}, fmt.Errorf("attach: %w", err)
	}
	if a.hostMAC, err = network.HostMAC(a.tag.MAC); err != nil {
		return attachment{}, fmt.Errorf("attach: %w", err)
	}
	return a, nil
}

// response describes the tap made for a.
func (a attachment) response(mtu int) *pluginv1.AttachResponse {
	return &pluginv1.AttachResponse{HostIf: a.name, Mac: a.tag.MAC, Mtu: uint32(mtu), Bridge: a.bridge}
}

// set turns a list of names into a set.
func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// sortBridges orders bridges by name, as the API promises.
func sortBridges(bs []*pluginv1.Bridge) {
	sort.Slice(bs, func(i, j int) bool { return bs[i].GetName() < bs[j].GetName() })
}
