//go:build linux

package backend

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/sdk/network"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// TunDevice is the clone device taps are created through.
const TunDevice = "/dev/net/tun"

// capNetAdmin is the CAP_NET_ADMIN bit in /proc/self/status's CapEff.
const capNetAdmin = 12

// listAttempts bounds the retries of a link dump that the kernel
// interrupted because links changed meanwhile.
const listAttempts = 5

// Plugin is the Linux bridge network plugin. It is safe for concurrent
// use.
type Plugin struct {
	version string
	// h talks netlink in the plugin's namespace.
	h *netlink.Handle
	// ns is the namespace taps are created in; when it is not open, taps
	// are created in the calling thread's namespace (the host's).
	ns netns.NsHandle
	// ownHandle tells Close to release h.
	ownHandle bool

	mu       sync.Mutex
	settings settings
}

// New returns the plugin working in the host's network namespace. version
// is reported by Info.
func New(version string) *Plugin {
	return &Plugin{version: version, h: &netlink.Handle{}, ns: netns.None()}
}

// NewAt returns a plugin confined to network namespace ns, which the
// caller keeps open until the plugin is closed. Tests use it to work on
// throwaway namespaces without touching the host's interfaces.
func NewAt(version string, ns netns.NsHandle) (*Plugin, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in namespace %s: %w", ns, err)
	}
	return &Plugin{version: version, h: h, ns: ns, ownHandle: true}, nil
}

// Close releases the netlink sockets of a plugin made by NewAt. The taps
// stay.
func (p *Plugin) Close() error {
	if p.ownHandle {
		p.h.Close()
	}
	return nil
}

// Info identifies the plugin.
func (p *Plugin) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return info(p.version), nil
}

// Configure applies the plugin's settings (see SettingOwner) and records
// the petreld instance served.
func (p *Plugin) Configure(_ context.Context, req *pluginv1.ConfigureRequest) error {
	s, err := parseSettings(req.GetSettings())
	if err != nil {
		return err
	}
	s.instance = req.GetInstanceId()
	p.mu.Lock()
	p.settings = s
	p.mu.Unlock()
	return nil
}

// Fingerprint reports the plugin healthy when the tun driver is present,
// netlink answers and the process holds CAP_NET_ADMIN.
func (p *Plugin) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	fp := &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY, Attributes: map[string]string{"tun": TunDevice}}
	var problems []string
	if _, err := os.Stat(TunDevice); err != nil {
		problems = append(problems, fmt.Sprintf("%s missing (tun driver not loaded?): %v", TunDevice, err))
	}
	if ok, err := hasCapNetAdmin(); err != nil {
		problems = append(problems, fmt.Sprintf("cannot read capabilities: %v", err))
	} else if !ok {
		problems = append(problems, "no CAP_NET_ADMIN: run petreld as root")
	}
	if bs, err := p.bridges(); err != nil {
		problems = append(problems, fmt.Sprintf("netlink: %v", err))
	} else {
		fp.Attributes["bridges"] = strconv.Itoa(len(bs))
	}
	if len(problems) > 0 {
		fp.Health = pluginv1.Health_HEALTH_UNHEALTHY
		fp.Description = strings.Join(problems, "; ")
	} else {
		fp.Description = "netlink taps on " + fp.Attributes["bridges"] + " bridge(s)"
	}
	return fp, nil
}

// hasCapNetAdmin reports whether the process's effective capabilities
// include CAP_NET_ADMIN.
func hasCapNetAdmin() (bool, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return false, fmt.Errorf("parse CapEff %q: %w", v, err)
		}
		return caps&(1<<capNetAdmin) != 0, nil
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	return false, errors.New("no CapEff line in /proc/self/status")
}

// Attach creates (or adopts) the tap for one VM device and enslaves it to
// the bridge, with the bridge's MTU, tagged, up. Any failure after the tap
// exists removes it again.
func (p *Plugin) Attach(ctx context.Context, req *pluginv1.AttachRequest) (*pluginv1.AttachResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a, err := parseAttach(req, p.instance())
	if err != nil {
		return nil, err
	}
	br, err := p.bridge(a.bridge)
	if err != nil {
		return nil, err
	}
	return p.attachTo(a, br)
}

// attachTo makes or adopts the tap for a and puts it on br, removing it
// again if any step fails.
func (p *Plugin) attachTo(a attachment, br netlink.Link) (*pluginv1.AttachResponse, error) {
	// While the tap exists without its tag, no Reconcile on the host may
	// take it for an orphan.
	release, err := lockTaps(unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer release()
	link, err := p.h.LinkByName(a.name)
	switch {
	case err == nil:
		if !adoptable(link, a) {
			return nil, fmt.Errorf("%w: interface %s exists and is not ours (alias %q)", network.ErrInvalid, a.name, link.Attrs().Alias)
		}
	case isNotFound(err):
		if link, err = p.create(a.name); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("look up %s: %w", a.name, err)
	}
	if err := p.setup(link, br, a); err != nil {
		if derr := p.h.LinkDel(link); derr != nil && !isNotFound(derr) {
			err = errors.Join(err, fmt.Errorf("remove %s after failed attach: %w", a.name, derr))
		}
		return nil, err
	}
	return a.response(br.Attrs().MTU), nil
}

// bridge looks up an existing bridge, telling a user's mistake (missing,
// not a bridge) from a host failure.
func (p *Plugin) bridge(name string) (netlink.Link, error) {
	br, err := p.h.LinkByName(name)
	if isNotFound(err) {
		return nil, fmt.Errorf("%w: bridge %s does not exist", network.ErrInvalid, name)
	}
	if err != nil {
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("%w: %s is not a bridge (it is a %s link)", network.ErrInvalid, name, br.Type())
	}
	return br, nil
}

// adoptable reports whether an existing link is the tap a previous Attach
// for the same VM device made: a tap carrying the same tag, or an
// untagged tap with the derived name, left by a create cut short between
// making the tap and tagging it.
func adoptable(link netlink.Link, a attachment) bool {
	if link.Type() != "tuntap" {
		return false
	}
	if tag, ok := network.ParseAlias(link.Attrs().Alias); ok {
		return tag.Same(a.tag)
	}
	return link.Attrs().Alias == "" && a.derivedName
}

// create makes a persistent tap without packet information headers and
// with a single queue: the way Solo5 tenders open a tap by name
// (IFF_TAP|IFF_NO_PI). The tap is created in the plugin's namespace.
func (p *Plugin) create(name string) (netlink.Link, error) {
	p.mu.Lock()
	s := p.settings
	p.mu.Unlock()
	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_TUN_EXCL,
		Owner:     s.owner,
		Group:     s.group,
	}
	err := p.inNamespace(func() error { return netlink.LinkAdd(tap) })
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return nil, fmt.Errorf("%w: create tap %s: %v", network.ErrUnavailable, name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("create tap %s: %w", name, err)
	}
	link, err := p.h.LinkByName(name)
	if err != nil {
		err = fmt.Errorf("look up new tap %s: %w", name, err)
		if derr := p.h.LinkDel(tap); derr != nil && !isNotFound(derr) {
			err = errors.Join(err, fmt.Errorf("remove %s: %w", name, derr))
		}
		return nil, err
	}
	return link, nil
}

// inNamespace runs fn on an OS thread in the plugin's namespace. Creating
// a tap is an ioctl on /dev/net/tun, which acts in the calling thread's
// namespace rather than through the netlink handle. The thread is locked
// and never unlocked, so the Go runtime discards it when fn returns
// instead of handing a thread in a foreign namespace to other goroutines.
func (p *Plugin) inNamespace(fn func() error) error {
	if !p.ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(p.ns); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", p.ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// setup tags the tap, gives it its MAC and the bridge's MTU, enslaves it
// and brings it up. Each step is idempotent, so an adopted tap goes
// through the same path.
func (p *Plugin) setup(link netlink.Link, br netlink.Link, a attachment) error {
	if err := p.h.LinkSetAlias(link, a.alias); err != nil {
		return fmt.Errorf("tag %s: %w", a.name, err)
	}
	hw, err := net.ParseMAC(a.hostMAC)
	if err != nil {
		return fmt.Errorf("host MAC %s: %w", a.hostMAC, err)
	}
	if err := p.h.LinkSetHardwareAddr(link, hw); err != nil {
		return fmt.Errorf("set MAC of %s: %w", a.name, err)
	}
	if err := p.h.LinkSetMTU(link, br.Attrs().MTU); err != nil {
		return fmt.Errorf("set MTU of %s to %d: %w", a.name, br.Attrs().MTU, err)
	}
	if err := p.h.LinkSetMaster(link, br); err != nil {
		return fmt.Errorf("add %s to bridge %s: %w", a.name, a.bridge, err)
	}
	if err := p.h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", a.name, err)
	}
	return nil
}

// Detach removes a tap made by Attach. A missing tap is fine; an
// interface without Petrel's tag, or with another instance's, is refused.
func (p *Plugin) Detach(ctx context.Context, hostIf string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := network.ValidIfName(hostIf); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	link, err := p.h.LinkByName(hostIf)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", hostIf, err)
	}
	if link.Type() != "tuntap" {
		return fmt.Errorf("%w: detach: interface %s was not created by petrel", network.ErrInvalid, hostIf)
	}
	tag, tagged := network.ParseAlias(link.Attrs().Alias)
	switch {
	case tagged && !mine(tag, p.instance()):
		return fmt.Errorf("%w: detach: interface %s belongs to another petreld instance (%s)", network.ErrInvalid, hostIf, tag.Owner)
	case !tagged && !untaggedOrphan(link):
		return fmt.Errorf("%w: detach: interface %s was not created by petrel", network.ErrInvalid, hostIf)
	}
	return p.remove(link)
}

// mine reports whether a tap tagged tag is one the instance served may
// remove when its VM is gone: its own, or one tagged before instances had
// an id (removed only on request, never as an orphan).
func mine(tag network.Tag, instance string) bool {
	return tag.Owner == instance || tag.Owner == ""
}

// untaggedOrphan reports whether link is a tap with a name Petrel derives
// and no tag: one whose maker died between creating and tagging it.
func untaggedOrphan(link netlink.Link) bool {
	return link.Type() == "tuntap" && link.Attrs().Alias == "" && derivedName.MatchString(link.Attrs().Name)
}

// derivedName matches the names network.TapName derives.
var derivedName = regexp.MustCompile(`^` + network.TapPrefix + `[0-9a-f]{12}$`)

// remove deletes a link; one that vanished meanwhile is not an error.
func (p *Plugin) remove(link netlink.Link) error {
	if err := p.h.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// Reconcile removes the taps of the instance served (tagged with its id)
// not named in keep, and untagged taps left by a plugin that died between
// creating and tagging one (of any instance: no VM uses a tap before it
// is tagged). Taps of other instances, and taps tagged before instances
// had an id, are left alone.
func (p *Plugin) Reconcile(ctx context.Context, keep []string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	instance := p.instance()
	k := set(keep)
	var removed []string
	var errs []error
	drop := func(l netlink.Link) {
		if err := p.remove(l); err != nil {
			errs = append(errs, err)
			return
		}
		removed = append(removed, l.Attrs().Name)
	}
	links, err := p.links()
	if err != nil {
		return nil, err
	}
	untagged := false
	for _, l := range links {
		if l.Type() != "tuntap" || k[l.Attrs().Name] {
			continue
		}
		if tag, ok := network.ParseAlias(l.Attrs().Alias); ok {
			if instance != "" && tag.Owner == instance {
				drop(l)
			}
			continue
		}
		untagged = untagged || untaggedOrphan(l)
	}
	if untagged {
		// Only with every Attach on the host shut out is an untagged tap
		// certainly not one being made.
		release, err := lockTaps(unix.LOCK_EX)
		if err != nil {
			errs = append(errs, err)
		} else {
			if links, err = p.links(); err != nil {
				errs = append(errs, err)
			}
			for _, l := range links {
				if !k[l.Attrs().Name] && untaggedOrphan(l) {
					drop(l)
				}
			}
			release()
		}
	}
	sort.Strings(removed)
	return removed, errors.Join(errs...)
}

// instance is the id of the petreld instance served.
func (p *Plugin) instance() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.settings.instance
}

// TapLock is the file every bridge plugin on the host locks, shared while
// it makes a tap and until the tap carries its tag, and exclusively while
// Reconcile removes untagged taps: an untagged tap found under the
// exclusive lock was left by a plugin that died mid-attach, never one
// being made by another petreld instance.
const TapLock = "/run/lock/petrel-taps.lock"

// lockTaps takes TapLock (how is LOCK_SH or LOCK_EX), waiting for it, and
// returns its release. A host without /run/lock gets the lock in the
// temporary directory.
func lockTaps(how int) (release func(), err error) {
	path := TapLock
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		path = filepath.Join(os.TempDir(), filepath.Base(TapLock))
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the tap lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// Stats reads the counters of the named interfaces, skipping missing ones.
func (p *Plugin) Stats(ctx context.Context, hostIfs []string) ([]*pluginv1.InterfaceStats, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]*pluginv1.InterfaceStats, 0, len(hostIfs))
	for _, name := range hostIfs {
		if err := network.ValidIfName(name); err != nil {
			return nil, fmt.Errorf("stats: %w", err)
		}
		link, err := p.h.LinkByName(name)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", name, err)
		}
		st := &pluginv1.InterfaceStats{HostIf: name}
		if s := link.Attrs().Statistics; s != nil {
			st.RxBytes, st.RxPackets, st.RxErrors, st.RxDropped = s.RxBytes, s.RxPackets, s.RxErrors, s.RxDropped
			st.TxBytes, st.TxPackets, st.TxErrors, st.TxDropped = s.TxBytes, s.TxPackets, s.TxErrors, s.TxDropped
		}
		out = append(out, st)
	}
	return out, nil
}

// Bridges lists the bridges with their members. Up is the administrative
// state: a bridge's operational state is only up once a member has
// carrier, which a VM's tap gets when its tender opens it.
func (p *Plugin) Bridges(ctx context.Context) ([]*pluginv1.Bridge, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return p.bridges()
}

func (p *Plugin) bridges() ([]*pluginv1.Bridge, error) {
	links, err := p.links()
	if err != nil {
		return nil, err
	}
	byIndex := map[int]*pluginv1.Bridge{}
	var out []*pluginv1.Bridge
	for _, l := range links {
		if l.Type() != "bridge" {
			continue
		}
		at := l.Attrs()
		b := &pluginv1.Bridge{Name: at.Name, Mtu: uint32(at.MTU), Mac: at.HardwareAddr.String(), Up: at.Flags&net.FlagUp != 0}
		byIndex[at.Index] = b
		out = append(out, b)
	}
	for _, l := range links {
		if b := byIndex[l.Attrs().MasterIndex]; b != nil && l.Attrs().MasterIndex != 0 {
			b.Members = append(b.Members, l.Attrs().Name)
		}
	}
	for _, b := range out {
		sort.Strings(b.Members)
	}
	sortBridges(out)
	return out, nil
}

// links dumps all links, retrying when the dump was interrupted by
// concurrent changes (other VMs' taps coming and going).
func (p *Plugin) links() ([]netlink.Link, error) {
	var err error
	for range listAttempts {
		var links []netlink.Link
		links, err = p.h.LinkList()
		if err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list links: %w", err)
}

// isNotFound reports whether err says a link does not exist.
func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
