package integration

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// countingProxy forwards connections from its listener to upstream
// (dialled with network) and counts the bytes clients send, so a test can
// check what a command transferred. Close stops it and waits for every
// connection it served.
type countingProxy struct {
	ln       net.Listener
	network  string
	upstream string
	sent     atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func newCountingProxy(t *testing.T, ln net.Listener, network, upstream string) *countingProxy {
	p := &countingProxy{ln: ln, network: network, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *countingProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial(p.network, p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			io.Copy(countingWriter{u, &p.sent}, c)
			u.Close()
		}()
		go func() {
			defer p.wg.Done()
			io.Copy(c, u)
			c.Close()
		}()
	}
}

// Close stops accepting, closes every connection and waits for the
// copies to end.
func (p *countingProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// countingWriter counts what it writes, once written: a byte a client
// sent is counted before petreld can answer it.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// take returns the bytes clients sent since the last call.
func (p *countingProxy) take() int64 { return p.sent.Swap(0) }

// paddedImage writes a valid image padded to at least size bytes, so that
// its transfer stands out from the calls around it.
func paddedImage(t *testing.T, e *env, name string, size int) string {
	t.Helper()
	p := e.image(name, solo5.TargetHVT)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < size {
		b = append(b, make([]byte, size-len(b))...)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCreateSendsDigestNotImage: the CLI names the image by its digest,
// so a create of an image petreld holds already (a re-deploy) transfers
// none of its bytes, through the local socket and through
// petrel-endpoint; an image petreld does not hold is uploaded after
// petreld answers "unknown digest", and the create is still checked
// against the caller's policy.
func TestCreateSendsDigestNotImage(t *testing.T) {
	const size = 512 << 10
	r := newRemoteEnv(t)
	img := paddedImage(t, r.env, "big.hvt", size)

	ln, err := net.Listen("unix", filepath.Join(r.dir, "counted.sock"))
	if err != nil {
		t.Fatal(err)
	}
	local := newCountingProxy(t, ln, "unix", r.socket)
	viaLocal := func(args ...string) string {
		t.Helper()
		res := r.petrel(append([]string{"--socket", ln.Addr().String()}, args...)...)
		if res.code != 0 {
			t.Fatalf("petrel %v: exit %d: %s%s", args, res.code, res.out, res.err)
		}
		return res.out
	}
	viaLocal("create", "vm", img, "--arg", "run=forever")
	if n := local.take(); n < size {
		t.Fatalf("first create sent %d bytes, less than the %d-byte image it had to upload", n, size)
	}
	viaLocal("create", "--force", "vm", img, "--arg", "run=forever")
	if n := local.take(); n >= size/8 {
		t.Fatalf("re-deploy sent %d bytes: the image (%d bytes) was sent again", n, size)
	} else {
		t.Logf("local re-deploy sent %d bytes", n)
	}
	viaLocal("create", "other", img, "--arg", "run=forever")
	if n := local.take(); n >= size/8 {
		t.Fatalf("create of a held image under another name sent %d bytes", n)
	}

	// Remotely, through petrel-endpoint: a fresh image is uploaded once.
	alice, aliceKey := r.subCA("alice", r.file("ca.pem"), r.file("ca.key"), "--vms", "1", "--mem", "256")
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	remote := newCountingProxy(t, tln, "tcp", r.addr)
	viaRemote := func(args ...string) result {
		return r.petrel(append([]string{"--destination", tln.Addr().String(), "--ca", alice, "--ca-key", aliceKey,
			"--server-ca", r.file("ca.pem")}, args...)...)
	}
	img2 := paddedImage(t, r.env, "big2.hvt", size+1)
	if res := viaRemote("create", "web", img2, "--mem", "32", "--arg", "run=forever"); res.code != 0 {
		t.Fatalf("remote create: exit %d: %s%s", res.code, res.out, res.err)
	}
	if n := remote.take(); n < size {
		t.Fatalf("first remote create sent %d bytes, less than the %d-byte image", n, size)
	}
	if res := viaRemote("create", "--force", "web", img2, "--mem", "32", "--arg", "run=forever"); res.code != 0 {
		t.Fatalf("remote re-deploy: exit %d: %s%s", res.code, res.out, res.err)
	}
	if n := remote.take(); n >= size/8 {
		t.Fatalf("remote re-deploy sent %d bytes: the image was sent again", n)
	} else {
		t.Logf("remote re-deploy sent %d bytes", n)
	}
	// The policy still applies to a create by digest: alice may run one VM.
	res := viaRemote("create", "second", img, "--mem", "32", "--arg", "run=forever")
	if res.code != 10 || !strings.Contains(res.err, "alice") { // exit 10: refused by a resource policy
		t.Fatalf("create beyond alice's policy by digest: exit %d: %s%s", res.code, res.out, res.err)
	}
	if n := remote.take(); n >= size/8 {
		t.Fatalf("refused create by digest sent %d bytes", n)
	}
	if vm := r.info("alice:web"); vm.State != "running" {
		t.Fatalf("alice:web after its re-deploy: %+v", vm)
	}
}
