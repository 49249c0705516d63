package daemon

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/config"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// testDaemon is a petreld started in-process with no plugin enabled (so
// nothing is spawned), serving both sockets in a temporary directory.
type testDaemon struct {
	d      *Daemon
	admin  daemonv1.DaemonClient
	remote daemonv1.DaemonClient
	dir    string
}

// startDaemon starts a testDaemon; edit, if not nil, changes the
// configuration first.
func startDaemon(t *testing.T, edit func(*config.Config)) *testDaemon {
	t.Helper()
	cfg, err := config.Load("")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.DataDir, cfg.RunDir, cfg.PluginDir = filepath.Join(dir, "data"), filepath.Join(dir, "run"), filepath.Join(dir, "plugins")
	if err := os.Mkdir(cfg.PluginDir, 0o755); err != nil {
		t.Fatal(err)
	}
	off := false
	for _, set := range [][]config.PluginBlock{cfg.Backends, cfg.Networks, cfg.Metrics} {
		for i := range set {
			set[i].Enabled = &off
		}
	}
	if edit != nil {
		edit(cfg)
	}
	d, err := Start(context.Background(), cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve() }()
	t.Cleanup(func() {
		d.Close()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &testDaemon{d: d, admin: dial(t, d.Socket()), remote: dial(t, d.RemoteSocket()), dir: dir}
}

func dial(t *testing.T, socket string) daemonv1.DaemonClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return daemonv1.NewDaemonClient(conn)
}

// wantCode fails unless err is a status error with code c.
func wantCode(t *testing.T, what string, err error, c codes.Code) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != c {
		t.Fatalf("%s: %v, want %s", what, err, c)
	}
	return st
}

// upload sends data as one image upload, declaring size and digest as
// given.
func upload(ctx context.Context, c daemonv1.DaemonClient, data []byte, size int64, sha string) (*daemonv1.ImageRef, error) {
	stream, err := c.UploadImage(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&daemonv1.ImageChunk{Size: size, Sha256: sha, Data: data}); err != nil {
		return nil, err
	}
	return stream.CloseAndRecv()
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestUploadImage: an upload is stored under its digest and, named by
// digest again, not received twice; one that lies about its digest or
// size (a stream cut short included), or names no SHA-256, is refused as
// the caller's mistake and leaves nothing in the store.
func TestUploadImage(t *testing.T) {
	td := startDaemon(t, nil)
	ctx := ctxT(t)
	img := []byte("a unikernel, or near enough")
	sha := digest(img)

	ref, err := upload(ctx, td.admin, img, int64(len(img)), sha)
	if err != nil {
		t.Fatal(err)
	}
	if ref.GetSha256() != sha || ref.GetSize() != int64(len(img)) {
		t.Fatalf("upload returned %v, want %s of %d bytes", ref, sha, len(img))
	}
	// Named by digest, without content: the store's copy is claimed.
	again, err := upload(ctx, td.admin, nil, int64(len(img)), sha)
	if err != nil || again.GetSha256() != sha || again.GetSize() != int64(len(img)) {
		t.Fatalf("upload by digest of a stored image: %v %v", again, err)
	}

	other := []byte("another image")
	for _, c := range []struct {
		what string
		data []byte
		size int64
		sha  string
		msg  string
	}{
		{"wrong digest", other, int64(len(other)), digest([]byte("not it")), "its upload declared"},
		{"digest not hex", other, 0, "ZZ", "not a lowercase hex SHA-256"},
		{"larger than declared", other, 3, "", "larger than the 3 bytes its upload declared"},
		{"shorter than declared", other, int64(len(other)) + 1, "", "not the 14 its upload declared"},
		{"too large", other, MaxImageBytes + 1, "", "exceeds the limit"},
		{"negative size", other, -1, "", "negative"},
	} {
		_, err := upload(ctx, td.admin, c.data, c.size, c.sha)
		st := wantCode(t, c.what, err, codes.InvalidArgument)
		if !strings.Contains(st.Message(), c.msg) {
			t.Errorf("%s: %q does not say %q", c.what, st.Message(), c.msg)
		}
	}
	if _, err := td.d.store.ImagePath(digest(other)); err == nil {
		t.Fatal("a refused upload was stored")
	}
}

// TestCreateUnknownDigest: a create naming a digest the store does not
// hold is refused with the UnknownImage detail listing it, which is how a
// client knows to upload and create again; a bad name is refused before
// that.
func TestCreateUnknownDigest(t *testing.T) {
	td := startDaemon(t, nil)
	ctx := ctxT(t)
	missing := digest([]byte("never uploaded"))
	_, err := td.admin.Create(ctx, &daemonv1.CreateRequest{Name: "web", ImageSha256: missing})
	st := wantCode(t, "create by an unknown digest", err, codes.InvalidArgument)
	var listed []string
	for _, d := range st.Details() {
		if u, ok := d.(*daemonv1.UnknownImage); ok {
			listed = append(listed, u.GetSha256()...)
		}
	}
	if len(listed) != 1 || listed[0] != missing {
		t.Fatalf("UnknownImage detail lists %v, want [%s]", listed, missing)
	}
	_, err = td.admin.Create(ctx, &daemonv1.CreateRequest{Name: "Bad Name", ImageSha256: missing})
	st = wantCode(t, "create with a bad name", err, codes.InvalidArgument)
	if len(st.Details()) != 0 {
		t.Fatalf("a bad name was answered with details %v", st.Details())
	}
}

// TestCreateWithoutBackend: a create whose backend is not enabled is the
// caller's mistake, and the image it brought is removed at once, as
// nothing holds it.
func TestCreateWithoutBackend(t *testing.T) {
	td := startDaemon(t, nil)
	ctx := ctxT(t)
	img := []byte("image for a backend that is off")
	if _, err := upload(ctx, td.admin, img, int64(len(img)), ""); err != nil {
		t.Fatal(err)
	}
	_, err := td.admin.Create(ctx, &daemonv1.CreateRequest{Name: "web", ImageSha256: digest(img), Backend: "hvt"})
	st := wantCode(t, "create on a backend that is not enabled", err, codes.InvalidArgument)
	if !strings.Contains(st.Message(), `no backend "hvt" is enabled`) {
		t.Fatalf("refusal %q", st.Message())
	}
	if _, err := td.d.store.ImagePath(digest(img)); err == nil {
		t.Fatal("the image of a failed create was kept")
	}
}

// TestNotFoundAndInvalid: requests about what does not exist are
// NotFound, malformed ones InvalidArgument, whatever the layer that finds
// out.
func TestNotFoundAndInvalid(t *testing.T) {
	td := startDaemon(t, nil)
	ctx := ctxT(t)
	_, err := td.admin.Info(ctx, &daemonv1.InfoRequest{Name: "nope"})
	wantCode(t, "info of a missing VM", err, codes.NotFound)
	_, err = td.admin.Destroy(ctx, &daemonv1.DestroyRequest{Name: "nope"})
	wantCode(t, "destroy of a missing VM", err, codes.NotFound)
	_, err = td.admin.Restart(ctx, &daemonv1.RestartRequest{Name: "BAD NAME"})
	wantCode(t, "restart of a bad name", err, codes.InvalidArgument)
	_, err = td.admin.BlockDestroy(ctx, &daemonv1.BlockDestroyRequest{Name: "nodisk"})
	wantCode(t, "destroy of a missing block device", err, codes.NotFound)
	_, err = td.admin.PolicyAdd(ctx, &daemonv1.PolicyAddRequest{Path: "", Policy: &daemonv1.Policy{Vms: 1, MemoryMb: 64}})
	wantCode(t, "policy for the root", err, codes.InvalidArgument)
	_, err = td.admin.PolicyRemove(ctx, &daemonv1.PolicyRemoveRequest{Path: "nobody"})
	wantCode(t, "removal of a missing policy", err, codes.NotFound)
	cs, err := td.admin.Console(ctx, &daemonv1.ConsoleRequest{Name: "web", Count: -1})
	if err == nil {
		_, err = cs.Recv()
	}
	wantCode(t, "console with a negative count", err, codes.InvalidArgument)
	if recs, err := td.admin.Info(ctx, &daemonv1.InfoRequest{}); err != nil || len(recs.GetVms()) != 0 {
		t.Fatalf("info of everything on an empty host: %v %v", recs, err)
	}
}

// TestBlockQuota: a block device that would exceed the block allowance of
// a policy above it is refused as exhausted, one within it is made.
func TestBlockQuota(t *testing.T) {
	td := startDaemon(t, nil)
	ctx := ctxT(t)
	four := int64(4)
	if _, err := td.admin.PolicyAdd(ctx, &daemonv1.PolicyAddRequest{Path: "team",
		Policy: &daemonv1.Policy{Vms: 2, MemoryMb: 64, BlockMb: &four}}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.admin.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:a", SizeMb: 3}); err != nil {
		t.Fatal(err)
	}
	_, err := td.admin.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:b", SizeMb: 2})
	wantCode(t, "a block device past the team's allowance", err, codes.ResourceExhausted)
	if _, err := td.admin.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:b", SizeMb: 1}); err != nil {
		t.Fatalf("a block device within the allowance: %v", err)
	}
	_, err = td.admin.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:a", SizeMb: 0})
	if err == nil {
		t.Fatal("a second device of the same name was made")
	}
}

// ca is a test certificate authority: a root, or a sub-CA under one.
type ca struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain []*x509.Certificate // cert first, the root excluded
}

func newCA(t *testing.T) ca {
	t.Helper()
	key, err := pki.GenerateKey("", 0)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.NewRoot("test root", key, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca{cert: cert, key: key}
}

// sub makes a sub-CA for domain label cn carrying p.
func (a ca) sub(t *testing.T, cn string, p policy.Policy) ca {
	t.Helper()
	key, err := pki.GenerateKey("", 0)
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.CSR(key, cn, nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.SignPolicy(csr, a.cert, a.key, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca{cert: cert, key: key, chain: append([]*x509.Certificate{cert}, a.chain...)}
}

// as returns ctx carrying a fresh leaf chain for cn under a, as
// petrel-endpoint forwards it.
func (a ca) as(t *testing.T, ctx context.Context, cn string) (context.Context, *x509.Certificate) {
	t.Helper()
	signer := a.chain
	if len(signer) == 0 {
		signer = []*x509.Certificate{a.cert}
	}
	chain, _, err := pki.NewLeafChain(signer, a.key, cn, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.chain) == 0 {
		chain = chain[:1] // a leaf the root signed: the root is petreld's
	}
	return metadata.AppendToOutgoingContext(ctx, authz.ChainMetadata, authz.EncodeChain(chain)), chain[0]
}

// TestRemoteRequests: on the endpoint's socket a request needs a chain
// petreld verifies; with no ca_file every chain is refused; a chain from
// another CA is refused; a revoked leaf is refused at its next request,
// the revocation file being re-read as it changes.
func TestRemoteRequests(t *testing.T) {
	root := newCA(t)
	dir := t.TempDir()
	caFile, revFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "revoked")
	if err := pki.WriteCertsFile(caFile, root.cert); err != nil {
		t.Fatal(err)
	}
	if err := (&pki.RevocationList{}).Save(revFile); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	team := root.sub(t, "team", policy.Policy{VMs: 2, MemoryMB: 64})

	off := startDaemon(t, nil)
	_, err := off.remote.Version(ctx, &daemonv1.VersionRequest{})
	st := wantCode(t, "a request without a chain on the endpoint's socket", err, codes.Unauthenticated)
	if !strings.Contains(st.Message(), "petrel-endpoint") {
		t.Fatalf("refusal %q does not say what the socket is for", st.Message())
	}
	teamCtx, _ := team.as(t, ctx, "web")
	_, err = off.admin.Version(teamCtx, &daemonv1.VersionRequest{})
	st = wantCode(t, "a chain without ca_file", err, codes.Unauthenticated)
	if !strings.Contains(st.Message(), "ca_file") {
		t.Fatalf("refusal %q does not name ca_file", st.Message())
	}
	if _, err := off.admin.Version(ctx, &daemonv1.VersionRequest{}); err != nil {
		t.Fatalf("a local request on the administrators' socket: %v", err)
	}

	td := startDaemon(t, func(c *config.Config) { c.CAFile, c.RevocationFile = caFile, revFile })
	if _, err := td.remote.Version(teamCtx, &daemonv1.VersionRequest{}); err != nil {
		t.Fatalf("a verified chain on the endpoint's socket: %v", err)
	}
	strangerCtx, _ := newCA(t).sub(t, "team", policy.Policy{VMs: 2, MemoryMB: 64}).as(t, ctx, "web")
	_, err = td.remote.Version(strangerCtx, &daemonv1.VersionRequest{})
	wantCode(t, "a chain from another CA", err, codes.Unauthenticated)

	revokedCtx, leaf := team.as(t, ctx, "web")
	if _, err := td.remote.Version(revokedCtx, &daemonv1.VersionRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := pki.Revoke(revFile, leaf); err != nil {
		t.Fatal(err)
	}
	_, err = td.remote.Version(revokedCtx, &daemonv1.VersionRequest{})
	wantCode(t, "a revoked leaf", err, codes.Unauthenticated)
	if _, err := td.remote.Version(teamCtx, &daemonv1.VersionRequest{}); err != nil {
		t.Fatalf("another leaf of the same CA after a revocation: %v", err)
	}
}

// startTrusting starts a testDaemon whose ca_file is a new root CA's,
// which it returns too.
func startTrusting(t *testing.T) (*testDaemon, ca) {
	t.Helper()
	root := newCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := pki.WriteCertsFile(caFile, root.cert); err != nil {
		t.Fatal(err)
	}
	return startDaemon(t, func(c *config.Config) { c.CAFile = caFile }), root
}

// TestRemoteScope: a remote caller sees and touches only its own domain;
// its chain's policy is recorded as the certificate policy of its domain
// before a deploy, and bounds what it may upload.
func TestRemoteScope(t *testing.T) {
	td, root := startTrusting(t)
	ctx := ctxT(t)
	one := 1
	team := root.sub(t, "team", policy.Policy{VMs: 2, MemoryMB: 64, ImagesMB: &one})

	if _, err := td.admin.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "other:disk", SizeMb: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.admin.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: "team:disk", SizeMb: 1}); err != nil {
		t.Fatal(err)
	}
	teamCtx, _ := team.as(t, ctx, "disk")
	list, err := td.remote.BlockList(teamCtx, &daemonv1.BlockListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range list.GetDevices() {
		names = append(names, d.GetName())
	}
	if len(names) != 1 || names[0] != "team:disk" {
		t.Fatalf("a remote caller of domain team lists %v", names)
	}
	_, err = td.remote.BlockDestroy(teamCtx, &daemonv1.BlockDestroyRequest{Name: "other:disk"})
	wantCode(t, "destroy outside the caller's domain", err, codes.PermissionDenied)

	// An upload is a deploy: the chain's policy is recorded first, and
	// its image allowance (1 MB) bounds the upload.
	big := make([]byte, 2<<20)
	uploadCtx, _ := team.as(t, ctx, "web")
	_, err = upload(uploadCtx, td.remote, big, int64(len(big)), "")
	wantCode(t, "an upload past the chain's image allowance", err, codes.ResourceExhausted)
	pols, err := td.admin.PolicyList(ctx, &daemonv1.PolicyListRequest{Path: "team"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pols.GetPolicies()) != 1 || pols.GetPolicies()[0].GetCertificate().GetVms() != 2 || pols.GetPolicies()[0].GetLocal() != nil {
		t.Fatalf("policies of team after a remote deploy: %v", pols.GetPolicies())
	}
	small := []byte("small image")
	if ref, err := upload(uploadCtx, td.remote, small, int64(len(small)), ""); err != nil || ref.GetSha256() != digest(small) {
		t.Fatalf("an upload within the allowance: %v %v", ref, err)
	}
}
