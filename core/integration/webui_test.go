package integration

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// webuiTestDir holds the browser script and its npm lock file.
const webuiTestDir = "../../contrib/webui-test"

// needBrowser skips the test unless node, playwright-core (npm ci in
// contrib/webui-test) and Debian's chromium are there; it returns node.
func needBrowser(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("needs node (apt install nodejs) to drive the browser")
	}
	if _, err := os.Stat(filepath.Join(webuiTestDir, "node_modules", "playwright-core", "package.json")); err != nil {
		t.Skip("needs playwright-core: run npm ci in contrib/webui-test (contrib/scripts/deps.sh does)")
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Skip("needs Debian's chromium at /usr/bin/chromium (apt install chromium)")
	}
	return node
}

// startUI runs `petrel ui` on a host list and returns its URL, with the
// token; the console is stopped when the test ends.
func (e *env) startUI(name string, hosts map[string]any) string {
	t := e.t
	list := filepath.Join(e.dir, name+"-hosts.json")
	data, err := json.Marshal(hosts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(list, data, 0o600); err != nil {
		t.Fatal(err)
	}
	urlFile := filepath.Join(e.dir, name+"-url")
	logf, err := os.Create(filepath.Join(e.dir, name+"-ui.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "petrel"), "ui", "--hosts", list, "--url-file", urlFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("petrel ui (%s) ended with %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("petrel ui (%s) did not stop within 10 s of SIGTERM", name)
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("petrel ui (%s) log:\n%s", name, b)
		}
	})
	var url string
	waitFor(t, "petrel ui to print its URL", 10*time.Second, func() bool {
		b, err := os.ReadFile(urlFile)
		url = strings.TrimSpace(string(b))
		return err == nil && strings.HasPrefix(url, "http://127.0.0.1:")
	})
	return url
}

// TestWebUI drives `petrel ui` in a real browser (Debian's chromium,
// headless, through playwright-core) against a real petreld and
// petrel-endpoint with real unikernels: it deploys hello through the form
// and sees its console line live, restarts it, sees a chart get a point,
// creates, uploads and downloads a block device (the checksums must
// match), checks that a tenant's page shows only the tenant's VMs, and
// that a certificate revoked from the console stops its page; alice signs
// carol's request into a sub-CA, refused beyond alice's own policy. It writes
// screenshots of the main pages at desktop and phone widths.
func TestWebUI(t *testing.T) {
	node := needBrowser(t)
	hello := guest(t, "hello")
	r := newRemoteEnv(t)
	r.stop()
	r.useBuiltinTenders()
	f, err := os.OpenFile(r.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, `stats_interval = "1s"`)
	f.Close()
	r.start()

	alice, aliceKey := r.subCA("alice", r.file("ca.pem"), r.file("ca.key"), "--vms", "2", "--mem", "128", "--block", "16")
	bob, bobKey := r.subCA("bob", r.file("ca.pem"), r.file("ca.key"), "--vms", "1", "--mem", "64")
	r.mustRemote(alice, aliceKey, "create", "web", hello, "--mem", "32")
	r.mustRemote(bob, bobKey, "create", "other", hello, "--mem", "32")

	remoteHost := func(name, pem, key string) map[string]any {
		return map[string]any{"name": name, "destination": r.addr, "ca": pem, "ca_key": key, "server_ca": r.file("ca.pem")}
	}
	owner := r.startUI("owner", map[string]any{"hosts": []any{
		map[string]any{"name": "local", "socket": r.socket, "ca": r.file("ca.pem"), "ca_key": r.file("ca.key"), "revocations": r.file("revoked.json")},
		remoteHost("alice", alice, aliceKey),
	}})
	bobURL := r.startUI("bob", map[string]any{"hosts": []any{remoteHost("bob", bob, bobKey)}})

	carolCSR := filepath.Join(r.dir, "carol.csr")
	r.mustPetrel("ca", "csr", "carol", "--key-out", filepath.Join(r.dir, "carol.key"), "--out", carolCSR)

	blockData := filepath.Join(r.dir, "block.bin")
	content := make([]byte, 1<<20)
	rand.Read(content)
	if err := os.WriteFile(blockData, content, 0o600); err != nil {
		t.Fatal(err)
	}
	download := filepath.Join(r.dir, "downloaded.bin")
	shots := os.Getenv("PETREL_UI_SCREENSHOTS")
	if shots == "" {
		shots, _ = filepath.Abs("../../bin/ui-screenshots")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(node, "webui.mjs")
	cmd.Dir = webuiTestDir
	cmd.Env = append(os.Environ(), "PETREL_UI_URL="+owner, "PETREL_UI_BOB_URL="+bobURL, "PETREL_HELLO="+hello,
		"PETREL_BLOCK_FILE="+blockData, "PETREL_DOWNLOAD="+download, "PETREL_SCREENSHOTS="+shots, "PETREL_BOB_PEM="+bob, "PETREL_CAROL_CSR="+carolCSR)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	steps := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ok ") {
			steps++
		}
		t.Log(line)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the browser script failed (%v) after %d steps; see above", err, steps)
	}

	got, err := os.ReadFile(download)
	if err != nil {
		t.Fatalf("the block device was not downloaded: %v", err)
	}
	want, have := sha256.Sum256(content), sha256.Sum256(got)
	if want != have {
		t.Fatalf("downloaded block device: sha256 %s, uploaded %s (%d bytes vs %d)", hex.EncodeToString(have[:]), hex.EncodeToString(want[:]), len(got), len(content))
	}
	entries, _ := os.ReadDir(shots)
	if len(entries) < 8 {
		t.Fatalf("%d screenshots in %s, want at least 8", len(entries), shots)
	}
	t.Logf("%d browser steps passed; screenshots in %s", steps, shots)
}
