package integration

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
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

// remoteEnv is a petreld with remote management configured and a
// petrel-endpoint in front of it on a loopback port, forwarding to
// petreld's remote socket. The endpoint runs as root with --allow-root
// because the test runs as root and the socket is root's (mode 0600);
// TestEndpointPrivileges checks the unprivileged start separately.
type remoteEnv struct {
	*env
	ca   string // directory of `petrel ca init`
	addr string
	log  string
}

func newRemoteEnv(t testing.TB) *remoteEnv {
	t.Helper()
	return startRemote(t, newEnvTB(t), "")
}

// startRemote makes a CA for e, names it and its revocation list in e's
// petreld configuration with the extra settings given, and starts petreld
// and the endpoint.
func startRemote(t testing.TB, e *env, extra string) *remoteEnv {
	t.Helper()
	r := &remoteEnv{env: e, ca: filepath.Join(e.dir, "ca"), log: filepath.Join(e.dir, "endpoint.log")}
	e.mustPetrel("ca", "init", r.ca)
	f, err := os.OpenFile(e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "ca_file = %q\nrevocation_file = %q\n%s", r.file("ca.pem"), r.file("revoked.json"), extra)
	f.Close()
	e.start()
	r.startEndpoint()
	return r
}

func (r *remoteEnv) file(name string) string { return filepath.Join(r.ca, name) }

// remoteSocket is petreld's socket for forwarded requests, which the
// endpoint uses.
func (e *env) remoteSocket() string { return filepath.Join(e.runDir, "petreld-remote.sock") }

// endpointInNetns is where the endpoint listens when petreld runs in a
// network namespace of its own (inNetns): the endpoint runs there too, at
// its default port on the namespace's loopback, as on a host of its own.
const endpointInNetns = "127.0.0.1:1025"

func (r *remoteEnv) startEndpoint() {
	t := r.t
	r.addr = testservers.FreeAddr(t)
	if r.netns != "" {
		r.addr = endpointInNetns
	}
	logf, err := os.Create(r.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "petrel-endpoint"), "--listen", r.addr, "--socket", r.remoteSocket(),
		"--ca", r.file("ca.pem"), "--cert", r.file("server.pem"), "--key", r.file("server.key"),
		"--revocations", r.file("revoked.json"), "--allow-root", "--log-level", "debug")
	if r.netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", r.netns}, cmd.Args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(r.log)
			t.Logf("petrel-endpoint log:\n%s", b)
		}
	})
	waitFor(t, "petrel-endpoint to listen", 10*time.Second, func() bool {
		c, err := dialIn(r.netns, r.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// subCA makes a sub-CA with the petrel CLI: a request by the delegate,
// signed by signer with the given policy flags. It returns the chain
// and key files.
func (r *remoteEnv) subCA(cn, signerPEM, signerKey string, policyFlags ...string) (string, string) {
	r.t.Helper()
	dir := filepath.Join(r.dir, "certs")
	os.MkdirAll(dir, 0o700)
	pem, key, csr := filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+".key"), filepath.Join(dir, cn+".csr")
	r.mustPetrel("ca", "csr", cn, "--key-out", key, "--out", csr)
	r.mustPetrel(append([]string{"--ca", signerPEM, "--ca-key", signerKey, "ca", "sign-policy", csr, "--out", pem}, policyFlags...)...)
	return pem, key
}

// remote runs the CLI against the endpoint with a one-step leaf signed
// by the given CA, from petreld's network namespace when it has one.
func (r *remoteEnv) remote(pem, key string, args ...string) result {
	args = append([]string{"--destination", r.addr, "--ca", pem, "--ca-key", key, "--server-ca", r.file("ca.pem")}, args...)
	if r.netns == "" {
		return r.petrel(args...)
	}
	return runCLI(exec.Command("ip", append([]string{"netns", "exec", r.netns, filepath.Join(binDir, "petrel"), "--socket", r.socket}, args...)...))
}

func (r *remoteEnv) mustRemote(pem, key string, args ...string) string {
	r.t.Helper()
	res := r.remote(pem, key, args...)
	if res.code != 0 {
		r.t.Fatalf("remote petrel %v: exit %d: %s%s", args, res.code, res.out, res.err)
	}
	return res.out
}

// TestRemoteManagement: a delegate with a sub-CA manages its own VMs on
// the host through the endpoint with the one-step CLI, within its policy
// and its domain only; capability certificates allow only their command.
func TestRemoteManagement(t *testing.T) {
	r := newRemoteEnv(t)
	img := r.image("web.hvt", solo5.TargetHVT)
	alice, aliceKey := r.subCA("alice", r.file("ca.pem"), r.file("ca.key"), "--vms", "2", "--mem", "256", "--cpu", "0")
	r.mustPetrel("create", "bob:vm", img, "--arg", "run=forever")

	// Events follow remotely and show only alice's VMs.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := exec.CommandContext(ctx, filepath.Join(binDir, "petrel"), "--destination", r.addr, "--ca", alice, "--ca-key", aliceKey,
		"--server-ca", r.file("ca.pem"), "events", "--json")
	evOut, err := ev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	defer ev.Wait()
	defer cancel()
	events := make(chan map[string]any, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(evOut)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				events <- m
			}
		}
	}()
	// Give the subscription a moment to reach petreld.
	time.Sleep(500 * time.Millisecond)

	out := r.mustRemote(alice, aliceKey, "create", "web", img, "--mem", "32", "--arg", "lines=2", "--arg", "run=forever")
	if !strings.Contains(out, "created alice:web") {
		t.Fatalf("remote create said %q", out)
	}
	if vm := r.info("alice:web"); vm.State != "running" {
		t.Fatalf("alice:web after remote create: %+v", vm)
	}
	r.mustPetrel("create", "bob:other", img, "--arg", "run=forever")
	select {
	case m := <-events:
		if m["name"] != "alice:web" || m["type"] != "created" {
			t.Fatalf("first remote event %v, want alice:web created", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no remote event for alice:web")
	}

	var vms []vmInfo
	if err := json.Unmarshal([]byte(r.mustRemote(alice, aliceKey, "info", "--json")), &vms); err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].Name != "alice:web" {
		t.Fatalf("remote info lists %+v, want alice:web only", vms)
	}
	waitFor(t, "remote console line 2", 10*time.Second, func() bool {
		return strings.Contains(r.remote(alice, aliceKey, "console", "web", "--no-timestamps").out, "line 2")
	})

	r.mustRemote(alice, aliceKey, "create", "db", img, "--mem", "32", "--arg", "run=forever")
	res := r.remote(alice, aliceKey, "create", "third", img, "--mem", "32", "--arg", "run=forever")
	if res.code != 10 || !strings.Contains(res.err, `policy of "alice": 3 VMs would exceed the limit of 2`) {
		t.Fatalf("third VM: exit %d %q", res.code, res.err)
	}
	if res := r.remote(alice, aliceKey, "create", "pinned", img, "--cpu", "1"); res.code != 10 {
		t.Fatalf("CPU outside alice's policy: exit %d %q", res.code, res.err)
	}
	// The policy from alice's certificate is now part of the host's tree.
	if out := r.mustPetrel("policy", "alice", "--json"); !strings.Contains(out, `"vms": 2`) {
		t.Fatalf("alice's policy not installed:\n%s", out)
	}

	// Outside the domain: refused, whatever the name.
	for _, args := range [][]string{{"destroy", ":bob:vm"}, {"info", ":bob"}, {"console", ":bob:vm"}, {"policy", "remove", ":alice"}} {
		if res := r.remote(alice, aliceKey, args...); res.code != 8 {
			t.Errorf("alice: petrel %v: exit %d %q, want 8", args, res.code, res.err)
		}
	}
	checkRemotePluginSummary(t, r, alice, aliceKey)
	if vm := r.info("bob:vm"); vm.State != "running" {
		t.Fatalf("bob:vm touched: %+v", vm)
	}

	// A capability certificate: requested with --csr, signed by alice.
	csr := filepath.Join(r.dir, "info.csr")
	if out := r.mustPetrel("--ca", alice, "--csr", csr, "info", "web"); !strings.Contains(out, "alice:web") {
		t.Fatalf("--csr said %q", out)
	}
	capPEM := filepath.Join(r.dir, "info.pem")
	r.mustPetrel("--ca", alice, "--ca-key", aliceKey, "ca", "sign-leaf", csr, "--out", capPEM)
	capArgs := []string{"--destination", r.addr, "--cert", capPEM, "--key", csr + ".key", "--server-ca", r.file("ca.pem")}
	if res := r.petrel(append(capArgs, "info", "web")...); res.code != 0 || !strings.Contains(res.out, "alice:web") {
		t.Fatalf("capability info: exit %d %s%s", res.code, res.out, res.err)
	}
	if res := r.petrel(append(capArgs, "create", "web2", img)...); res.code != 8 || !strings.Contains(res.err, `allows only the command "info"`) {
		t.Fatalf("capability info used for create: exit %d %q", res.code, res.err)
	}
	if res := r.petrel(append(capArgs, "info", "db")...); res.code != 8 {
		t.Fatalf("capability for alice:web used on alice:db: exit %d %q", res.code, res.err)
	}

	r.mustRemote(alice, aliceKey, "destroy", "web")
	r.mustRemote(alice, aliceKey, "destroy", "db")
	if res := r.petrel("info", "alice:web"); res.code != 4 {
		t.Fatalf("alice:web after remote destroy: exit %d", res.code)
	}
	r.mustPetrel("destroy", "bob:vm")
	r.mustPetrel("destroy", "bob:other")
	cancel()
	for m := range events {
		if n, _ := m["name"].(string); !strings.HasPrefix(n, "alice:") {
			t.Errorf("event outside alice's domain reached alice: %v", m)
		}
	}
}

// checkRemotePluginSummary: the plugin list is the host owner's, so a
// delegate's `petrel plugins` shows petreld's health summary (the
// enabled backends, healthy, with their targets; no paths or versions)
// and says so, and its `petrel doctor` checks the backends from it.
func checkRemotePluginSummary(t *testing.T, r *remoteEnv, pem, key string) {
	t.Helper()
	res := r.remote(pem, key, "plugins", "--json")
	if res.code != 0 || !strings.Contains(res.err, "reserved to the host's owner") {
		t.Fatalf("delegate's petrel plugins --json: exit %d %s%s", res.code, res.out, res.err)
	}
	var plugins []map[string]any
	if err := json.Unmarshal([]byte(res.out), &plugins); err != nil {
		t.Fatalf("delegate's plugin list is not JSON: %v\n%s", err, res.out)
	}
	health := map[string]any{}
	for _, p := range plugins {
		if _, leaked := p["path"]; leaked {
			t.Errorf("the summary shows a path: %v", p)
		}
		health[fmt.Sprint(p["name"])] = p["health"]
	}
	for _, b := range []string{"hvt", "spt"} {
		if health[b] != "healthy" {
			t.Errorf("delegate's plugin list %s: %s is %v, want healthy", res.out, b, health[b])
		}
	}
	if out := r.mustRemote(pem, key, "plugins"); !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "TARGETS") || strings.Contains(out, "VERSION") {
		t.Errorf("delegate's petrel plugins printed\n%s", out)
	}

	res = r.remote(pem, key, "doctor", "--json")
	var checks []struct{ Status, Check, Message string }
	if err := json.Unmarshal([]byte(res.out), &checks); err != nil {
		t.Fatalf("delegate's doctor (exit %d) printed no JSON: %v\n%s%s", res.code, err, res.out, res.err)
	}
	var backends string
	for _, c := range checks {
		if c.Status == "FAIL" {
			t.Errorf("delegate's doctor: %s %s: %s", c.Status, c.Check, c.Message)
		}
		if c.Check == "backends" {
			backends = c.Message
		}
	}
	if !strings.Contains(backends, "petreld runs hvt") || !strings.Contains(backends, "spt") {
		t.Errorf("delegate's doctor backends line %q, want hvt and spt", backends)
	}
}

// TestRemoteAggregateDelegation: two sub-CAs that alice delegates, each
// allowed 2 VMs, together get alice's 2, not 4; a sub-CA larger than its
// signer cannot be signed.
func TestRemoteAggregateDelegation(t *testing.T) {
	r := newRemoteEnv(t)
	img := r.image("agg.hvt", solo5.TargetHVT)
	alice, aliceKey := r.subCA("alice", r.file("ca.pem"), r.file("ca.key"), "--vms", "2", "--mem", "256", "--cpu", "0")
	x, xKey := r.subCA("x", alice, aliceKey, "--vms", "2", "--mem", "128")
	y, yKey := r.subCA("y", alice, aliceKey, "--vms", "2", "--mem", "128")
	if out := r.mustRemote(x, xKey, "create", "one", img, "--mem", "16", "--arg", "run=forever"); !strings.Contains(out, "alice:x:one") {
		t.Fatalf("create through alice:x said %q", out)
	}
	r.mustRemote(y, yKey, "create", "two", img, "--mem", "16", "--arg", "run=forever")
	res := r.remote(y, yKey, "create", "three", img, "--mem", "16", "--arg", "run=forever")
	if res.code != 10 || !strings.Contains(res.err, `policy of "alice": 3 VMs`) {
		t.Fatalf("third VM under alice through y: exit %d %q", res.code, res.err)
	}
	// y cannot act in x's domain, even though both are alice's.
	if res := r.remote(y, yKey, "destroy", ":alice:x:one"); res.code != 8 {
		t.Fatalf("y destroying alice:x:one: exit %d %q", res.code, res.err)
	}
	// alice can act on both.
	r.mustRemote(alice, aliceKey, "destroy", "x:one")

	// Sub-policies larger than the signer's are refused at signing.
	csr := filepath.Join(r.dir, "z.csr")
	r.mustPetrel("ca", "csr", "z", "--key-out", filepath.Join(r.dir, "z.key"), "--out", csr)
	for _, flags := range [][]string{{"--vms", "3", "--mem", "64"}, {"--vms", "1", "--mem", "512"}, {"--vms", "1", "--mem", "64", "--cpu", "1"}, {"--vms", "1", "--mem", "64", "--block", "10"}} {
		res := r.petrel(append([]string{"--ca", alice, "--ca-key", aliceKey, "ca", "sign-policy", csr, "--out", filepath.Join(r.dir, "z.pem")}, flags...)...)
		if res.code != 10 || !strings.Contains(res.err, "exceeds the signer") {
			t.Errorf("sign-policy %v under alice: exit %d %q", flags, res.code, res.err)
		}
	}
	r.mustRemote(y, yKey, "destroy", "two")
}

// forge issues a certificate with crypto/x509 directly, for chains the
// petrel CLI and package pki refuse to make.
type forge struct {
	cn        string
	ca        bool
	pol       *policy.Policy
	notBefore time.Time
	notAfter  time.Time
}

func (f forge) issue(t *testing.T, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := pki.GenerateKey("", 0)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: f.cn},
		NotBefore: f.notBefore, NotAfter: f.notAfter, BasicConstraintsValid: true,
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	if f.ca {
		tmpl.IsCA, tmpl.KeyUsage, tmpl.MaxPathLen = true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature, -1
	} else {
		tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if f.pol != nil {
		v, err := pki.MarshalPolicy(*f.pol)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: pki.OIDPolicy, Critical: true, Value: v}}
	}
	signer := parentKey
	if parent == nil {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// chainCall calls Info through the endpoint with chain and key and
// returns the error.
func (r *remoteEnv) chainCall(chain []*x509.Certificate, key crypto.Signer, path string) error {
	root, err := pki.ReadCertsFile(r.file("ca.pem"))
	if err != nil {
		return err
	}
	c, err := client.DialTLS(r.addr, chain, key, root[0], "")
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.API.Info(ctx, &daemonv1.InfoRequest{Name: path})
	return err
}

// direct calls Info on petreld's socket with chain as the endpoint would
// forward it, to check petreld's own verification.
func (r *remoteEnv) direct(chain []*x509.Certificate, path string) error {
	conn, err := grpc.NewClient("unix://"+r.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, authz.ChainMetadata, authz.EncodeChain(chain))
	_, err = daemonv1.NewDaemonClient(conn).Info(ctx, &daemonv1.InfoRequest{Name: path})
	return err
}

func wantCode(t *testing.T, what string, err error, code codes.Code, contains string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(fmt.Sprint(err), contains) {
		t.Errorf("%s: %v, want %s mentioning %q", what, err, code, contains)
	}
}

// TestRemoteRefusedChains: chains that must not authenticate are refused
// by the endpoint at the handshake and by petreld when handed to it
// directly; revocation takes effect in both without a restart.
func TestRemoteRefusedChains(t *testing.T) {
	r := newRemoteEnv(t)
	root, err := pki.ReadCertsFile(r.file("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := pki.ReadKeyFile(r.file("ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	small := policy.Policy{VMs: 2, MemoryMB: 256, CPUs: []int{0}}
	alice, aliceKey := forge{cn: "alice", ca: true, pol: &small}.issue(t, root[0], rootKey)
	leaf := func(cn string, signer *x509.Certificate, key crypto.Signer) ([]*x509.Certificate, crypto.Signer) {
		c, k := forge{cn: cn}.issue(t, signer, key)
		return []*x509.Certificate{c}, k
	}

	// The good chain works, through both doors.
	good, goodKey := leaf("web", alice, aliceKey)
	good = append(good, alice)
	if err := r.chainCall(good, goodKey, "alice"); status.Code(err) != codes.NotFound {
		t.Fatalf("good chain: %v, want NotFound (alice has no VMs yet)", err)
	}
	wantCode(t, "good chain, outside its domain, at petreld", r.direct(good, "bob"), codes.PermissionDenied, "outside")

	type bad struct {
		what  string
		chain []*x509.Certificate
		key   crypto.Signer
		why   string // in petreld's refusal
	}
	var cases []bad
	add := func(what, why string, chain []*x509.Certificate, key crypto.Signer) {
		cases = append(cases, bad{what, chain, key, why})
	}
	c, k := forge{cn: "web", notAfter: time.Now().Add(-time.Minute), notBefore: time.Now().Add(-time.Hour)}.issue(t, alice, aliceKey)
	add("expired leaf", "expired", []*x509.Certificate{c, alice}, k)
	c, k = forge{cn: "web", notBefore: time.Now().Add(time.Hour), notAfter: time.Now().Add(2 * time.Hour)}.issue(t, alice, aliceKey)
	add("not-yet-valid leaf", "not valid before", []*x509.Certificate{c, alice}, k)
	otherRoot, otherKey := forge{cn: "other", ca: true}.issue(t, nil, nil)
	otherAlice, otherAliceKey := forge{cn: "alice", ca: true, pol: &small}.issue(t, otherRoot, otherKey)
	ch, k := leaf("web", otherAlice, otherAliceKey)
	add("wrong CA", "trusted root", append(ch, otherAlice), k)
	c, k = forge{cn: "web"}.issue(t, nil, nil)
	add("self-signed leaf", "self-signed", []*x509.Certificate{c}, k)
	long := []*x509.Certificate{}
	signer, signerKey := root[0], crypto.Signer(rootKey)
	for i := 0; i < 8; i++ {
		signer, signerKey = forge{cn: fmt.Sprintf("l%d", i), ca: true, pol: &small}.issue(t, signer, signerKey)
		long = append([]*x509.Certificate{signer}, long...)
	}
	ch, k = leaf("web", signer, signerKey)
	add("chain of 10", "limit is 9", append(ch, long...), k)
	big := policy.Policy{VMs: 5, MemoryMB: 256, CPUs: []int{0}}
	greedy, greedyKey := forge{cn: "greedy", ca: true, pol: &big}.issue(t, alice, aliceKey)
	ch, k = leaf("web", greedy, greedyKey)
	add("sub-CA claiming more than its issuer", "claims more", append(ch, greedy, alice), k)
	badLabel, badLabelKey := forge{cn: "Bad_Label", ca: true, pol: &small}.issue(t, root[0], rootKey)
	ch, k = leaf("web", badLabel, badLabelKey)
	add("sub-CA named with an invalid label", "not a valid label", append(ch, badLabel), k)
	ch, k = leaf("web site!", alice, aliceKey)
	add("leaf named with an invalid label", "not a valid name", append(ch, alice), k)
	noPolicy, noPolicyKey := forge{cn: "nopolicy", ca: true}.issue(t, root[0], rootKey)
	ch, k = leaf("web", noPolicy, noPolicyKey)
	add("sub-CA without a policy", "without a policy", append(ch, noPolicy), k)

	for _, b := range cases {
		wantCode(t, b.what+" at the endpoint", r.chainCall(b.chain, b.key, "alice"), codes.Unauthenticated, "refused the client certificate")
		wantCode(t, b.what+" at petreld", r.direct(b.chain, "alice"), codes.Unauthenticated, b.why)
	}
	if b, _ := os.ReadFile(r.log); !strings.Contains(string(b), "expired") || !strings.Contains(string(b), "limit is 9") {
		t.Errorf("the endpoint's log does not say why it refused:\n%s", b)
	}

	// Revocation, without restarting anything.
	alicePEM := filepath.Join(r.dir, "alice.pem")
	if err := pki.WriteCertsFile(alicePEM, alice); err != nil {
		t.Fatal(err)
	}
	r.mustPetrel("ca", "revoke", "--list", r.file("revoked.json"), alicePEM)
	waitFor(t, "the endpoint to refuse alice", 5*time.Second, func() bool {
		return status.Code(r.chainCall(good, goodKey, "alice")) == codes.Unauthenticated
	})
	wantCode(t, "revoked chain at petreld", r.direct(good, "alice"), codes.Unauthenticated, "revoked")
}

// TestRemoteNotConfigured: a petreld without ca_file refuses every
// request that carries a chain, and serves local ones.
func TestRemoteNotConfigured(t *testing.T) {
	e := newEnv(t)
	e.start()
	r := &remoteEnv{env: e}
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
	wantCode(t, "chain at unconfigured petreld", r.direct(chain, ""), codes.Unauthenticated, "set ca_file")
	e.mustPetrel("info")
}

// TestEndpointPrivileges: as root the endpoint refuses to start without
// --user or --allow-root, and with --user it drops to that user.
func TestEndpointPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to check the endpoint's refusal to run as root")
	}
	dir := t.TempDir()
	if err := pki.InitCA(dir, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	base := []string{"--listen", testservers.FreeAddr(t), "--socket", filepath.Join(dir, "none.sock"),
		"--ca", filepath.Join(dir, "ca.pem"), "--cert", filepath.Join(dir, "server.pem"), "--key", filepath.Join(dir, "server.key")}
	out, err := exec.Command(filepath.Join(binDir, "petrel-endpoint"), base...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "refusing to run as root") {
		t.Fatalf("endpoint as root without --user: %v %s", err, out)
	}

	cmd := exec.Command(filepath.Join(binDir, "petrel-endpoint"), append(base, "--user", "nobody")...)
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitFor(t, "the endpoint to drop to nobody", 10*time.Second, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 5 && f[0] == "Uid:" {
				return f[1] != "0" && f[2] != "0" && f[3] != "0"
			}
		}
		return false
	})
}

// BenchmarkRemoteCreate compares a remote create (a fresh leaf, TLS
// handshake through the endpoint, upload, create) with the same create
// over the local socket, and reports the ratio.
func BenchmarkRemoteCreate(b *testing.B) {
	r := newRemoteEnv(b)
	img := r.image("bench.hvt", solo5.TargetHVT)
	data, err := os.ReadFile(img)
	if err != nil {
		b.Fatal(err)
	}
	root, err := pki.ReadCertsFile(r.file("ca.pem"))
	if err != nil {
		b.Fatal(err)
	}
	rootKey, err := pki.ReadKeyFile(r.file("ca.key"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	create := func(c *client.Client, vm string) {
		ref, err := c.UploadImage(ctx, strings.NewReader(string(data)), int64(len(data)), nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.API.Create(ctx, &daemonv1.CreateRequest{Name: vm, ImageSha256: ref.GetSha256(), MemoryMb: 16, Args: []string{"run=forever"}}); err != nil {
			b.Fatal(err)
		}
	}
	local, err := client.Dial(r.socket)
	if err != nil {
		b.Fatal(err)
	}
	defer local.Close()
	destroy := func(vm string) {
		if _, err := local.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: vm}); err != nil {
			b.Fatal(err)
		}
	}
	var localDur, remoteDur time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		c, err := client.Dial(r.socket)
		if err != nil {
			b.Fatal(err)
		}
		create(c, "bench:local")
		localDur += time.Since(start)
		c.Close()
		destroy("bench:local")

		start = time.Now()
		chain, key, err := pki.NewLeafChain(root, rootKey, "remote", &pki.Command{Name: "create"}, "")
		if err != nil {
			b.Fatal(err)
		}
		c, err = client.DialTLS(r.addr, chain, key, root[0], "")
		if err != nil {
			b.Fatal(err)
		}
		create(c, "bench:remote")
		remoteDur += time.Since(start)
		c.Close()
		destroy("bench:remote")
	}
	b.ReportMetric(float64(localDur.Microseconds())/float64(b.N)/1000, "local-ms/op")
	b.ReportMetric(float64(remoteDur.Microseconds())/float64(b.N)/1000, "remote-ms/op")
	b.ReportMetric(float64(remoteDur)/float64(localDur), "remote/local")
}
