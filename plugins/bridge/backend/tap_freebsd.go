//go:build freebsd

package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/petrel-vmm/petrel/sdk/network"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Paths of the base-system tools the FreeBSD implementation drives.
const (
	ifconfigPath = "/sbin/ifconfig"
	netstatPath  = "/usr/bin/netstat"
)

// errNoInterface marks an interface ifconfig says does not exist.
var errNoInterface = errors.New("interface does not exist")

// Plugin is the FreeBSD bridge network plugin: taps cloned with
// `ifconfig tap create`, renamed, tagged through their description and
// added to an if_bridge with `addm`. It is safe for concurrent use.
type Plugin struct {
	version string

	mu       sync.Mutex
	settings settings
}

// New returns the plugin. version is reported by Info.
func New(version string) *Plugin {
	return &Plugin{version: version}
}

// Close releases nothing; it exists so callers treat every platform alike.
func (p *Plugin) Close() error { return nil }

// Info identifies the plugin.
func (p *Plugin) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return info(p.version), nil
}

// Configure applies the plugin's settings and records the petreld
// instance served. The ownership settings only apply on Linux and are
// accepted here so one configuration serves both.
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

// run runs a base-system tool and returns its standard output, with its
// standard error in the error.
func run(ctx context.Context, path string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "does not exist") {
			return "", fmt.Errorf("%s %s: %s: %w", path, strings.Join(args, " "), msg, errNoInterface)
		}
		return "", fmt.Errorf("%s %s: %w: %s", path, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// ifconfig runs ifconfig(8) with args.
func ifconfig(ctx context.Context, args ...string) (string, error) {
	return run(ctx, ifconfigPath, args...)
}

// describe reads one interface's ifconfig report.
func describe(ctx context.Context, name string) (ifconfigInfo, error) {
	out, err := ifconfig(ctx, name)
	if err != nil {
		return ifconfigInfo{}, err
	}
	return parseIfconfig(out)
}

// group lists the interfaces of an interface group ("bridge", "tap").
func group(ctx context.Context, g string) ([]string, error) {
	out, err := ifconfig(ctx, "-g", g)
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// Fingerprint reports the plugin healthy when ifconfig is present and the
// process runs as root.
func (p *Plugin) Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error) {
	fp := &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY, Attributes: map[string]string{}}
	var problems []string
	if _, err := os.Stat(ifconfigPath); err != nil {
		problems = append(problems, fmt.Sprintf("%s: %v", ifconfigPath, err))
	}
	if os.Geteuid() != 0 {
		problems = append(problems, "not root: run petreld as root")
	}
	if bs, err := group(ctx, "bridge"); err != nil {
		problems = append(problems, err.Error())
	} else {
		fp.Attributes["bridges"] = strconv.Itoa(len(bs))
	}
	if len(problems) > 0 {
		fp.Health = pluginv1.Health_HEALTH_UNHEALTHY
		fp.Description = strings.Join(problems, "; ")
	} else {
		fp.Description = "ifconfig taps on " + fp.Attributes["bridges"] + " bridge(s)"
	}
	return fp, nil
}

// Attach creates (or adopts) the tap for one VM device and adds it to the
// bridge, with the bridge's MTU, tagged, up. Any failure after the tap
// exists destroys it again.
func (p *Plugin) Attach(ctx context.Context, req *pluginv1.AttachRequest) (*pluginv1.AttachResponse, error) {
	a, err := parseAttach(req, p.instance())
	if err != nil {
		return nil, err
	}
	br, err := describe(ctx, a.bridge)
	if errors.Is(err, errNoInterface) {
		return nil, fmt.Errorf("%w: bridge %s does not exist", network.ErrInvalid, a.bridge)
	}
	if err != nil {
		return nil, fmt.Errorf("look up bridge %s: %w", a.bridge, err)
	}
	if !br.inGroup("bridge") {
		return nil, fmt.Errorf("%w: %s is not a bridge", network.ErrInvalid, a.bridge)
	}
	cur, err := describe(ctx, a.name)
	switch {
	case err == nil:
		if !adoptableBSD(cur, a) {
			return nil, fmt.Errorf("%w: interface %s exists and is not ours (description %q)", network.ErrInvalid, a.name, cur.description)
		}
	case errors.Is(err, errNoInterface):
		if err := create(ctx, a.name); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("look up %s: %w", a.name, err)
	}
	if err := setup(ctx, a, br); err != nil {
		// Clean up even if ctx ended: a leaked tap outlives the request.
		if _, derr := ifconfig(context.Background(), a.name, "destroy"); derr != nil && !errors.Is(derr, errNoInterface) {
			err = errors.Join(err, fmt.Errorf("destroy %s after failed attach: %w", a.name, derr))
		}
		return nil, err
	}
	return a.response(br.mtu), nil
}

// adoptableBSD reports whether an existing interface is the tap a previous
// Attach for the same VM device made (see the Linux adoptable).
func adoptableBSD(cur ifconfigInfo, a attachment) bool {
	if !cur.inGroup("tap") {
		return false
	}
	if tag, ok := network.ParseAlias(cur.description); ok {
		return tag.Same(a.tag)
	}
	return cur.description == "" && a.derivedName
}

// create clones a tap and renames it; the clone is destroyed if the
// rename fails.
func create(ctx context.Context, name string) error {
	out, err := ifconfig(ctx, "tap", "create")
	if err != nil {
		return fmt.Errorf("create tap: %w", err)
	}
	clone := strings.TrimSpace(out)
	if clone == "" {
		return errors.New("create tap: ifconfig printed no interface name")
	}
	if _, err := ifconfig(ctx, clone, "name", name); err != nil {
		if _, derr := ifconfig(context.Background(), clone, "destroy"); derr != nil {
			err = errors.Join(err, fmt.Errorf("destroy %s: %w", clone, derr))
		}
		return fmt.Errorf("rename %s to %s: %w", clone, name, err)
	}
	return nil
}

// setup tags the tap, gives it its MAC and the bridge's MTU, adds it to
// the bridge and brings it up.
func setup(ctx context.Context, a attachment, br ifconfigInfo) error {
	steps := [][]string{
		{a.name, "description", a.alias},
		{a.name, "ether", a.hostMAC},
		{a.name, "mtu", strconv.Itoa(br.mtu)},
	}
	if !hasString(br.members, a.name) {
		steps = append(steps, []string{a.bridge, "addm", a.name})
	}
	steps = append(steps, []string{a.name, "up"})
	for _, args := range steps {
		if _, err := ifconfig(ctx, args...); err != nil {
			return fmt.Errorf("set up %s: %w", a.name, err)
		}
	}
	return nil
}

// Detach destroys a tap made by Attach. A missing tap is fine; an
// interface without Petrel's tag is refused.
func (p *Plugin) Detach(ctx context.Context, hostIf string) error {
	if err := network.ValidIfName(hostIf); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	cur, err := describe(ctx, hostIf)
	if errors.Is(err, errNoInterface) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", hostIf, err)
	}
	tag, ok := network.ParseAlias(cur.description)
	if !ok || !cur.inGroup("tap") {
		return fmt.Errorf("%w: detach: interface %s was not created by petrel", network.ErrInvalid, hostIf)
	}
	if tag.Owner != "" && tag.Owner != p.instance() {
		return fmt.Errorf("%w: detach: interface %s belongs to another petreld instance (%s)", network.ErrInvalid, hostIf, tag.Owner)
	}
	if _, err := ifconfig(ctx, hostIf, "destroy"); err != nil && !errors.Is(err, errNoInterface) {
		return fmt.Errorf("destroy %s: %w", hostIf, err)
	}
	return nil
}

// oursBSD reports whether an interface is a tap tagged by the petreld
// instance served.
func oursBSD(cur ifconfigInfo, instance string) bool {
	tag, ok := network.ParseAlias(cur.description)
	return ok && cur.inGroup("tap") && instance != "" && tag.Owner == instance
}

// instance is the id of the petreld instance served.
func (p *Plugin) instance() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.settings.instance
}

// Reconcile destroys every tap of the instance served (tagged with its
// id) not named in keep; other instances' taps, and taps tagged before
// instances had an id, are left alone.
func (p *Plugin) Reconcile(ctx context.Context, keep []string) ([]string, error) {
	instance := p.instance()
	taps, err := group(ctx, "tap")
	if err != nil {
		return nil, err
	}
	k := set(keep)
	var removed []string
	var errs []error
	for _, name := range taps {
		if k[name] {
			continue
		}
		cur, err := describe(ctx, name)
		if errors.Is(err, errNoInterface) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !oursBSD(cur, instance) {
			continue
		}
		if _, err := ifconfig(ctx, name, "destroy"); err != nil && !errors.Is(err, errNoInterface) {
			errs = append(errs, fmt.Errorf("destroy %s: %w", name, err))
			continue
		}
		removed = append(removed, name)
	}
	sort.Strings(removed)
	return removed, errors.Join(errs...)
}

// Stats reads the counters of the named interfaces with netstat(1),
// skipping missing ones.
func (p *Plugin) Stats(ctx context.Context, hostIfs []string) ([]*pluginv1.InterfaceStats, error) {
	out := make([]*pluginv1.InterfaceStats, 0, len(hostIfs))
	for _, name := range hostIfs {
		if err := network.ValidIfName(name); err != nil {
			return nil, fmt.Errorf("stats: %w", err)
		}
		if _, err := describe(ctx, name); errors.Is(err, errNoInterface) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("look up %s: %w", name, err)
		}
		text, err := run(ctx, netstatPath, "-i", "-b", "-d", "-n", "-W", "-I", name)
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", name, err)
		}
		c, err := netstatCounters(text, name)
		if err != nil {
			return nil, err
		}
		out = append(out, &pluginv1.InterfaceStats{HostIf: name,
			RxBytes: c["Ibytes"], RxPackets: c["Ipkts"], RxErrors: c["Ierrs"], RxDropped: c["Idrop"],
			TxBytes: c["Obytes"], TxPackets: c["Opkts"], TxErrors: c["Oerrs"], TxDropped: c["Drop"]})
	}
	return out, nil
}

// Bridges lists the if_bridge interfaces with their members. Up is the
// administrative state.
func (p *Plugin) Bridges(ctx context.Context) ([]*pluginv1.Bridge, error) {
	names, err := group(ctx, "bridge")
	if err != nil {
		return nil, err
	}
	out := make([]*pluginv1.Bridge, 0, len(names))
	for _, name := range names {
		b, err := describe(ctx, name)
		if errors.Is(err, errNoInterface) {
			continue
		}
		if err != nil {
			return nil, err
		}
		members := append([]string(nil), b.members...)
		sort.Strings(members)
		out = append(out, &pluginv1.Bridge{Name: name, Mtu: uint32(b.mtu), Mac: b.ether, Up: b.up(), Members: members})
	}
	sortBridges(out)
	return out, nil
}
