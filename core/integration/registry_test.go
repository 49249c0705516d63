package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/contrib/testservers"
	"github.com/petrel-vmm/petrel/sdk/client"
	"github.com/petrel-vmm/petrel/sdk/oci"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	"github.com/petrel-vmm/petrel/sdk/sdktest/faketender"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// registryBin is Debian's docker-registry (distribution 2.8), a real OCI
// registry the tests run on loopback (contrib/scripts/deps.sh installs
// it, and keeps its system service from running).
const registryBin = "/usr/bin/docker-registry"

// testRegistry is one docker-registry process of a test, behind a proxy
// that counts the blob fetches petreld makes.
type testRegistry struct {
	// Host is what references name: the proxy, host:port.
	Host string
	// backend is the registry's own address.
	backend string
	dir     string
	// blobGets counts the blobs (image content) the registry sent.
	blobGets atomic.Int64
	// manifestAsks counts the requests for manifests, by tag or digest.
	manifestAsks atomic.Int64
}

// registryOptions configure a test registry.
type registryOptions struct {
	// user and password, when set, make the registry require them
	// (htpasswd, bcrypt).
	user, password string
	// listen is the proxy's listening address (default 127.0.0.1:0).
	listen string
}

// startRegistry runs a docker-registry of the test's own, stopped and
// removed when the test ends; the test is skipped where there is none.
func startRegistry(t testing.TB, o registryOptions) *testRegistry {
	t.Helper()
	if _, err := os.Stat(registryBin); err != nil {
		t.Skipf("needs Debian's docker-registry (%s; contrib/scripts/deps.sh installs it): %v", registryBin, err)
	}
	dir := t.TempDir()
	r := &testRegistry{dir: dir, backend: testservers.FreeAddr(t)}
	auth := ""
	if o.user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(o.user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: petrel-test\n    path: %s\n", pw)
	}
	cfg := filepath.Join(dir, "config.yml")
	body := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n%s",
		filepath.Join(dir, "storage"), r.backend, auth)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(registryBin, "serve", cfg)
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	// exited closes when the registry ends: one that could not listen
	// must not pass for ready because something else answers its port.
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("registry log:\n%s", b)
		}
	})

	target, _ := url.Parse("http://" + r.backend)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		// Blob content sent (not a challenge for credentials).
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/sha256:") && resp.StatusCode == http.StatusOK {
			r.blobGets.Add(1)
		}
		if strings.Contains(resp.Request.URL.Path, "/manifests/") && resp.StatusCode == http.StatusOK {
			r.manifestAsks.Add(1)
		}
		return nil
	}
	listen := o.listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		proxy.ServeHTTP(w, req)
	}), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-served })
	r.Host = l.Addr().String()

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("docker-registry at %s exited: %s\n%s", r.backend, cmd.ProcessState, b)
		default:
		}
		resp, err := http.Get("http://" + r.backend + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not come up at %s: %v", r.backend, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// blobFile is where the registry keeps the content of a digest.
func (r *testRegistry) blobFile(sha string) string {
	return filepath.Join(r.dir, "storage", "docker", "registry", "v2", "blobs", "sha256", sha[:2], sha, "data")
}

// pushed is the CLI's JSON answer to image push.
type pushed struct {
	Pinned   string `json:"pinned"`
	Manifest string `json:"manifest_digest"`
	SHA      string `json:"image_sha256"`
	Target   string `json:"target"`
	Uploaded bool   `json:"uploaded"`
}

func (e *env) push(file, ref string, extra ...string) pushed {
	e.t.Helper()
	out := e.mustPetrel(append([]string{"image", "push", file, ref, "--json"}, extra...)...)
	var p pushed
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		e.t.Fatalf("image push: %v: %s", err, out)
	}
	return p
}

// vmImage is the image part of info --json.
type vmImage struct {
	ImageSHA    string `json:"image_sha256"`
	ImageRef    string `json:"image_ref"`
	ImageDigest string `json:"image_digest"`
	ImageLatest string `json:"image_latest"`
	ImageCheck  string `json:"image_check_error"`
	State       string `json:"state"`
	Args        []string
}

func (e *env) vmImage(name string, extra ...string) vmImage {
	e.t.Helper()
	out := e.mustPetrel(append([]string{"info", name, "--json"}, extra...)...)
	var vms []vmImage
	if err := json.Unmarshal([]byte(out), &vms); err != nil || len(vms) != 1 {
		e.t.Fatalf("info %s: %v: %s", name, err, out)
	}
	return vms[0]
}

// storedImages lists the digests in petreld's image store.
func (e *env) storedImages() []string {
	ents, _ := os.ReadDir(filepath.Join(e.dataDir, "images", "sha256"))
	var out []string
	for _, d := range ents {
		if !strings.HasSuffix(d.Name(), ".tmp") {
			out = append(out, d.Name())
		}
	}
	return out
}

// TestRegistryCreateFromReference pushes a real guest to a registry on
// loopback, creates VMs from its reference, and checks that petreld
// fetches the image once per digest, records the reference, and refuses
// content that does not match its manifest.
func TestRegistryCreateFromReference(t *testing.T) {
	hello := guest(t, "hello")
	reg := startRegistry(t, registryOptions{})
	e := newBuiltinEnv(t)
	e.start()
	backend, _ := realBackend()

	ref := reg.Host + "/team/hello:1.0"
	p := e.push(hello, ref)
	if !p.Uploaded || p.Target != backend || !strings.HasPrefix(p.Pinned, reg.Host+"/team/hello@sha256:") {
		t.Fatalf("push: %+v", p)
	}
	if again := e.push(hello, ref); again.Uploaded || again.Manifest != p.Manifest {
		t.Fatalf("pushing the same file again: %+v, first %+v", again, p)
	}

	e.mustPetrel("create", "hello", ref, "--arg", "pulled")
	if n := reg.blobGets.Load(); n != 1 {
		t.Fatalf("first create fetched %d blobs, want 1", n)
	}
	vm := e.vmImage("hello")
	if vm.ImageRef != ref || vm.ImageDigest != p.Manifest || vm.ImageSHA != p.SHA {
		t.Fatalf("recorded image: %+v, pushed %+v", vm, p)
	}
	waitFor(t, "hello to exit", 30*time.Second, func() bool { return e.info("hello").State == "exited" })
	if con := e.mustPetrel("console", "hello", "--no-timestamps"); !strings.Contains(con, "Hello from Petrel") {
		t.Fatalf("console:\n%s", con)
	}
	if out := e.mustPetrel("info", "hello"); !strings.Contains(out, "image: "+ref+"@"+p.Manifest) {
		t.Fatalf("info does not show the reference:\n%s", out)
	}
	if vm := e.vmImage("hello", "--check-updates"); vm.ImageLatest != p.Manifest || vm.ImageCheck != "" {
		t.Fatalf("check-updates: %+v", vm)
	}

	// Another VM, and the same one again: the host has the digest.
	e.mustPetrel("create", "hello2", ref)
	e.mustPetrel("create", "hello", ref, "--force")
	e.mustPetrel("create", "hello3", p.Pinned)
	if n := reg.blobGets.Load(); n != 1 {
		t.Fatalf("creates of a digest the host has fetched %d blobs in all, want 1", n)
	}
	if got := e.storedImages(); len(got) != 1 || got[0] != p.SHA {
		t.Fatalf("image store: %v, want just %s", got, p.SHA)
	}
	// Checking for updates asks the registry once per reference, not
	// once per VM: hello and hello2 name ref, hello3 the pinned one.
	asked := reg.manifestAsks.Load()
	e.vmImage("hello", "--check-updates")
	perRef := reg.manifestAsks.Load() - asked
	asked += perRef
	if out := e.mustPetrel("info", "--check-updates"); strings.Contains(out, "newer digest") {
		t.Fatalf("check-updates of unchanged references:\n%s", out)
	}
	if n := reg.manifestAsks.Load() - asked; perRef < 1 || n != 2*perRef {
		t.Fatalf("checking 3 VMs of 2 references made %d manifest requests, want %d (%d per reference)", n, 2*perRef, perRef)
	}
	// A create the name refuses asks the registry nothing, through the
	// CLI or the API.
	asked = reg.manifestAsks.Load()
	if r := e.petrel("create", "hello", ref); r.code != 5 || !strings.Contains(r.err, "already exists") {
		t.Fatalf("create of an existing name: exit %d: %s", r.code, r.err)
	}
	c, err := client.Dial(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.API.Create(context.Background(), &daemonv1.CreateRequest{Name: "hello", ImageRef: ref})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("API create of an existing name: %v, want AlreadyExists", err)
	}
	if n := reg.manifestAsks.Load() - asked; n != 0 {
		t.Fatalf("creates refused for their name made %d manifest requests", n)
	}

	// A reference that names no image, and a file that is not there.
	if r := e.petrel("create", "missing", reg.Host+"/team/nothing:1.0"); r.code != 4 {
		t.Fatalf("missing reference: exit %d: %s%s", r.code, r.out, r.err)
	}
	if r := e.petrel("create", "ambiguous", "team/hello:1.0"); r.code != 6 || !strings.Contains(r.err, "neither an existing file nor a registry reference") {
		t.Fatalf("reference without registry: exit %d: %s%s", r.code, r.out, r.err)
	}

	// Content that does not hash to its manifest's digest is refused,
	// and nothing is kept. The registry serves what its storage holds.
	chatty := guest(t, "chatty")
	cp := e.push(chatty, reg.Host+"/team/chatty:1.0")
	blob := reg.blobFile(cp.SHA)
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 0xff
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.petrel("create", "tampered", reg.Host+"/team/chatty:1.0")
	if r.code != 6 || !strings.Contains(r.err, "digest mismatch") {
		t.Fatalf("tampered image: exit %d: %s%s", r.code, r.out, r.err)
	}
	for _, sha := range e.storedImages() {
		if sha == cp.SHA || strings.Contains(sha, "tmp") {
			t.Fatalf("tampered image kept: %v", e.storedImages())
		}
	}
	if r := e.petrel("info", "tampered"); r.code != 4 {
		t.Fatalf("a refused create left a VM: exit %d: %s", r.code, r.out)
	}

	// Image allowances apply to pulled images as to uploaded ones: a 2 MB
	// image under a 1 MB allowance is refused. (The local administrator,
	// whose pull shows progress, may hold it; the VM may not.)
	big := filepath.Join(t.TempDir(), "big.hvt")
	img, err := os.ReadFile(hello)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, append(img, make([]byte, 2<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	e.push(big, reg.Host+"/team/big:1.0")
	e.mustPetrel("policy", "add", "team", "--vms", "2", "--mem", "256", "--images", "1")
	if r := e.petrel("create", "team:big", reg.Host+"/team/big:1.0"); r.code != 10 {
		t.Fatalf("pull beyond the image allowance: exit %d: %s%s", r.code, r.out, r.err)
	}
	if r := e.petrel("info", "team:big"); r.code != 4 {
		t.Fatalf("a refused create left a VM: exit %d: %s", r.code, r.out)
	}
	before := reg.blobGets.Load()
	e.mustPetrel("create", "team:small", ref) // the host has it: no fetch
	if n := reg.blobGets.Load(); n != before {
		t.Fatalf("create of a stored digest under a policy fetched %d blobs", n-before)
	}
	e.mustPetrel("destroy", "team:small")

	// info --check-updates is quick when the registry is down.
	e.mustPetrel("destroy", "hello2")
	e.mustPetrel("destroy", "hello3")
	e.push(chatty, ref) // the tag moves on (to a broken image, unpulled)
	if vm := e.vmImage("hello", "--check-updates"); vm.ImageLatest == "" || vm.ImageLatest == p.Manifest {
		t.Fatalf("newer digest not seen: %+v", vm)
	}
	if out := e.mustPetrel("info", "hello", "--check-updates"); !strings.Contains(out, "newer digest sha256:") {
		t.Fatalf("info --check-updates:\n%s", out)
	}
}

// TestRegistryPlainHTTPAndCredentials: a registry that is not on
// loopback is reached over HTTPS unless petreld's insecure_registries
// names it, and a registry that wants a password gets it from the docker
// configuration file petreld's registry_config names.
func TestRegistryPlainHTTPAndCredentials(t *testing.T) {
	hello := guest(t, "hello")
	ip := nonLoopbackIPv4(t)
	reg := startRegistry(t, registryOptions{user: "petrel", password: "s3cret", listen: ip + ":0"})
	e := newBuiltinEnv(t)
	e.start()

	cfgDir := t.TempDir()
	dockerCfg := filepath.Join(cfgDir, "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte("petrel:s3cret"))
	if err := os.WriteFile(dockerCfg, []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Host, auth)), 0o600); err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/team/hello:1.0"

	// The CLI pushes over plain HTTP only when told to, with credentials.
	if r := e.petrel("image", "push", hello, ref, "--registry-config", dockerCfg); r.code == 0 || !strings.Contains(r.err, "HTTP") {
		t.Fatalf("push over HTTPS to a plain HTTP registry: exit %d: %s%s", r.code, r.out, r.err)
	}
	if r := e.petrel("image", "push", hello, ref, "--insecure-registry", reg.Host, "--registry-config", filepath.Join(cfgDir, "none.json")); r.code == 0 {
		t.Fatalf("push without credentials succeeded: %s", r.out)
	}
	p := e.push(hello, ref, "--insecure-registry", reg.Host, "--registry-config", dockerCfg)

	// petreld: not loopback, not listed: HTTPS, which this registry does
	// not speak.
	r := e.petrel("create", "web", ref)
	if r.code == 0 || !strings.Contains(r.err, "HTTP") {
		t.Fatalf("plain HTTP to %s without insecure_registries: exit %d: %s%s", reg.Host, r.code, r.out, r.err)
	}
	if n := reg.blobGets.Load(); n != 0 {
		t.Fatalf("%d blob fetches over a refused connection", n)
	}

	// Listed, but without credentials: refused by the registry.
	e.stop()
	appendConfig(t, e, fmt.Sprintf("insecure_registries = [%q]\nregistry_config = %q\n", reg.Host, filepath.Join(cfgDir, "none.json")))
	e.start()
	if r := e.petrel("create", "web", ref); r.code != 8 {
		t.Fatalf("pull without credentials: exit %d: %s%s", r.code, r.out, r.err)
	}

	// With the docker configuration file: pulled.
	e.stop()
	appendConfig(t, e, fmt.Sprintf("registry_config = %q\n", dockerCfg))
	e.start()
	e.mustPetrel("create", "web", ref)
	if vm := e.vmImage("web"); vm.ImageSHA != p.SHA || vm.ImageDigest != p.Manifest {
		t.Fatalf("pulled with credentials: %+v, pushed %+v", vm, p)
	}
	if n := reg.blobGets.Load(); n != 1 {
		t.Fatalf("%d blob fetches, want 1", n)
	}
}

// appendConfig adds settings to petreld's configuration file; a later
// setting of the same name is refused by HCL, so earlier ones of the
// same names are dropped first.
func appendConfig(t *testing.T, e *env, settings string) {
	t.Helper()
	b, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		drop := false
		for _, s := range strings.Split(strings.TrimSpace(settings), "\n") {
			if name, _, ok := strings.Cut(s, " = "); ok && strings.HasPrefix(line, name+" = ") {
				drop = true
			}
		}
		if !drop {
			keep = append(keep, line)
		}
	}
	if err := os.WriteFile(e.config, []byte(strings.Join(keep, "\n")+"\n"+settings), 0o600); err != nil {
		t.Fatal(err)
	}
}

// nonLoopbackIPv4 is an address of this host that is not loopback, for a
// registry petreld must not reach over plain HTTP unasked.
func nonLoopbackIPv4(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("needs a non-loopback IPv4 address on this host")
	return ""
}

// TestRegistryUpdate: petrel update rolls a VM forward to a new tag
// (checked by a console marker) and back from an image that exits
// non-zero, keeping its name and arguments; an update of a VM that runs
// the image already changes nothing.
func TestRegistryUpdate(t *testing.T) {
	hello, chatty, exit := guest(t, "hello"), guest(t, "chatty"), guest(t, "exit")
	reg := startRegistry(t, registryOptions{})
	e := newBuiltinEnv(t)
	e.start()
	base := reg.Host + "/team/app"
	v1 := e.push(chatty, base+":1")
	v2 := e.push(hello, base+":2")
	bad := e.push(exit, base+":bad")

	e.mustPetrel("create", "app", base+":1", "--arg", "3")
	if r := e.petrel("update", "app", base+":1"); r.code != 0 || !strings.Contains(r.out, "already") {
		t.Fatalf("update to the same image: exit %d: %s%s", r.code, r.out, r.err)
	}

	out := e.mustPetrel("update", "app", base+":2", "--grace", "2s", "--healthy-marker", "Hello from Petrel")
	if !strings.Contains(out, "updated app") {
		t.Fatalf("update: %s", out)
	}
	vm := e.vmImage("app")
	if vm.ImageSHA != v2.SHA || vm.ImageRef != base+":2" || vm.ImageDigest != v2.Manifest || len(vm.Args) != 1 || vm.Args[0] != "3" {
		t.Fatalf("after update: %+v", vm)
	}
	if con := e.mustPetrel("console", "app", "--no-timestamps"); !strings.Contains(con, `Hello from Petrel`) {
		t.Fatalf("console after update:\n%s", con)
	}

	// exit 3: the update fails within the grace period and is undone.
	r := e.petrel("update", "app", base+":bad", "--grace", "3s")
	if r.code != 11 || !strings.Contains(r.err, "rolled back") || !strings.Contains(r.err, "exited with code 3") {
		t.Fatalf("failing update: exit %d: %s%s", r.code, r.out, r.err)
	}
	vm = e.vmImage("app")
	if vm.ImageSHA != v2.SHA || vm.ImageRef != base+":2" {
		t.Fatalf("after rollback: %+v", vm)
	}
	// A marker that never comes rolls back too.
	r = e.petrel("update", "app", base+":1", "--grace", "1s", "--healthy-marker", "never printed")
	if r.code != 11 || !strings.Contains(r.err, "did not print") {
		t.Fatalf("update without its marker: exit %d: %s%s", r.code, r.out, r.err)
	}
	if vm := e.vmImage("app"); vm.ImageSHA != v2.SHA {
		t.Fatalf("after the second rollback: %+v", vm)
	}
	// The images the rollbacks left behind are not kept; the VM's is.
	for _, sha := range e.storedImages() {
		if sha == bad.SHA {
			t.Fatalf("rolled-back image still stored after its claim was released? store %v", e.storedImages())
		}
	}
	_ = v1

	// Without REF: the VM's own tag, moved on to another image.
	e.push(chatty, base+":2")
	e.mustPetrel("update", "app", "--grace", "1s")
	if vm := e.vmImage("app"); vm.ImageSHA != v1.SHA || vm.ImageRef != base+":2" {
		t.Fatalf("update to the tag's current digest: %+v", vm)
	}
	// A VM made from a file has no reference to update from.
	e.mustPetrel("create", "local", hello)
	if r := e.petrel("update", "local"); r.code != 7 || !strings.Contains(r.err, "name one") {
		t.Fatalf("update of a VM from a file: exit %d: %s%s", r.code, r.out, r.err)
	}
}

// longUpdate starts VM long from base:1 (hello, which prints its
// arguments and exits) and its update to base:2 (chatty, which prints
// that many lines, longer than the test), with a grace of a minute, and
// returns once the new image runs; done has the update's result.
func longUpdate(t *testing.T) (e *env, base string, v2 pushed, done chan result) {
	hello, chatty := guest(t, "hello"), guest(t, "chatty")
	reg := startRegistry(t, registryOptions{})
	e = newBuiltinEnv(t)
	e.start()
	base = reg.Host + "/team/long"
	e.push(hello, base+":1")
	v2 = e.push(chatty, base+":2")
	e.mustPetrel("create", "long", base+":1", "--arg", "1000000000")
	done = make(chan result, 1)
	go func() { done <- e.petrel("update", "long", base+":2", "--grace", "60s") }()
	waitFor(t, "the new image to run", 30*time.Second, func() bool {
		vm := e.vmImage("long")
		return vm.ImageSHA == v2.SHA && vm.State == "running"
	})
	return e, base, v2, done
}

// TestRegistryUpdateCrash kills petreld with SIGKILL during an update's
// grace period: it comes back with the VM recorded with, and running, one
// image, the new one.
func TestRegistryUpdateCrash(t *testing.T) {
	e, base, v2, done := longUpdate(t)
	e.kill9()
	select {
	case r := <-done:
		if r.code == 0 {
			t.Fatalf("update finished although petreld was killed: %s", r.out)
		}
	case <-time.After(time.Minute):
		t.Fatal("petrel update did not end when petreld was killed")
	}
	e.start()
	vm := e.vmImage("long")
	if vm.ImageSHA != v2.SHA || vm.ImageRef != base+":2" || vm.ImageDigest != v2.Manifest || vm.State != "running" {
		t.Fatalf("after kill -9 during update: %+v", vm)
	}
	e.mustPetrel("destroy", "long")
}

// TestRegistryUpdateStop: petreld stopped (not killed) while it watches
// an update ends the update at once, undecided, and says so; the VM
// keeps the new image.
func TestRegistryUpdateStop(t *testing.T) {
	e, base, v2, done := longUpdate(t)
	start := time.Now()
	e.stop()
	// petreld waits up to 3 s for calls in flight before it cuts them.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("petreld took %s to stop during an update", d)
	}
	select {
	case r := <-done:
		if r.code == 0 || !strings.Contains(r.err, "petreld stopped while it watched the update of long") || !strings.Contains(r.err, base+":1@") {
			t.Fatalf("update ended by petreld's stop: exit %d: %s%s", r.code, r.out, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("petrel update did not end when petreld stopped")
	}
	e.start()
	if vm := e.vmImage("long"); vm.ImageSHA != v2.SHA || vm.State != "running" {
		t.Fatalf("after petreld's stop during update: %+v", vm)
	}
	e.mustPetrel("destroy", "long")
}

// BenchmarkRegistryPull measures petreld pulling a 10 MB unikernel from a
// docker-registry on loopback (resolve the tag, fetch the manifest, fetch
// and hash the image, store it fsynced), against the baseline of an
// fsynced copy of the same file on the same file system. Every iteration
// pulls a digest the host does not have.
func BenchmarkRegistryPull(b *testing.B) {
	const size = 10 << 20
	reg := startRegistry(b, registryOptions{})
	e, c, _ := benchEnv(b)
	ctx := context.Background()
	img, err := solo5.Build(solo5.BuildSpec{Target: solo5.TargetHVT, ABIVersion: faketender.ABIVersion})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, size)
	copy(data, img)
	for i := len(img); i < size; i++ {
		data[i] = byte(i * 7)
	}
	src := filepath.Join(e.dir, "big.hvt")
	var viaRegistry, plain time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		data[size-1], data[size-2] = byte(i), byte(i>>8) // a digest the host lacks
		if err := os.WriteFile(src, data, 0o600); err != nil {
			b.Fatal(err)
		}
		ref := fmt.Sprintf("%s/bench/big:%d", reg.Host, i)
		if _, err := oci.Push(ctx, src, ref, oci.Options{}, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		pulled, err := c.PullImage(ctx, ref, nil)
		if err != nil {
			b.Fatal(err)
		}
		viaRegistry += time.Since(start)
		if !pulled.GetFetched() || pulled.GetSize() != size {
			b.Fatalf("pull: %v", pulled)
		}
		start = time.Now()
		if err := copyFileSync(src, filepath.Join(e.dataDir, "copy.tmp.img")); err != nil {
			b.Fatal(err)
		}
		plain += time.Since(start)
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(b.N) }
	b.ReportMetric(ms(viaRegistry), "pull-ms")
	b.ReportMetric(ms(plain), "copy-ms")
	b.ReportMetric(ms(viaRegistry)/ms(plain), "ratio")
}

// TestRegistryRemote: a delegate creates a VM from a reference through
// petrel-endpoint, petreld pulling for it, and a pull beyond its image
// allowance is refused before anything is fetched.
func TestRegistryRemote(t *testing.T) {
	hello := guest(t, "hello")
	reg := startRegistry(t, registryOptions{})
	r := newRemoteEnv(t)
	r.stop()
	r.useBuiltinTenders()
	r.start()
	big := filepath.Join(t.TempDir(), "big.hvt")
	img, err := os.ReadFile(hello)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, append(img, make([]byte, 2<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	p := r.push(hello, reg.Host+"/alice/hello:1")
	r.push(big, reg.Host+"/alice/big:1")
	alice, aliceKey := r.subCA("alice", r.file("ca.pem"), r.file("ca.key"), "--vms", "2", "--mem", "64", "--images", "1")

	out := r.mustRemote(alice, aliceKey, "create", "hello", reg.Host+"/alice/hello:1", "--mem", "32")
	if !strings.Contains(out, "created alice:hello") {
		t.Fatalf("remote create said %q", out)
	}
	if vm := r.vmImage("alice:hello"); vm.ImageSHA != p.SHA || vm.ImageRef != reg.Host+"/alice/hello:1" {
		t.Fatalf("remote create from a reference: %+v", vm)
	}
	before := reg.blobGets.Load()
	if res := r.remote(alice, aliceKey, "create", "big", reg.Host+"/alice/big:1", "--mem", "32"); res.code != 10 {
		t.Fatalf("pull beyond alice's image allowance: exit %d: %s%s", res.code, res.out, res.err)
	}
	if n := reg.blobGets.Load(); n != before {
		t.Fatalf("a pull refused by policy fetched %d blobs", n-before)
	}
	if res := r.petrel("info", "alice:big"); res.code != 4 {
		t.Fatalf("a refused create left a VM: exit %d", res.code)
	}
}

// TestRegistryAllowList: with allowed_registries set, petreld refuses a
// reference to any other registry, saying which ones it pulls from, before
// asking the registry anything (petrel create and info --check-updates
// alike), and pulls from a listed one.
func TestRegistryAllowList(t *testing.T) {
	hello := guest(t, "hello")
	reg := startRegistry(t, registryOptions{})
	e := newBuiltinEnv(t)
	appendConfig(t, e, "allowed_registries = [\"registry.example.org\"]\n")
	e.start()
	ref := reg.Host + "/team/hello:1"
	p := e.push(hello, ref)

	r := e.petrel("create", "web", ref)
	if r.code != 8 || !strings.Contains(r.err, "does not pull from the registry "+reg.Host) || !strings.Contains(r.err, "registry.example.org") {
		t.Fatalf("create from a registry not allowed: exit %d: %s%s", r.code, r.out, r.err)
	}
	if n := reg.blobGets.Load(); n != 0 {
		t.Fatalf("a refused registry sent %d blobs", n)
	}
	if res := e.petrel("info", "web"); res.code != 4 {
		t.Fatalf("a refused create left a VM: exit %d", res.code)
	}

	// Listed: pulled. Then unlisted again: the VM keeps running, and the
	// update check says why it does not ask the registry.
	e.stop()
	appendConfig(t, e, fmt.Sprintf("allowed_registries = [\"registry.example.org\", %q]\n", strings.ToUpper(reg.Host)))
	e.start()
	e.mustPetrel("create", "web", ref)
	if vm := e.vmImage("web"); vm.ImageSHA != p.SHA || vm.ImageRef != ref {
		t.Fatalf("pulled from an allowed registry: %+v, pushed %+v", vm, p)
	}
	e.stop()
	appendConfig(t, e, "allowed_registries = [\"registry.example.org\"]\n")
	e.start()
	if vm := e.vmImage("web", "--check-updates"); !strings.Contains(vm.ImageCheck, "does not pull from the registry") {
		t.Fatalf("update check of a VM whose registry is no longer allowed: %+v", vm)
	}
}
