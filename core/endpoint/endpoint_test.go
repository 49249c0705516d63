package endpoint

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/protocodec"
)

func TestHandledExtensionsMatchPKI(t *testing.T) {
	want := []string{pki.OIDPolicy.String(), pki.OIDCommand.String()}
	if len(client.HandledExtensions) != len(want) {
		t.Fatalf("sdk/client handles %v, core/pki defines %v", client.HandledExtensions, want)
	}
	for i, oid := range client.HandledExtensions {
		if oid.String() != want[i] {
			t.Errorf("sdk/client extension %d is %s, core/pki's is %s", i, oid, want[i])
		}
	}
}

// fakeDaemon stands in for petreld and records the chains it is given.
type fakeDaemon struct {
	daemonv1.UnimplementedDaemonServer
	mu     sync.Mutex
	chains [][]*x509.Certificate
	infoOf string
}

func (f *fakeDaemon) note(ctx context.Context) {
	chain, _ := authz.ChainFromMetadata(ctx)
	f.mu.Lock()
	f.chains = append(f.chains, chain)
	f.mu.Unlock()
}

func (f *fakeDaemon) Info(ctx context.Context, req *daemonv1.InfoRequest) (*daemonv1.InfoResponse, error) {
	f.note(ctx)
	f.mu.Lock()
	f.infoOf = req.GetName()
	f.mu.Unlock()
	return &daemonv1.InfoResponse{Vms: []*daemonv1.VM{{Name: "alice:web"}, {Name: "bob:web"}}}, nil
}

func (f *fakeDaemon) Destroy(ctx context.Context, req *daemonv1.DestroyRequest) (*daemonv1.DestroyResponse, error) {
	f.note(ctx)
	return nil, status.Errorf(codes.NotFound, "no VM %s", req.GetName())
}

func (f *fakeDaemon) UploadImage(stream daemonv1.Daemon_UploadImageServer) error {
	f.note(stream.Context())
	var n int64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&daemonv1.ImageRef{Sha256: "x", Size: n})
		}
		if err != nil {
			return err
		}
		n += int64(len(m.GetData()))
	}
}

func (f *fakeDaemon) Console(req *daemonv1.ConsoleRequest, stream daemonv1.Daemon_ConsoleServer) error {
	f.note(stream.Context())
	for _, l := range []string{"one", "two", "three"} {
		if err := stream.Send(&daemonv1.ConsoleLine{Text: req.GetName() + " " + l}); err != nil {
			return err
		}
	}
	return nil
}

// setup starts a fake daemon and an endpoint in front of it, and returns
// a client authenticated as alice (a sub-CA with a policy) and the CA
// directory.
func setup(t *testing.T) (*fakeDaemon, *client.Client, string) {
	t.Helper()
	fake := &fakeDaemon{}
	e := startEndpoint(t, fake)
	return fake, e.remote, e.dir
}

// testEndpoint is an endpoint in front of a daemon API server on a unix
// socket, and a client of the endpoint.
type testEndpoint struct {
	dir    string         // holds the CA (ca/) and alice.pem
	sock   string         // the daemon's socket
	remote *client.Client // authenticated as alice's leaf "web"
	srv    *Server
	root   *x509.Certificate
	// leaf makes another leaf of alice's, named cn: its chain and key.
	leaf func(cn string) ([]*x509.Certificate, crypto.Signer)
}

// startEndpoint serves daemon on a unix socket, starts an endpoint in
// front of it and connects a client authenticated as alice (a sub-CA
// with a policy) through it; all are stopped when t ends.
func startEndpoint(t testing.TB, daemon daemonv1.DaemonServer) *testEndpoint {
	t.Helper()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if err := pki.InitCA(ca, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "d.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// petreld's options for its sockets.
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(8<<20), grpc.InitialWindowSize(8<<20), grpc.InitialConnWindowSize(16<<20),
		grpc.ForceServerCodecV2(protocodec.Codec{}), experimental.BufferPool(protocodec.Pool))
	daemonv1.RegisterDaemonServer(gs, daemon)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	srv, err := New(Options{Listen: "127.0.0.1:0", Socket: sock, CAFile: filepath.Join(ca, pki.CACertFile),
		CertFile: filepath.Join(ca, pki.ServerCertFile), KeyFile: filepath.Join(ca, pki.ServerKeyFile),
		RevocationFile: filepath.Join(ca, pki.RevokedFile)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	root, err := pki.ReadCertsFile(filepath.Join(ca, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := pki.ReadKeyFile(filepath.Join(ca, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	aliceKey, err := pki.GenerateKey("", 0)
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.CSR(aliceKey, "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := pki.SignPolicy(csr, root[0], rootKey, policy.Policy{VMs: 2, MemoryMB: 256}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCertsFile(filepath.Join(dir, "alice.pem"), alice); err != nil {
		t.Fatal(err)
	}
	leaf := func(cn string) ([]*x509.Certificate, crypto.Signer) {
		chain, key, err := pki.NewLeafChain([]*x509.Certificate{alice}, aliceKey, cn, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		return chain, key
	}
	chain, key := leaf("web")
	c, err := client.DialTLS(srv.Addr().String(), chain, key, root[0], "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &testEndpoint{dir: dir, sock: sock, remote: c, srv: srv, root: root[0], leaf: leaf}
}

func TestRelay(t *testing.T) {
	fake, c, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	res, err := c.API.Info(ctx, &daemonv1.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.GetVms()) != 1 || res.GetVms()[0].GetName() != "alice:web" {
		t.Errorf("info through the endpoint: %v", res.GetVms())
	}
	fake.mu.Lock()
	if fake.infoOf != "alice" {
		t.Errorf("petreld was asked for %q, want the domain", fake.infoOf)
	}
	if len(fake.chains) != 1 || len(fake.chains[0]) != 2 || fake.chains[0][0].Subject.CommonName != "web" || fake.chains[0][1].Subject.CommonName != "alice" {
		t.Errorf("chain forwarded to petreld: %v", fake.chains)
	}
	fake.mu.Unlock()

	if _, err := c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: "alice:gone"}); status.Code(err) != codes.NotFound {
		t.Errorf("petreld's NotFound came back as %v", err)
	}
	if _, err := c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: "bob:web"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("destroy outside the domain: %v", err)
	}

	// 20 MB, more than one gRPC message allows: the upload streams.
	img := bytes.Repeat([]byte("petrel"), 20<<20/6)
	ref, err := c.UploadImage(ctx, bytes.NewReader(img), int64(len(img)), nil)
	if err != nil || ref.GetSize() != int64(len(img)) {
		t.Fatalf("upload through the endpoint: %v %v", ref, err)
	}

	stream, err := c.API.Console(ctx, &daemonv1.ConsoleRequest{Name: "alice:web"})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for {
		l, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l.GetText())
	}
	if len(lines) != 3 || lines[2] != "alice:web three" {
		t.Errorf("console through the endpoint: %q", lines)
	}
}

func TestRevocationWithoutRestart(t *testing.T) {
	_, c, dir := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.API.Info(ctx, &daemonv1.InfoRequest{}); err != nil {
		t.Fatal(err)
	}
	alice, err := pki.ReadCertsFile(filepath.Join(dir, "alice.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.Revoke(filepath.Join(dir, "ca", pki.RevokedFile), alice[0]); err != nil {
		t.Fatal(err)
	}
	// The connection stays open; each call is checked again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.API.Info(ctx, &daemonv1.InfoRequest{})
		if status.Code(err) == codes.Unauthenticated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked chain still accepted: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
