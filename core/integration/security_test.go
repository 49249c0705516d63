package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/petrel-vmm/petrel/core/pki"
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
	chain, key, err := pki.NewLeafChain(aliceCA, aliceSigner, "web", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.DialTLS(r.addr, chain, key, root[0], "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.API.Create(ctx, &daemonv1.CreateRequest{Name: "alice:..", ImageSha256: strings.Repeat("0", 64)})
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
		out, err := exec.CommandContext(ctx, filepath.Join(binDir, "petrel-endpoint"), append(base, "--listen", freePort(t), "--user", user)...).CombinedOutput()
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
	cmd := exec.Command(filepath.Join(binDir, "petrel-endpoint"), append(base, "--listen", freePort(t), "--user", "root", "--allow-root")...)
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
