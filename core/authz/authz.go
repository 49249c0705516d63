// Package authz decides what a remote caller, identified by a verified
// certificate chain (pki.Identity), may do through the daemon API. The
// endpoint applies it before forwarding a request and petreld applies it
// again when the request arrives with the caller's chain, so both sides
// enforce exactly the same rules from the same code.
//
// # Rules
//
// The scope of a caller is its administrative domain, the path of the
// common names of the sub-CAs in its chain (pki.Identity.Domain). The
// leaf's common name identifies the holder (the CLI puts the VM name
// there) but does not narrow the scope: a leaf without a command acts on
// the whole domain, like Albatross's user certificates do.
//
//   - VM names (Create, Destroy, Restart, Console) and block device names
//     (BlockCreate, BlockUpload, BlockDownload, BlockDestroy) must be
//     strictly below the domain, because a policy at the domain governs
//     only what is below it.
//   - Listings (Info, Events, Stats, BlockList, PolicyList) must name a
//     path at or below the domain; an empty path means the domain itself,
//     and what comes back is filtered to the domain: no plugin events,
//     no host or daemon statistics, no orphaned block files.
//   - PolicyAdd and PolicyRemove act strictly below the domain: a
//     delegate may subdivide its share but not change the share itself,
//     which its certificate states.
//   - Plugins and Host describe the host and are left to the root domain
//     (a leaf the root CA signed directly). Bridges, Version and
//     PluginHealth are open to every authenticated caller: bridge names
//     are what policies are written in, the version is needed to talk to
//     the daemon at all, and PluginHealth (names, kinds and health, no
//     paths or configuration) tells a delegate whether the host can run
//     what it deploys.
//   - A leaf carrying a command (a capability) may use only the methods
//     of that command (see Commands), plus Version. If the command has
//     an argument, it is the one absolute name the capability covers: the
//     request's VM, device or path must equal it.
//
// Refusals are gRPC status errors: PermissionDenied for requests outside
// the caller's rights, InvalidArgument for names that do not parse.
package authz

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/pki"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Kind says how a method's name field is checked against the domain.
type Kind int

const (
	// NoTarget methods carry no name.
	NoTarget Kind = iota
	// Below methods name a VM, block device or policy path that must be
	// strictly below the domain.
	Below
	// Listing methods name a path at or below the domain; empty means
	// the domain.
	Listing
)

// rule is what authorization knows about one method.
type rule struct {
	kind Kind
	// target returns the request's name field, for reading and for
	// rewriting an empty listing path; nil for NoTarget.
	target func(proto.Message) *string
	// newReq makes an empty request message, so stream interceptors can
	// read the first message before the handler does.
	newReq func() proto.Message
	// deploy marks methods that may consume resources; petreld installs
	// the caller's policies before them.
	deploy bool
	// rootOnly methods are left to the root domain.
	rootOnly bool
	// open methods are allowed to every caller, capabilities included.
	open bool
}

func field[T proto.Message](get func(T) *string) func(proto.Message) *string {
	return func(m proto.Message) *string {
		t, ok := m.(T)
		if !ok {
			return nil
		}
		return get(t)
	}
}

func mk[T any, P interface {
	*T
	proto.Message
}]() func() proto.Message {
	return func() proto.Message { return P(new(T)) }
}

// rules covers every method of the daemon API; a method without a rule
// is refused to remote callers, so an RPC added later stays closed until
// it is given one.
var rules = map[string]rule{
	daemonv1.Daemon_Version_FullMethodName:     {kind: NoTarget, open: true},
	daemonv1.Daemon_UploadImage_FullMethodName: {kind: NoTarget, deploy: true},
	daemonv1.Daemon_Create_FullMethodName: {kind: Below, deploy: true,
		target: field(func(r *daemonv1.CreateRequest) *string { return &r.Name })},
	daemonv1.Daemon_PullImage_FullMethodName: {kind: NoTarget, deploy: true, newReq: mk[daemonv1.PullImageRequest]()},
	daemonv1.Daemon_Update_FullMethodName: {kind: Below, deploy: true,
		target: field(func(r *daemonv1.UpdateRequest) *string { return &r.Name })},
	daemonv1.Daemon_CheckImage_FullMethodName: {kind: Listing,
		target: field(func(r *daemonv1.CheckImageRequest) *string { return &r.Name })},
	daemonv1.Daemon_Destroy_FullMethodName: {kind: Below,
		target: field(func(r *daemonv1.DestroyRequest) *string { return &r.Name })},
	daemonv1.Daemon_Restart_FullMethodName: {kind: Below, deploy: true,
		target: field(func(r *daemonv1.RestartRequest) *string { return &r.Name })},
	daemonv1.Daemon_Info_FullMethodName: {kind: Listing,
		target: field(func(r *daemonv1.InfoRequest) *string { return &r.Name })},
	daemonv1.Daemon_Console_FullMethodName: {kind: Below, newReq: mk[daemonv1.ConsoleRequest](),
		target: field(func(r *daemonv1.ConsoleRequest) *string { return &r.Name })},
	daemonv1.Daemon_Events_FullMethodName: {kind: Listing, newReq: mk[daemonv1.EventsRequest](),
		target: field(func(r *daemonv1.EventsRequest) *string { return &r.Path })},
	daemonv1.Daemon_Plugins_FullMethodName:      {kind: NoTarget, rootOnly: true},
	daemonv1.Daemon_Host_FullMethodName:         {kind: NoTarget, rootOnly: true},
	daemonv1.Daemon_PluginHealth_FullMethodName: {kind: NoTarget, open: true},
	daemonv1.Daemon_BlockList_FullMethodName: {kind: Listing,
		target: field(func(r *daemonv1.BlockListRequest) *string { return &r.Path })},
	daemonv1.Daemon_BlockCreate_FullMethodName: {kind: Below, deploy: true,
		target: field(func(r *daemonv1.BlockCreateRequest) *string { return &r.Name })},
	daemonv1.Daemon_BlockUpload_FullMethodName: {kind: Below, deploy: true, newReq: mk[daemonv1.BlockChunk](),
		target: field(func(r *daemonv1.BlockChunk) *string { return &r.Name })},
	daemonv1.Daemon_BlockDownload_FullMethodName: {kind: Below, newReq: mk[daemonv1.BlockDownloadRequest](),
		target: field(func(r *daemonv1.BlockDownloadRequest) *string { return &r.Name })},
	daemonv1.Daemon_BlockDestroy_FullMethodName: {kind: Below,
		target: field(func(r *daemonv1.BlockDestroyRequest) *string { return &r.Name })},
	daemonv1.Daemon_Bridges_FullMethodName: {kind: NoTarget, open: true},
	daemonv1.Daemon_PolicyList_FullMethodName: {kind: Listing,
		target: field(func(r *daemonv1.PolicyListRequest) *string { return &r.Path })},
	daemonv1.Daemon_PolicyAdd_FullMethodName: {kind: Below, deploy: true,
		target: field(func(r *daemonv1.PolicyAddRequest) *string { return &r.Path })},
	daemonv1.Daemon_PolicyRemove_FullMethodName: {kind: Below,
		target: field(func(r *daemonv1.PolicyRemoveRequest) *string { return &r.Path })},
	daemonv1.Daemon_Stats_FullMethodName: {kind: Listing, newReq: mk[daemonv1.StatsRequest](),
		target: field(func(r *daemonv1.StatsRequest) *string { return &r.Path })},
}

// commands maps capability names, as a leaf's command extension carries
// them, to the methods they allow. The names are the CLI's command paths
// with spaces as dashes ("block upload" is "block-upload"), so that
// `petrel --csr` can ask for exactly the command it would run.
var commands = map[string][]string{
	"create":         {daemonv1.Daemon_UploadImage_FullMethodName, daemonv1.Daemon_PullImage_FullMethodName, daemonv1.Daemon_Create_FullMethodName},
	"update":         {daemonv1.Daemon_PullImage_FullMethodName, daemonv1.Daemon_Update_FullMethodName},
	"destroy":        {daemonv1.Daemon_Destroy_FullMethodName},
	"restart":        {daemonv1.Daemon_Restart_FullMethodName},
	"info":           {daemonv1.Daemon_Info_FullMethodName, daemonv1.Daemon_CheckImage_FullMethodName},
	"console":        {daemonv1.Daemon_Console_FullMethodName},
	"events":         {daemonv1.Daemon_Events_FullMethodName},
	"stats":          {daemonv1.Daemon_Stats_FullMethodName},
	"plugins":        {daemonv1.Daemon_Plugins_FullMethodName},
	"doctor":         {daemonv1.Daemon_Plugins_FullMethodName, daemonv1.Daemon_Host_FullMethodName},
	"bridges":        {daemonv1.Daemon_Bridges_FullMethodName},
	"version":        {daemonv1.Daemon_Version_FullMethodName},
	"block":          {daemonv1.Daemon_BlockList_FullMethodName},
	"block-create":   {daemonv1.Daemon_BlockCreate_FullMethodName},
	"block-upload":   {daemonv1.Daemon_BlockUpload_FullMethodName},
	"block-download": {daemonv1.Daemon_BlockDownload_FullMethodName},
	"block-destroy":  {daemonv1.Daemon_BlockDestroy_FullMethodName},
	"policy":         {daemonv1.Daemon_PolicyList_FullMethodName},
	"policy-add":     {daemonv1.Daemon_PolicyAdd_FullMethodName},
	"policy-remove":  {daemonv1.Daemon_PolicyRemove_FullMethodName},
}

// Commands returns the capability names a leaf may carry, sorted, for
// help texts and validation.
func Commands() []string {
	out := make([]string, 0, len(commands))
	for c := range commands {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// IsCommand reports whether c is a capability name this package knows.
func IsCommand(c string) bool {
	_, ok := commands[c]
	return ok
}

// HasTarget reports whether method carries a name; clients use it to
// decide whether a capability for it gets an argument.
func HasTarget(method string) bool {
	r, ok := rules[method]
	return ok && r.kind != NoTarget
}

// IsDeploy reports whether method may consume resources, before which
// petreld installs the caller's policies.
func IsDeploy(method string) bool {
	return rules[method].deploy
}

// denied builds the PermissionDenied status every refusal uses.
func denied(format string, a ...any) error {
	return status.Errorf(codes.PermissionDenied, format, a...)
}

// AuthorizeMethod checks what can be decided from the method alone: that
// it has a rule, that the caller's domain may use it, and that the
// caller's capability, if any, includes it.
func AuthorizeMethod(id *pki.Identity, method string) error {
	r, ok := rules[method]
	if !ok {
		return denied("%s is not available to remote callers", method)
	}
	if r.rootOnly && !id.Domain.IsRoot() {
		return denied("%s describes the host and is reserved to its owner; certificate domain %q", shortName(method), id.Domain)
	}
	if id.Command == nil || r.open {
		return nil
	}
	allowed, known := commands[id.Command.Name]
	if !known {
		return denied("the certificate's capability %q is not a command this host knows (known: %v)", id.Command.Name, Commands())
	}
	if !slices.Contains(allowed, method) {
		return denied("the certificate allows only the command %q, not %s", id.Command.Name, shortName(method))
	}
	return nil
}

// AuthorizeRequest checks a request message of method against the
// caller's domain and capability. For listings with an empty path it sets
// the path to the domain, so that what the daemon returns is limited to
// it; it modifies nothing else. It assumes AuthorizeMethod passed.
func AuthorizeRequest(id *pki.Identity, method string, req proto.Message) error {
	r, ok := rules[method]
	if !ok {
		return denied("%s is not available to remote callers", method)
	}
	if r.kind == NoTarget {
		return nil
	}
	ptr := r.target(req)
	if ptr == nil {
		return status.Errorf(codes.Internal, "%s: unexpected request type %T", shortName(method), req)
	}
	if r.kind == Listing && *ptr == "" {
		*ptr = id.Domain.String()
	}
	p, err := name.Parse(*ptr)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	switch r.kind {
	case Listing:
		if !id.Domain.IsPrefixOf(p) {
			return denied("%q is outside the certificate's domain %q", p, id.Domain)
		}
	case Below:
		if p.Equal(id.Domain) || !id.Domain.IsPrefixOf(p) {
			return denied("%q is not below the certificate's domain %q", p, id.Domain)
		}
	}
	if id.Command != nil && len(id.Command.Args) > 0 && !r.open {
		if len(id.Command.Args) != 1 {
			return denied("the certificate's capability %q has %d arguments; one name is expected", id.Command.Name, len(id.Command.Args))
		}
		want, err := name.Parse(id.Command.Args[0])
		if err != nil {
			return denied("the certificate's capability %q names %q, which is not a valid name", id.Command.Name, id.Command.Args[0])
		}
		if !want.Equal(p) {
			return denied("the certificate allows %q on %q only, not on %q", id.Command.Name, want, p)
		}
	}
	return nil
}

// Filter limits a response message to what the caller may see and
// reports whether it may be sent at all (events of plugins and VMs
// outside the domain are dropped). It may modify msg.
func Filter(id *pki.Identity, msg any) bool {
	if id == nil || id.Domain.IsRoot() {
		return true
	}
	under := func(s string) bool {
		p, err := name.Parse(s)
		return err == nil && id.Domain.IsPrefixOf(p)
	}
	switch m := msg.(type) {
	case *daemonv1.Event:
		if m.GetType() == "plugin-crashed" || m.GetType() == "plugin-restarted" {
			return false
		}
		return under(m.GetName())
	case *pluginv1.Batch:
		m.HostSample, m.Daemon = nil, nil
		m.Vms = slices.DeleteFunc(m.Vms, func(v *pluginv1.VMSample) bool { return !under(v.GetName()) })
	case *daemonv1.InfoResponse:
		m.Vms = slices.DeleteFunc(m.Vms, func(v *daemonv1.VM) bool { return !under(v.GetName()) })
	case *daemonv1.BlockListResponse:
		m.Orphans = nil
		m.Devices = slices.DeleteFunc(m.Devices, func(d *daemonv1.BlockInfo) bool { return !under(d.GetName()) })
	case *daemonv1.PolicyListResponse:
		m.Policies = slices.DeleteFunc(m.Policies, func(e *daemonv1.PolicyEntry) bool { return !under(e.GetPath()) })
	}
	return true
}

// Qualify turns the names of a request that a client wrote relative to
// its domain into absolute ones, as the CLI's remote mode does: a name
// with a leading ':' is already absolute and kept; any other name is
// appended to domain; an empty listing path becomes the domain. It
// reports the absolute target ("" when the method has none).
func Qualify(method string, req proto.Message, domain name.Path) (string, error) {
	r, ok := rules[method]
	if !ok || r.kind == NoTarget {
		return "", nil
	}
	ptr := r.target(req)
	if ptr == nil {
		return "", fmt.Errorf("%s: unexpected request type %T", shortName(method), req)
	}
	abs, err := QualifyName(*ptr, domain)
	if err != nil {
		return "", status.Error(codes.InvalidArgument, err.Error())
	}
	*ptr = abs
	return abs, nil
}

// QualifyName applies Qualify's rule to one name and returns the
// canonical absolute form (":" for the root).
func QualifyName(s string, domain name.Path) (string, error) {
	if len(s) > 0 && s[0] == ':' {
		p, err := name.Parse(s)
		if err != nil {
			return "", err
		}
		return p.String(), nil
	}
	rel, err := name.Parse(s)
	if err != nil {
		return "", err
	}
	p := domain
	for _, l := range rel.Labels() {
		if p, err = p.Child(l); err != nil {
			return "", err
		}
	}
	return p.String(), nil
}

// NewRequest returns an empty request message for a streaming method
// whose first message is checked, or nil.
func NewRequest(method string) proto.Message {
	if r, ok := rules[method]; ok && r.newReq != nil {
		return r.newReq()
	}
	return nil
}

// shortName is a method's last element, for messages.
func shortName(method string) string {
	for i := len(method) - 1; i >= 0; i-- {
		if method[i] == '/' {
			return method[i+1:]
		}
	}
	return method
}

type identityKey struct{}

// WithIdentity returns ctx carrying the caller's identity, for handlers
// that act on the caller's behalf (the endpoint forwards its chain).
func WithIdentity(ctx context.Context, id *pki.Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity WithIdentity stored, or nil for a
// local caller.
func IdentityFrom(ctx context.Context) *pki.Identity {
	id, _ := ctx.Value(identityKey{}).(*pki.Identity)
	return id
}
