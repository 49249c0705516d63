package authz

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/pki"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

func ident(domain string, cmd *pki.Command) *pki.Identity {
	return &pki.Identity{Domain: name.MustParse(domain), Leaf: name.MustParse("petrel"), Command: cmd}
}

func TestEveryMethodHasARule(t *testing.T) {
	var methods []string
	for _, m := range daemonv1.Daemon_ServiceDesc.Methods {
		methods = append(methods, "/"+daemonv1.Daemon_ServiceDesc.ServiceName+"/"+m.MethodName)
	}
	for _, s := range daemonv1.Daemon_ServiceDesc.Streams {
		full := "/" + daemonv1.Daemon_ServiceDesc.ServiceName + "/" + s.StreamName
		methods = append(methods, full)
		r := rules[full]
		// Streams whose first message names something must be read by
		// the interceptor, or their names would go unchecked.
		if r.kind != NoTarget && r.newReq == nil {
			t.Errorf("stream %s has a target but no newReq", full)
		}
	}
	for _, m := range methods {
		r, ok := rules[m]
		if !ok {
			t.Errorf("%s has no authorization rule", m)
			continue
		}
		if r.kind != NoTarget && (r.target == nil || r.target(reqFor(t, m)) == nil) {
			t.Errorf("%s: target does not match its request type", m)
		}
	}
	if len(rules) != len(methods) {
		t.Errorf("%d rules for %d methods", len(rules), len(methods))
	}
	for c, ms := range commands {
		for _, m := range ms {
			if _, ok := rules[m]; !ok {
				t.Errorf("command %s allows unknown method %s", c, m)
			}
		}
	}
}

// reqFor returns an empty request of method's type.
func reqFor(t *testing.T, method string) proto.Message {
	switch method {
	case daemonv1.Daemon_Create_FullMethodName:
		return &daemonv1.CreateRequest{}
	case daemonv1.Daemon_Destroy_FullMethodName:
		return &daemonv1.DestroyRequest{}
	case daemonv1.Daemon_Restart_FullMethodName:
		return &daemonv1.RestartRequest{}
	case daemonv1.Daemon_Info_FullMethodName:
		return &daemonv1.InfoRequest{}
	case daemonv1.Daemon_BlockList_FullMethodName:
		return &daemonv1.BlockListRequest{}
	case daemonv1.Daemon_BlockCreate_FullMethodName:
		return &daemonv1.BlockCreateRequest{}
	case daemonv1.Daemon_BlockDestroy_FullMethodName:
		return &daemonv1.BlockDestroyRequest{}
	case daemonv1.Daemon_PolicyList_FullMethodName:
		return &daemonv1.PolicyListRequest{}
	case daemonv1.Daemon_PolicyAdd_FullMethodName:
		return &daemonv1.PolicyAddRequest{}
	case daemonv1.Daemon_PolicyRemove_FullMethodName:
		return &daemonv1.PolicyRemoveRequest{}
	case daemonv1.Daemon_Update_FullMethodName:
		return &daemonv1.UpdateRequest{}
	case daemonv1.Daemon_CheckImage_FullMethodName:
		return &daemonv1.CheckImageRequest{}
	}
	if m := NewRequest(method); m != nil {
		return m
	}
	t.Fatalf("no request type known for %s", method)
	return nil
}

func TestAuthorize(t *testing.T) {
	alice := ident("alice", nil)
	for _, c := range []struct {
		id     *pki.Identity
		method string
		req    proto.Message
		code   codes.Code
	}{
		{alice, daemonv1.Daemon_Create_FullMethodName, &daemonv1.CreateRequest{Name: "alice:web"}, codes.OK},
		{alice, daemonv1.Daemon_Create_FullMethodName, &daemonv1.CreateRequest{Name: "alice:x:web"}, codes.OK},
		{alice, daemonv1.Daemon_Create_FullMethodName, &daemonv1.CreateRequest{Name: "alice"}, codes.PermissionDenied},
		{alice, daemonv1.Daemon_Create_FullMethodName, &daemonv1.CreateRequest{Name: "bob:web"}, codes.PermissionDenied},
		{alice, daemonv1.Daemon_Update_FullMethodName, &daemonv1.UpdateRequest{Name: "alice:web"}, codes.OK},
		{alice, daemonv1.Daemon_Update_FullMethodName, &daemonv1.UpdateRequest{Name: "bob:web"}, codes.PermissionDenied},
		{alice, daemonv1.Daemon_Create_FullMethodName, &daemonv1.CreateRequest{Name: "alicex:web"}, codes.PermissionDenied},
		{alice, daemonv1.Daemon_Create_FullMethodName, &daemonv1.CreateRequest{Name: "Alice:Bad_Name"}, codes.InvalidArgument},
		{alice, daemonv1.Daemon_Destroy_FullMethodName, &daemonv1.DestroyRequest{Name: ":bob:vm"}, codes.PermissionDenied},
		{alice, daemonv1.Daemon_Info_FullMethodName, &daemonv1.InfoRequest{Name: "alice"}, codes.OK},
		{alice, daemonv1.Daemon_Info_FullMethodName, &daemonv1.InfoRequest{Name: ":"}, codes.PermissionDenied},
		{alice, daemonv1.Daemon_Events_FullMethodName, &daemonv1.EventsRequest{Path: "bob"}, codes.PermissionDenied},
		{alice, daemonv1.Daemon_BlockUpload_FullMethodName, &daemonv1.BlockChunk{Name: "alice:disk"}, codes.OK},
		{alice, daemonv1.Daemon_BlockUpload_FullMethodName, &daemonv1.BlockChunk{Name: "disk"}, codes.PermissionDenied},
		{alice, daemonv1.Daemon_PolicyAdd_FullMethodName, &daemonv1.PolicyAddRequest{Path: "alice:team"}, codes.OK},
		{alice, daemonv1.Daemon_PolicyAdd_FullMethodName, &daemonv1.PolicyAddRequest{Path: "alice"}, codes.PermissionDenied},
		{alice, daemonv1.Daemon_PolicyRemove_FullMethodName, &daemonv1.PolicyRemoveRequest{Path: "alice"}, codes.PermissionDenied},
		{alice, daemonv1.Daemon_Plugins_FullMethodName, &daemonv1.PluginsRequest{}, codes.PermissionDenied},
		{ident(":", nil), daemonv1.Daemon_Plugins_FullMethodName, &daemonv1.PluginsRequest{}, codes.OK},
		{alice, daemonv1.Daemon_Host_FullMethodName, &daemonv1.HostRequest{}, codes.PermissionDenied},
		{ident(":", nil), daemonv1.Daemon_Host_FullMethodName, &daemonv1.HostRequest{}, codes.OK},
		{alice, daemonv1.Daemon_Bridges_FullMethodName, &daemonv1.BridgesRequest{}, codes.OK},
		{alice, daemonv1.Daemon_PluginHealth_FullMethodName, &daemonv1.PluginHealthRequest{}, codes.OK},
		{ident("alice", &pki.Command{Name: "info"}), daemonv1.Daemon_PluginHealth_FullMethodName, &daemonv1.PluginHealthRequest{}, codes.OK},
		{alice, "/petrel.daemon.v1.Daemon/Future", &daemonv1.VersionRequest{}, codes.PermissionDenied},
		// Capabilities.
		{ident("alice", &pki.Command{Name: "info"}), daemonv1.Daemon_Info_FullMethodName, &daemonv1.InfoRequest{}, codes.OK},
		{ident("alice", &pki.Command{Name: "info"}), daemonv1.Daemon_Create_FullMethodName, &daemonv1.CreateRequest{Name: "alice:web"}, codes.PermissionDenied},
		{ident("alice", &pki.Command{Name: "info"}), daemonv1.Daemon_Version_FullMethodName, &daemonv1.VersionRequest{}, codes.OK},
		{ident("alice", &pki.Command{Name: "create"}), daemonv1.Daemon_UploadImage_FullMethodName, &daemonv1.ImageChunk{}, codes.OK},
		{ident("alice", &pki.Command{Name: "create", Args: []string{"alice:web"}}), daemonv1.Daemon_Create_FullMethodName, &daemonv1.CreateRequest{Name: "alice:web"}, codes.OK},
		{ident("alice", &pki.Command{Name: "create", Args: []string{"alice:web"}}), daemonv1.Daemon_Create_FullMethodName, &daemonv1.CreateRequest{Name: "alice:db"}, codes.PermissionDenied},
		{ident("alice", &pki.Command{Name: "create", Args: []string{"alice:web", "x"}}), daemonv1.Daemon_Create_FullMethodName, &daemonv1.CreateRequest{Name: "alice:web"}, codes.PermissionDenied},
		{ident("alice", &pki.Command{Name: "format-disk"}), daemonv1.Daemon_Info_FullMethodName, &daemonv1.InfoRequest{}, codes.PermissionDenied},
		{ident("alice", &pki.Command{Name: "block-upload"}), daemonv1.Daemon_BlockUpload_FullMethodName, &daemonv1.BlockChunk{Name: "alice:d"}, codes.OK},
	} {
		err := AuthorizeMethod(c.id, c.method)
		if err == nil {
			err = AuthorizeRequest(c.id, c.method, c.req)
		}
		if status.Code(err) != c.code {
			t.Errorf("%s as %q (%v) on %v: %v, want %s", shortName(c.method), c.id.Domain, c.id.Command, c.req, err, c.code)
		}
	}
}

func TestListingDefaultsToDomain(t *testing.T) {
	req := &daemonv1.InfoRequest{}
	if err := AuthorizeRequest(ident("alice:x", nil), daemonv1.Daemon_Info_FullMethodName, req); err != nil {
		t.Fatal(err)
	}
	if req.Name != "alice:x" {
		t.Fatalf("empty listing path became %q, want the domain", req.Name)
	}
}

func TestFilter(t *testing.T) {
	alice := ident("alice", nil)
	for _, c := range []struct {
		ev   *daemonv1.Event
		keep bool
	}{
		{&daemonv1.Event{Type: "created", Name: "alice:web"}, true},
		{&daemonv1.Event{Type: "created", Name: "bob:web"}, false},
		{&daemonv1.Event{Type: "plugin-crashed", Name: "alice"}, false},
	} {
		if got := Filter(alice, c.ev); got != c.keep {
			t.Errorf("event %v: keep %v, want %v", c.ev, got, c.keep)
		}
	}
	if !Filter(ident(":", nil), &daemonv1.Event{Type: "plugin-crashed", Name: "hvt"}) {
		t.Error("the root domain must see plugin events")
	}
	b := &pluginv1.Batch{HostSample: &pluginv1.HostSample{}, Daemon: &pluginv1.DaemonSample{},
		Vms: []*pluginv1.VMSample{{Name: "alice:web"}, {Name: "bob:web"}}}
	Filter(alice, b)
	if b.HostSample != nil || b.Daemon != nil || len(b.Vms) != 1 || b.Vms[0].Name != "alice:web" {
		t.Errorf("filtered batch %v", b)
	}
	bl := &daemonv1.BlockListResponse{Orphans: []string{"junk"}, Devices: []*daemonv1.BlockInfo{{Name: "alice:d"}, {Name: "bob:d"}}}
	Filter(alice, bl)
	if len(bl.Orphans) != 0 || len(bl.Devices) != 1 {
		t.Errorf("filtered block list %v", bl)
	}
}

func TestQualify(t *testing.T) {
	alice := name.MustParse("alice")
	for _, c := range []struct{ in, want string }{
		{"web", "alice:web"}, {"x:web", "alice:x:web"}, {":bob:vm", "bob:vm"}, {"", "alice"}, {":", ":"},
	} {
		got, err := QualifyName(c.in, alice)
		if err != nil || got != c.want {
			t.Errorf("QualifyName(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if got, _ := QualifyName("web", name.Root); got != "web" {
		t.Errorf("at the root: %q", got)
	}
	if _, err := QualifyName("bad name", alice); err == nil {
		t.Error("an invalid name was qualified")
	}
	req := &daemonv1.ConsoleRequest{Name: "web"}
	if got, err := Qualify(daemonv1.Daemon_Console_FullMethodName, req, alice); err != nil || got != "alice:web" || req.Name != "alice:web" {
		t.Errorf("Qualify console: %q %v %q", got, err, req.Name)
	}
}

func testChain(t *testing.T) []*x509.Certificate {
	t.Helper()
	key, err := pki.GenerateKey("", 0)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRoot("petrel", key, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	chain, _, err := pki.NewLeafChain([]*x509.Certificate{root}, key, "web", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

func TestChainMetadata(t *testing.T) {
	chain := testChain(t)
	got, err := DecodeChain(EncodeChain(chain))
	if err != nil || len(got) != 2 || !got[0].Equal(chain[0]) || !got[1].Equal(chain[1]) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	for _, bad := range []string{"", "!!", "aGVsbG8=", strings.Repeat("a,", 20)} {
		if _, err := DecodeChain(bad); err == nil {
			t.Errorf("DecodeChain(%q) accepted", bad)
		}
	}
	// The root is left out when forwarding: petreld has it.
	ctx := OutgoingContext(context.Background(), &pki.Identity{Chain: chain})
	md, _ := metadata.FromOutgoingContext(ctx)
	if v := md.Get(ChainMetadata); len(v) != 1 || strings.Count(v[0], ",") != 0 {
		t.Fatalf("forwarded chain %v", v)
	}
	in := metadata.NewIncomingContext(context.Background(), md)
	if got, err := ChainFromMetadata(in); err != nil || len(got) != 1 {
		t.Fatalf("ChainFromMetadata: %v %v", got, err)
	}
	if got, err := ChainFromMetadata(context.Background()); got != nil || err != nil {
		t.Fatalf("no metadata: %v %v", got, err)
	}
}

func FuzzDecodeChain(f *testing.F) {
	f.Add("")
	f.Add("MIIB,MIIC")
	f.Add(strings.Repeat("QUJD,", 10))
	f.Fuzz(func(t *testing.T, s string) {
		certs, err := DecodeChain(s)
		if err == nil && (len(certs) == 0 || len(certs) > maxChainCerts) {
			t.Fatalf("%d certificates accepted", len(certs))
		}
	})
}

// fakeStream is a server stream with one queued request message.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	req  proto.Message
	sent []any
}

func (f *fakeStream) Context() context.Context { return f.ctx }
func (f *fakeStream) RecvMsg(m any) error {
	proto.Merge(m.(proto.Message), f.req)
	return nil
}
func (f *fakeStream) SendMsg(m any) error { f.sent = append(f.sent, m); return nil }

func TestInterceptors(t *testing.T) {
	alice := ident("alice", nil)
	identify := func(ctx context.Context) (*pki.Identity, error) {
		if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("remote")) > 0 {
			return alice, nil
		}
		return nil, nil
	}
	deploys := 0
	unary, stream := Interceptors(identify, func(context.Context, *pki.Identity) error { deploys++; return nil }, nil)
	remote := metadata.NewIncomingContext(context.Background(), metadata.Pairs("remote", "1"))
	handler := func(ctx context.Context, req any) (any, error) {
		if IdentityFrom(ctx) == nil {
			return nil, status.Error(codes.Internal, "no identity")
		}
		return &daemonv1.InfoResponse{Vms: []*daemonv1.VM{{Name: "alice:a"}, {Name: "bob:b"}}}, nil
	}
	info := &grpc.UnaryServerInfo{FullMethod: daemonv1.Daemon_Info_FullMethodName}
	resp, err := unary(remote, &daemonv1.InfoRequest{}, info, handler)
	if err != nil || len(resp.(*daemonv1.InfoResponse).Vms) != 1 {
		t.Fatalf("remote info: %v %v", resp, err)
	}
	if _, err := unary(context.Background(), &daemonv1.InfoRequest{Name: "bob"}, info, func(context.Context, any) (any, error) { return nil, nil }); err != nil {
		t.Fatalf("local info: %v", err)
	}
	create := &grpc.UnaryServerInfo{FullMethod: daemonv1.Daemon_Create_FullMethodName}
	if _, err := unary(remote, &daemonv1.CreateRequest{Name: "bob:x"}, create, handler); status.Code(err) != codes.PermissionDenied || deploys != 0 {
		t.Fatalf("create outside the domain: %v, %d deploy hooks", err, deploys)
	}
	if _, err := unary(remote, &daemonv1.CreateRequest{Name: "alice:x"}, create, handler); err != nil || deploys != 1 {
		t.Fatalf("create in the domain: %v, %d deploy hooks", err, deploys)
	}

	fs := &fakeStream{ctx: remote, req: &daemonv1.EventsRequest{Path: "bob"}}
	sinfo := &grpc.StreamServerInfo{FullMethod: daemonv1.Daemon_Events_FullMethodName, IsServerStream: true}
	called := false
	err = stream(nil, fs, sinfo, func(any, grpc.ServerStream) error { called = true; return nil })
	if status.Code(err) != codes.PermissionDenied || called {
		t.Fatalf("events outside the domain: %v (handler called %v)", err, called)
	}
	fs = &fakeStream{ctx: remote, req: &daemonv1.EventsRequest{}}
	err = stream(nil, fs, sinfo, func(_ any, ss grpc.ServerStream) error {
		var req daemonv1.EventsRequest
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		if req.Path != "alice" {
			return status.Errorf(codes.Internal, "handler got path %q", req.Path)
		}
		for _, n := range []string{"alice:a", "bob:b"} {
			if err := ss.SendMsg(&daemonv1.Event{Type: "created", Name: n}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || len(fs.sent) != 1 {
		t.Fatalf("events in the domain: %v, sent %v", err, fs.sent)
	}
}

// TestStreamEndsWhenIdentityFails: a stream open while its identity stops
// holding (a certificate revoked or expired) ends within a recheck
// interval or two, with Unauthenticated and the reason, whatever the
// handler returns; local streams are never rechecked.
func TestStreamEndsWhenIdentityFails(t *testing.T) {
	alice := ident("alice", nil)
	identify := func(ctx context.Context) (*pki.Identity, error) {
		if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("remote")) > 0 {
			return alice, nil
		}
		return nil, nil
	}
	var revoked atomic.Bool
	rechecks := atomic.Int32{}
	recheck := func(id *pki.Identity) error {
		rechecks.Add(1)
		if id != alice {
			return errors.New("recheck of another identity")
		}
		if revoked.Load() {
			return errors.New(`certificate "alice" (serial 1): certificate revoked`)
		}
		return nil
	}
	_, stream := Interceptors(identify, nil, recheck)
	remote := metadata.NewIncomingContext(context.Background(), metadata.Pairs("remote", "1"))
	sinfo := &grpc.StreamServerInfo{FullMethod: daemonv1.Daemon_Events_FullMethodName, IsServerStream: true}
	// The handler follows until its context ends, then returns nil, as
	// petreld's event and console streams do.
	follow := func(_ any, ss grpc.ServerStream) error {
		<-ss.Context().Done()
		return nil
	}
	time.AfterFunc(3*RecheckInterval, func() { revoked.Store(true) })
	start := time.Now()
	err := stream(nil, &fakeStream{ctx: remote, req: &daemonv1.EventsRequest{}}, sinfo, follow)
	took := time.Since(start)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "certificate revoked; the stream has ended") {
		t.Fatalf("stream after revocation: %v", err)
	}
	if took > 3*RecheckInterval+2*RecheckInterval {
		t.Errorf("the stream ended %v after it opened, more than two recheck intervals after the revocation", took)
	}

	// A stream that ends on its own is not turned into a refusal, and its
	// watch stops with it.
	revoked.Store(false)
	err = stream(nil, &fakeStream{ctx: remote, req: &daemonv1.EventsRequest{}}, sinfo, func(any, grpc.ServerStream) error { return nil })
	if err != nil {
		t.Fatalf("a stream that ended by itself: %v", err)
	}

	// Local streams carry no identity and are not rechecked.
	n := rechecks.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 2*RecheckInterval)
	defer cancel()
	err = stream(nil, &fakeStream{ctx: ctx, req: &daemonv1.EventsRequest{}}, sinfo, follow)
	if err != nil || rechecks.Load() != n {
		t.Fatalf("local stream: %v, %d rechecks", err, rechecks.Load()-n)
	}
}
