package integration

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/contrib/testservers"
	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// hiddenFiles lists the files and directories under dir whose names start
// with a dot.
func hiddenFiles(dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != dir && strings.HasPrefix(fi.Name(), ".") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestDotLabelsRefused: names with a label made only of dots are refused
// locally and remotely, with the rule in the message, and nothing named
// after them appears in the data directory.
func TestDotLabelsRefused(t *testing.T) {
	r := newRemoteEnv(t)
	img := r.image("dots.hvt", solo5.TargetHVT)
	const rule = "made only of dots; a label needs at least one of a-z, 0-9 or '-'"
	for _, args := range [][]string{
		{"create", ".", img},
		{"create", "..", img},
		{"create", "team:...", img},
		{"policy", "add", "..", "--vms", "1", "--mem", "16"},
		{"block", "create", "..:disk", "1"},
		{"info", ".."},
	} {
		if res := r.petrel(args...); res.code != 6 || !strings.Contains(res.err, rule) {
			t.Errorf("petrel %v: exit %d %q, want 6 with %q", args, res.code, res.err, rule)
		}
	}
	// The CLI refuses such names before sending them (a usage error);
	// the endpoint and petreld refuse them when sent anyway.
	alice, aliceKey := r.subCA("alice", r.file("ca.pem"), r.file("ca.key"), "--vms", "2", "--mem", "256")
	for _, args := range [][]string{{"create", "..", img}, {"create", ".", img}, {"policy", "add", "..", "--vms", "1", "--mem", "16"}} {
		if res := r.remote(alice, aliceKey, args...); res.code != 2 || !strings.Contains(res.err, rule) {
			t.Errorf("remote petrel %v: exit %d %q, want 2 with %q", args, res.code, res.err, rule)
		}
	}
	c := dialSigned(t, r, alice, aliceKey, "web")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: "alice:..", ImageSha256: strings.Repeat("0", 64)})
	wantCode(t, "create alice:.. through the endpoint", err, codes.InvalidArgument, rule)
	_, err = c.API.PolicyAdd(ctx, &daemonv1.PolicyAddRequest{Path: "alice:.", Policy: &daemonv1.Policy{Vms: 1, MemoryMb: 16}})
	wantCode(t, "policy add alice:. through the endpoint", err, codes.InvalidArgument, rule)
	if left := hiddenFiles(r.dataDir); len(left) != 0 {
		t.Errorf("hidden files in the data directory: %v", left)
	}
}

// TestEndpointRefusesRootUser: --user naming root (by name or uid) would
// keep root's privileges, so it is refused unless --allow-root is given.
func TestEndpointRefusesRootUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to check what the endpoint does with --user root")
	}
	dir := t.TempDir()
	if err := pki.InitCA(dir, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	base := []string{"--socket", filepath.Join(dir, "none.sock"),
		"--ca", filepath.Join(dir, "ca.pem"), "--cert", filepath.Join(dir, "server.pem"), "--key", filepath.Join(dir, "server.key")}
	for _, user := range []string{"root", "0"} {
		// An endpoint that does not refuse keeps running; the timeout
		// turns that into a failure instead of a hang.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, filepath.Join(binDir, "petrel-endpoint"), append(base, "--listen", testservers.FreeAddr(t), "--user", user)...).CombinedOutput()
		cancel()
		want := "--user " + user + ": refusing to run with root's privileges (uid 0)"
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), want) {
			t.Errorf("petrel-endpoint --user %s: %v %q, want exit 2 with %q", user, err, out, want)
		}
		if strings.Contains(string(out), "running unprivileged") {
			t.Errorf("petrel-endpoint --user %s claims to run unprivileged: %s", user, out)
		}
	}

	// With --allow-root it runs, and says it keeps root's privileges.
	logPath := filepath.Join(dir, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(binDir, "petrel-endpoint"), append(base, "--listen", testservers.FreeAddr(t), "--user", "root", "--allow-root")...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitFor(t, "the endpoint to log its privileges", 10*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "running with root's privileges (--allow-root)")
	})
	if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "running unprivileged") {
		t.Errorf("the endpoint claims to run unprivileged as root:\n%s", b)
	}
}

// TestQuotaArithmeticOverflow: a block device size chosen so that the
// policy's sum wraps around is refused by the policy, not admitted.
func TestQuotaArithmeticOverflow(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.mustPetrel("policy", "add", "q", "--vms", "1", "--mem", "64", "--block", "10")
	e.mustPetrel("block", "create", "q:small", "6")
	for _, size := range []string{"9223372036854775807", "9223372036854775802"} {
		res := e.petrel("block", "create", "q:huge", size)
		want := `policy of "q": 6 + ` + size + ` MB of block storage would exceed the limit of 10 MB`
		if res.code != 10 || !strings.Contains(res.err, want) {
			t.Errorf("block create of %s MB: exit %d %q, want 10 with %q", size, res.code, res.err, want)
		}
	}
	e.mustPetrel("block", "destroy", "q:small")
}

// onSocket returns a daemon API client on the unix socket sock whose
// calls carry chain as petrel-endpoint forwards it (none when nil).
func onSocket(t *testing.T, sock string, chain []*x509.Certificate) (daemonv1.DaemonClient, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if chain != nil {
		ctx = metadata.AppendToOutgoingContext(ctx, authz.ChainMetadata, authz.EncodeChain(chain))
	}
	return daemonv1.NewDaemonClient(conn), ctx
}

// TestRemoteSocket: petreld serves the endpoint on a socket of its own,
// with the mode and group configured, where a request without a chain is
// refused and one with a verified chain is scoped to the caller's domain;
// the administrators' socket keeps serving local requests.
func TestRemoteSocket(t *testing.T) {
	e := newEnvTB(t)
	r := startRemote(t, e, "remote_socket_mode = \"0660\"\nremote_socket_group = \"nogroup\"\n")
	img := r.image("rs.hvt", solo5.TargetHVT)

	fi, err := os.Stat(e.remoteSocket())
	if err != nil {
		t.Fatalf("no remote socket: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o660 || st.Uid != 0 || st.Gid != 65534 {
		t.Errorf("%s: mode %o owner %d:%d, want 0660 0:65534 (nogroup)", e.remoteSocket(), fi.Mode().Perm(), st.Uid, st.Gid)
	}
	if fi, err := os.Stat(e.socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the administrators' socket: %v %v, want mode 0600", fi.Mode(), err)
	}

	e.mustPetrel("create", "bob:vm", img, "--arg", "run=forever")
	alice, aliceKey := r.subCA("alice", r.file("ca.pem"), r.file("ca.key"), "--vms", "1", "--mem", "64")
	aliceCA, err := pki.ReadCertsFile(alice)
	if err != nil {
		t.Fatal(err)
	}
	aliceSigner, err := pki.ReadKeyFile(aliceKey)
	if err != nil {
		t.Fatal(err)
	}
	chain, _, err := pki.NewLeafChain(aliceCA, aliceSigner, "web", nil, "")
	if err != nil {
		t.Fatal(err)
	}

	// Without a chain, nothing is served: not even what is open to every
	// authenticated caller.
	const noChain = "petreld-remote.sock serves only requests forwarded by petrel-endpoint with the caller's certificate chain"
	api, ctx := onSocket(t, e.remoteSocket(), nil)
	_, err = api.Destroy(ctx, &daemonv1.DestroyRequest{Name: "bob:vm"})
	wantCode(t, "destroy without a chain on the remote socket", err, codes.Unauthenticated, noChain)
	_, err = api.Version(ctx, &daemonv1.VersionRequest{})
	wantCode(t, "version without a chain on the remote socket", err, codes.Unauthenticated, noChain)
	_, err = api.PolicyAdd(ctx, &daemonv1.PolicyAddRequest{Path: "bob", Policy: &daemonv1.Policy{Vms: 0}})
	wantCode(t, "policy add without a chain on the remote socket", err, codes.Unauthenticated, noChain)
	ev, err := api.Events(ctx, &daemonv1.EventsRequest{})
	if err == nil {
		_, err = ev.Recv()
	}
	wantCode(t, "events without a chain on the remote socket", err, codes.Unauthenticated, noChain)

	// With alice's chain: alice's rights, within alice's domain.
	api, ctx = onSocket(t, e.remoteSocket(), chain)
	_, err = api.Destroy(ctx, &daemonv1.DestroyRequest{Name: "bob:vm"})
	wantCode(t, "alice destroying bob:vm on the remote socket", err, codes.PermissionDenied, `"bob:vm" is not below the certificate's domain "alice"`)
	_, err = api.Plugins(ctx, &daemonv1.PluginsRequest{})
	wantCode(t, "alice listing plugins on the remote socket", err, codes.PermissionDenied, "reserved to its owner")
	// The health summary is alice's to read: every enabled plugin's name,
	// kind and health, as the owner's own listing says.
	health, err := pluginHealthSummary(ctx, api)
	if err != nil {
		t.Fatalf("alice's plugin health summary on the remote socket: %v", err)
	}
	ownerAPI, ownerCtx := onSocket(t, e.socket, nil)
	full, err := ownerAPI.Plugins(ownerCtx, &daemonv1.PluginsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range full.GetPlugins() {
		if p.GetHealth() != "not enabled" {
			want = append(want, p.GetName()+"/"+p.GetKind()+"/"+p.GetHealth())
		}
	}
	if len(want) == 0 || strings.Join(health, " ") != strings.Join(want, " ") {
		t.Errorf("alice's plugin health summary %q, want the owner's %q", health, want)
	}
	info, err := api.Info(ctx, &daemonv1.InfoRequest{})
	if status.Code(err) != codes.NotFound && (err != nil || len(info.GetVms()) != 0) {
		t.Errorf("alice's info on the remote socket: %v %v, want nothing of bob's", info, err)
	}
	// A forged or foreign chain is refused there as on the other socket.
	other, otherKey := forge{cn: "other", ca: true}.issue(t, nil, nil)
	foreign, _ := forge{cn: "web"}.issue(t, other, otherKey)
	_, err = api.Info(metadata.AppendToOutgoingContext(context.Background(), authz.ChainMetadata, authz.EncodeChain([]*x509.Certificate{foreign})), &daemonv1.InfoRequest{})
	wantCode(t, "a foreign chain on the remote socket", err, codes.Unauthenticated, "trusted root")

	// Through the endpoint, which now uses the remote socket, alice
	// deploys within her policy.
	if out := r.mustRemote(alice, aliceKey, "create", "web", img, "--mem", "32", "--arg", "run=forever"); !strings.Contains(out, "created alice:web") {
		t.Fatalf("remote create said %q", out)
	}
	if res := r.remote(alice, aliceKey, "destroy", ":bob:vm"); res.code != 8 {
		t.Errorf("alice destroying bob:vm through the endpoint: exit %d %q", res.code, res.err)
	}
	// The administrators' socket still serves the owner without a chain.
	if vm := r.info("bob:vm"); vm.State != "running" {
		t.Fatalf("bob:vm: %+v", vm)
	}
	r.mustPetrel("destroy", "alice:web")
	r.mustPetrel("destroy", "bob:vm")
}

// stream is a long-lived petrel command (events, console --follow,
// stats --follow) run against the endpoint.
type stream struct {
	what   string
	cmd    *exec.Cmd
	stderr *strings.Builder
	ended  chan time.Time
}

// startStream runs the CLI with args and notes when it exits.
func (r *remoteEnv) startStream(t *testing.T, what string, args ...string) *stream {
	t.Helper()
	s := &stream{what: what, stderr: &strings.Builder{}, ended: make(chan time.Time, 1)}
	s.cmd = exec.Command(filepath.Join(binDir, "petrel"), args...)
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); s.ended <- time.Now() }()
	t.Cleanup(func() { s.cmd.Process.Kill() })
	return s
}

// TestStreamsEndOnRevocation: events, console --follow and stats --follow
// opened through the endpoint end within a second of a certificate of
// their chain (here the tenant's sub-CA) being revoked, with the reason.
func TestStreamsEndOnRevocation(t *testing.T) {
	r := newRemoteEnv(t)
	img := r.image("rev.hvt", solo5.TargetHVT)
	alice, aliceKey := r.subCA("alice", r.file("ca.pem"), r.file("ca.key"), "--vms", "2", "--mem", "256")
	r.mustRemote(alice, aliceKey, "create", "web", img, "--mem", "32", "--arg", "run=forever")
	base := []string{"--destination", r.addr, "--ca", alice, "--ca-key", aliceKey, "--server-ca", r.file("ca.pem")}
	streams := []*stream{
		r.startStream(t, "events", append(base, "events")...),
		r.startStream(t, "console --follow", append(base, "console", "web", "--follow")...),
		r.startStream(t, "stats --follow", append(base, "stats", "--follow")...),
	}
	// Every stream is open and stays open while the chain is good.
	time.Sleep(2 * time.Second)
	for _, s := range streams {
		select {
		case <-s.ended:
			t.Fatalf("%s ended before the revocation: %s", s.what, s.stderr)
		default:
		}
	}
	r.mustPetrel("ca", "revoke", "--list", r.file("revoked.json"), alice)
	revoked := time.Now()
	for _, s := range streams {
		select {
		case at := <-s.ended:
			if d := at.Sub(revoked); d > time.Second {
				t.Errorf("%s ended %v after the revocation", s.what, d)
			}
			code := s.cmd.ProcessState.ExitCode()
			if code != 8 || !strings.Contains(s.stderr.String(), `certificate "alice"`) || !strings.Contains(s.stderr.String(), "certificate revoked; the stream has ended") {
				t.Errorf("%s: exit %d %q, want 8 naming alice's revoked certificate", s.what, code, s.stderr)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s still open 5 s after the revocation", s.what)
		}
	}
	r.mustPetrel("destroy", "alice:web")
}

// TestStreamsEndOnExpiry: streams opened with a leaf that expires a few
// seconds later end within a second of its notAfter.
func TestStreamsEndOnExpiry(t *testing.T) {
	r := newRemoteEnv(t)
	img := r.image("exp.hvt", solo5.TargetHVT)
	r.mustPetrel("create", "alice:web", img, "--mem", "32", "--arg", "run=forever")
	root, err := pki.ReadCertsFile(r.file("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := pki.ReadKeyFile(r.file("ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Policy{VMs: 2, MemoryMB: 256}
	aliceCA, aliceCAKey := forge{cn: "alice", ca: true, pol: &pol}.issue(t, root[0], rootKey)
	// notAfter is stored to the second: the leaf expires 4 to 5 seconds
	// from now.
	leaf, leafKey := forge{cn: "web", notAfter: time.Now().Add(5 * time.Second)}.issue(t, aliceCA, aliceCAKey)
	c, err := client.DialTLS(r.addr, []*x509.Certificate{leaf, aliceCA}, leafKey, root[0], "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	events, err := c.API.Events(ctx, &daemonv1.EventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	console, err := c.API.Console(ctx, &daemonv1.ConsoleRequest{Name: "alice:web", Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	stats, err := c.API.Stats(ctx, &daemonv1.StatsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	type end struct {
		what string
		at   time.Time
		err  error
	}
	ends := make(chan end, 3)
	drain := func(what string, recv func() error) {
		for {
			if err := recv(); err != nil {
				ends <- end{what, time.Now(), err}
				return
			}
		}
	}
	go drain("events", func() error { _, err := events.Recv(); return err })
	go drain("console --follow", func() error { _, err := console.Recv(); return err })
	go drain("stats --follow", func() error { _, err := stats.Recv(); return err })
	for range 3 {
		select {
		case e := <-ends:
			if e.at.Before(leaf.NotAfter) {
				t.Errorf("%s ended %v before the leaf expired: %v", e.what, leaf.NotAfter.Sub(e.at), e.err)
			} else if d := e.at.Sub(leaf.NotAfter); d > time.Second {
				t.Errorf("%s ended %v after the leaf expired", e.what, d)
			}
			wantCode(t, e.what+" after expiry", e.err, codes.Unauthenticated, `certificate "web" expired at`)
		case <-ctx.Done():
			t.Fatal("streams still open 30 s after they were opened")
		}
	}
	r.mustPetrel("destroy", "alice:web")
}

// TestCertificateNeverLoosensLocalPolicy: a limit the owner set locally
// for a tenant's domain holds against the tenant's next remote deploys,
// whose certificate carries a larger policy; both records stay, and the
// effective policy is their meet.
func TestCertificateNeverLoosensLocalPolicy(t *testing.T) {
	r := newRemoteEnv(t)
	img := r.image("xi.hvt", solo5.TargetHVT)
	zed, zedKey := r.subCA("zed", r.file("ca.pem"), r.file("ca.key"), "--vms", "4", "--mem", "512")
	xi, xiKey := r.subCA("xi", zed, zedKey, "--vms", "2", "--mem", "256")
	r.mustPetrel("policy", "add", "zed:xi", "--vms", "0", "--mem", "256")
	res := r.remote(xi, xiKey, "create", "web", img, "--mem", "32", "--arg", "run=forever")
	// The upload that comes first is refused already: no image may be
	// stored for a domain that may run no VM.
	if want := `policy of "zed:xi" allows no VMs`; res.code != 10 || !strings.Contains(res.err, want) {
		t.Fatalf("xi's create under the owner's 0 VMs: exit %d %q, want 10 with %q", res.code, res.err, want)
	}
	var list []struct {
		Path        string         `json:"path"`
		VMs         int            `json:"vms"`
		MemoryMB    int            `json:"memory_mb"`
		Local       map[string]any `json:"local"`
		Certificate map[string]any `json:"certificate"`
	}
	if err := json.Unmarshal([]byte(r.mustPetrel("policy", "zed:xi", "--json")), &list); err != nil || len(list) != 1 {
		t.Fatalf("policy zed:xi --json: %v %v", list, err)
	}
	if e := list[0]; e.VMs != 0 || e.Local["vms"] != float64(0) || e.Certificate["vms"] != float64(2) {
		t.Fatalf("zed:xi: effective %d VMs, local %v, certificate %v; want 0, 0 and 2", e.VMs, e.Local, e.Certificate)
	}
	if out := r.mustPetrel("policy", "zed:xi"); !strings.Contains(out, "local+certificate") {
		t.Errorf("policy listing does not say where zed:xi's policy comes from:\n%s", out)
	}

	// The owner lifts the VM limit but lowers memory below the
	// certificate's: each side's smaller field holds.
	r.mustPetrel("policy", "add", "zed:xi", "--vms", "2", "--mem", "64")
	r.mustRemote(xi, xiKey, "create", "web", img, "--mem", "32", "--arg", "run=forever")
	res = r.remote(xi, xiKey, "create", "db", img, "--mem", "48", "--arg", "run=forever")
	if want := `policy of "zed:xi": 80 MB of memory would exceed the limit of 64 MB`; res.code != 10 || !strings.Contains(res.err, want) {
		t.Fatalf("xi's second create over the owner's memory: exit %d %q, want 10 with %q", res.code, res.err, want)
	}
	// The certificate's records survive a restart, apart from the local
	// ones.
	r.kill9()
	r.start()
	res = r.remote(xi, xiKey, "create", "db", img, "--mem", "48", "--arg", "run=forever")
	if res.code != 10 || !strings.Contains(res.err, "limit of 64 MB") {
		t.Fatalf("after a restart: exit %d %q", res.code, res.err)
	}
	if out := r.mustPetrel("policy", "zed:xi"); !strings.Contains(out, "local+certificate") {
		t.Errorf("records lost across a restart:\n%s", out)
	}
	r.mustPetrel("destroy", "zed:xi:web")
}

// bigImage writes a Solo5 image padded to about mb MiB; tag makes its
// content (and digest) its own.
func (e *env) bigImage(name string, mb int, tag string) string {
	e.t.Helper()
	p := e.image(name, solo5.TargetHVT)
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	pad := make([]byte, mb<<20)
	copy(pad, tag)
	if _, err := f.Write(pad); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// imageStore lists every file under the data directory's image store,
// temporary ones included.
func (e *env) imageStore() []string {
	var out []string
	filepath.Walk(filepath.Join(e.dataDir, "images"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			out = append(out, strings.TrimPrefix(p, e.dataDir))
		}
		return nil
	})
	return out
}

// TestImageStorageAccountable: uploads count against the uploader's
// policies and the host's image store. A tenant allowed no VM cannot
// store anything, however often it tries; a capability for another
// command cannot upload; a tenant over its image allowance is refused
// with the policy named (exit 10), while an image it holds already costs
// nothing again; an image whose create fails is gone at once.
func TestImageStorageAccountable(t *testing.T) {
	r := newRemoteEnv(t)
	small := r.bigImage("a.hvt", 1, "a")
	other := r.bigImage("b.hvt", 1, "b")
	before := r.imageStore()

	zero, zeroKey := r.subCA("zero", r.file("ca.pem"), r.file("ca.key"), "--vms", "0", "--mem", "256")
	for i := range 3 {
		res := r.remote(zero, zeroKey, "create", fmt.Sprintf("vm%d", i), small, "--mem", "32")
		if want := `upload refused: policy exceeded: policy of "zero" allows no VMs, so no image may be uploaded for it`; res.code != 10 || !strings.Contains(res.err, want) {
			t.Errorf("0-VM tenant's create %d: exit %d %q, want 10 with %q", i, res.code, res.err, want)
		}
	}
	if after := r.imageStore(); !slices.Equal(before, after) {
		t.Fatalf("the 0-VM tenant's refused creates changed the image store: %v -> %v", before, after)
	}

	// A leaf whose capability is another command cannot upload.
	alice, aliceKey := r.subCA("alice", r.file("ca.pem"), r.file("ca.key"), "--vms", "2", "--mem", "256", "--images", "2")
	root, err := pki.ReadCertsFile(r.file("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	aliceCA, err := pki.ReadCertsFile(alice)
	if err != nil {
		t.Fatal(err)
	}
	aliceSigner, err := pki.ReadKeyFile(aliceKey)
	if err != nil {
		t.Fatal(err)
	}
	chain, key, err := pki.NewLeafChain(aliceCA, aliceSigner, "web", &pki.Command{Name: "console", Args: []string{"alice:web"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.DialTLS(r.addr, chain, key, root[0], "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.UploadImageFile(context.Background(), small, nil)
	wantCode(t, "upload with a console capability", err, codes.PermissionDenied, `the certificate allows only the command "console", not UploadImage`)
	if after := r.imageStore(); !slices.Equal(before, after) {
		t.Fatalf("a console capability's upload changed the image store: %v -> %v", before, after)
	}

	// alice may hold 2 MB of images: one 1 MB image (2 MB rounded up with
	// its ELF) fits; a second one (3 MB with the first) does not; the
	// first again is free.
	r.mustRemote(alice, aliceKey, "create", "web", small, "--mem", "32", "--arg", "run=forever")
	withWeb := r.imageStore()
	res := r.remote(alice, aliceKey, "create", "db", other, "--mem", "32", "--arg", "run=forever")
	if want := `upload refused: policy exceeded: policy of "alice": 3 MB of image storage would exceed the limit of 2 MB`; res.code != 10 || !strings.Contains(res.err, want) {
		t.Fatalf("alice over her image storage: exit %d %q, want 10 with %q", res.code, res.err, want)
	}
	if after := r.imageStore(); !slices.Equal(withWeb, after) {
		t.Fatalf("a refused upload changed the image store: %v -> %v", withWeb, after)
	}
	r.mustRemote(alice, aliceKey, "create", "db", small, "--mem", "32", "--arg", "run=forever")
	out := r.mustPetrel("policy", "alice", "--json")
	if !strings.Contains(out, `"used_images_mb": 2`) || !strings.Contains(out, `"images_mb": 2`) {
		t.Errorf("alice's image storage is not listed:\n%s", out)
	}

	// The owner's create that fails leaves no image behind, at once.
	spt := r.image("late.spt", solo5.TargetSPT)
	if res := r.petrel("create", "vm", spt, "--backend", "hvt"); res.code != 6 {
		t.Fatalf("create of an spt image on hvt: exit %d %q", res.code, res.err)
	}
	if after := r.imageStore(); !slices.Equal(withWeb, after) {
		t.Fatalf("a failed create left its image: %v -> %v", withWeb, after)
	}
	r.mustPetrel("destroy", "alice:web")
	r.mustPetrel("destroy", "alice:db")
	// Her upload stays hers for a while (a create may follow by digest),
	// and still counts against her: no room for the other image yet.
	res = r.remote(alice, aliceKey, "create", "db", other, "--mem", "32", "--arg", "run=forever")
	if res.code != 10 || !strings.Contains(res.err, `policy of "alice": 3 MB of image storage`) {
		t.Fatalf("alice's upload after destroying her VMs: exit %d %q", res.code, res.err)
	}
}

// TestImageStoreHostLimit: the image store as a whole is bounded by
// image_store_mb, for local administrators too.
func TestImageStoreHostLimit(t *testing.T) {
	e := newEnv(t)
	f, err := os.OpenFile(e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "image_store_mb = 2")
	f.Close()
	e.start()
	// A policy's image allowance goes through the CLI, the API and the
	// store and back.
	e.mustPetrel("policy", "add", "team", "--vms", "1", "--mem", "64", "--images", "1")
	if out := e.mustPetrel("policy", "team", "--json"); !strings.Contains(out, `"images_mb": 1`) {
		t.Fatalf("policy team --json does not show --images 1:\n%s", out)
	}
	if res := e.petrel("policy", "add", "team:x", "--vms", "1", "--mem", "64", "--images", "2"); res.code != 10 || !strings.Contains(res.err, "images 2 MB > 1 MB") {
		t.Fatalf("a sub-policy with more image storage than its parent: exit %d %q", res.code, res.err)
	}
	e.mustPetrel("create", "one", e.bigImage("one.hvt", 1, "one"), "--arg", "run=forever")
	before := e.imageStore()
	res := e.petrel("create", "two", e.bigImage("two.hvt", 1, "two"), "--arg", "run=forever")
	if want := `the host's image store: 3 MB would exceed its limit of 2 MB (image_store_mb)`; res.code != 10 || !strings.Contains(res.err, want) {
		t.Fatalf("over the host's image store: exit %d %q, want 10 with %q", res.code, res.err, want)
	}
	if after := e.imageStore(); !slices.Equal(before, after) {
		t.Fatalf("a refused upload changed the image store: %v -> %v", before, after)
	}
	// The image already stored costs nothing again.
	e.mustPetrel("create", "again", e.bigImage("one.hvt", 1, "one"), "--arg", "run=forever")
	e.mustPetrel("destroy", "one")
	e.mustPetrel("destroy", "again")
}

// pluginHealthSummary reads the plugin health summary as name/kind/health.
func pluginHealthSummary(ctx context.Context, api daemonv1.DaemonClient) ([]string, error) {
	resp, err := api.PluginHealth(ctx, &daemonv1.PluginHealthRequest{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range resp.GetPlugins() {
		out = append(out, p.GetName()+"/"+p.GetKind()+"/"+p.GetHealth())
	}
	return out, nil
}
