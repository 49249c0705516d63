package ui

import (
	"context"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startServer serves a console with one local host on a socket nothing
// listens on, and returns its base URL and token.
func startServer(t *testing.T) (*Server, string) {
	t.Helper()
	return startServerOn(t, filepath.Join(t.TempDir(), "none.sock"))
}

// startServerOn serves a console with one local host, "local", on the
// given petreld socket, and returns its base URL and token.
func startServerOn(t *testing.T, socket string) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := New(Options{ConfigPath: filepath.Join(dir, "hosts.json")}, []HostConfig{{Name: "local", Socket: socket}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return s, "http://" + l.Addr().String()
}

func do(t *testing.T, c *http.Client, method, url string, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v // net/http sends req.Host, never a Host header
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestTokenAndCSRF(t *testing.T) {
	s, base := startServer(t)
	plain := &http.Client{}
	if code, _ := do(t, plain, "GET", base+"/", "", nil); code != http.StatusUnauthorized {
		t.Errorf("page without the token: %d", code)
	}
	if code, _ := do(t, plain, "GET", base+"/api/hosts", "", nil); code != http.StatusUnauthorized {
		t.Errorf("API without the token: %d", code)
	}
	if code, _ := do(t, plain, "GET", base+"/?token=wrong", "", nil); code != http.StatusUnauthorized {
		t.Errorf("a wrong token: %d", code)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	code, page := do(t, browser, "GET", base+"/?token="+s.Token(), "", nil)
	if code != http.StatusOK || !strings.Contains(page, `content="`+s.Token()+`"`) {
		t.Fatalf("first visit: %d\n%s", code, page)
	}
	if code, body := do(t, browser, "GET", base+"/api/hosts", "", nil); code != http.StatusOK || !strings.Contains(body, `"name":"local"`) {
		t.Errorf("API with the cookie: %d %s", code, body)
	}
	// A change needs the header: the cookie alone, which another site's
	// form would send, is not enough.
	body := `{"name":"web"}`
	if code, _ := do(t, browser, "POST", base+"/api/vm/destroy?host=local", body, nil); code != http.StatusUnauthorized {
		t.Errorf("a change with the cookie only: %d", code)
	}
	hdr := map[string]string{TokenHeader: s.Token(), "Origin": "http://evil.example"}
	if code, _ := do(t, browser, "POST", base+"/api/vm/destroy?host=local", body, hdr); code != http.StatusForbidden {
		t.Errorf("a change from another origin: %d", code)
	}
	hdr["Origin"] = base
	if code, msg := do(t, browser, "POST", base+"/api/vm/destroy?host=local", body, hdr); code != http.StatusServiceUnavailable || !strings.Contains(msg, "is it running?") {
		t.Errorf("a change with the token, no daemon: %d %s", code, msg)
	}
	if code, _ := do(t, browser, "GET", base+"/api/hosts", "", map[string]string{"Host": "evil.example"}); code != http.StatusMisdirectedRequest {
		t.Errorf("another Host header (DNS rebinding): %d", code)
	}
}

func TestRefusesBadInputInWords(t *testing.T) {
	s, base := startServer(t)
	hdr := map[string]string{TokenHeader: s.Token()}
	c := &http.Client{}
	for _, tc := range []struct{ path, body, want string }{
		{"/api/vm/destroy?host=local", `{"name":"Web"}`, `write \"web\"`},
		{"/api/vm/destroy?host=nope", `{"name":"web"}`, `no host \"nope\"`},
		{"/api/vm/create?host=local", `{"name":"web","image_sha256":"` + strings.Repeat("a", 64) + `","memory":"64X"}`, `unknown unit`},
		{"/api/vm/create?host=local", `{"name":"web","image_sha256":"` + strings.Repeat("a", 64) + `","memory":"0"}`, `a VM needs memory`},
		{"/api/vm/create?host=local", `{"name":"web"}`, `choose an image file`},
		{"/api/vm/create?host=local", `{"name":"web","image_ref":"team/web:1.4"}`, `does not name a registry host`},
		{"/api/vm/create?host=local", `{"name":"web","image_ref":"localhost:5000/web:1","image_sha256":"` + strings.Repeat("a", 64) + `"}`, `not both`},
		{"/api/block/create?host=local", `{"name":"disk","size":"1.5"}`, `not a whole number of megabytes`},
		{"/api/policy/add?host=local", `{"path":"team","vms":1}`, `memory: required`},
		{"/api/vm/destroy?host=local", `{"name":`, `request body`},
		{"/api/ca/sign?host=local", `{"csr":"junk","policy":{"vms":1,"memory":"64"}}`, `certificate request`},
		{"/api/ca/revoke?host=local", `{"pem":"junk"}`, `no revocation list`},
	} {
		code, msg := do(t, c, "POST", base+tc.path, tc.body, hdr)
		if code != http.StatusBadRequest && code != http.StatusNotFound || !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s: %d %s, want a refusal saying %q", tc.path, tc.body, code, msg, tc.want)
		}
	}
}

func TestConfigEditing(t *testing.T) {
	s, base := startServer(t)
	hdr := map[string]string{TokenHeader: s.Token()}
	c := &http.Client{}
	for body, want := range map[string]string{
		`{"hosts":[{"name":"a","socket":"/x"},{"name":"a","socket":"/y"}]}`:              "listed twice",
		`{"hosts":[{"name":"Prod","socket":"/x"}]}`:                                      "upper-case",
		`{"hosts":[{"name":"p","destination":"h"}]}`:                                     "needs your CA chain",
		`{"hosts":[{"name":"p"}]}`:                                                       "give petreld's socket",
		`{"hosts":[{"name":"p","socket":"/x","destination":"h","ca":"a","ca_key":"b"}]}`: "not both",
	} {
		if code, msg := do(t, c, "PUT", base+"/api/config", body, hdr); code != http.StatusBadRequest || !strings.Contains(msg, want) {
			t.Errorf("config %s: %d %s, want %q", body, code, msg, want)
		}
	}
	good := `{"hosts":[{"name":"local","socket":"/run/x.sock"},{"name":"prod","destination":"h:1025","ca":"a.pem","ca_key":"a.key","server_ca":"ca.pem"}]}`
	if code, msg := do(t, c, "PUT", base+"/api/config", good, hdr); code != http.StatusOK {
		t.Fatalf("good config: %d %s", code, msg)
	}
	cfg, err := LoadConfig(s.opts.ConfigPath)
	if err != nil || len(cfg.Hosts) != 2 || cfg.Hosts[1].Destination != "h:1025" {
		t.Fatalf("saved config: %+v, %v", cfg, err)
	}
	if fi, err := os.Stat(s.opts.ConfigPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("host list mode: %v, %v", fi.Mode(), err)
	}
	if code, msg := do(t, c, "GET", base+"/api/hosts", "", hdr); code != http.StatusOK || !strings.Contains(msg, `"name":"prod"`) || !strings.Contains(msg, "a.pem") {
		t.Errorf("hosts after the edit: %d %s", code, msg)
	}
}

// TestAssets: everything the page loads is embedded and local, and the
// JavaScript stays under 100 KB.
func TestAssets(t *testing.T) {
	var js int
	ref := regexp.MustCompile(`(?i)(src|href)=["'](https?:)?//`)
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".js") {
			js += len(b)
		}
		if ref.Match(b) || strings.Contains(string(b), "@import") || strings.Contains(string(b), "url(http") {
			t.Errorf("%s refers to something outside the binary", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if js == 0 || js >= 100<<10 {
		t.Errorf("JavaScript is %d bytes; the budget is under 100 KB", js)
	}
}
