package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRevocationListMatching(t *testing.T) {
	_, a, b := hierarchy(t, KeyEd25519)
	chain, _ := b.leaf(t, "vm", nil, KeyEd25519)
	leaf := chain[0]
	l := &RevocationList{}
	if l.IsRevoked(leaf) || (*RevocationList)(nil).IsRevoked(leaf) {
		t.Fatal("empty list revokes")
	}
	if !l.Add(leaf) || l.Add(leaf) {
		t.Fatal("Add did not report the first addition only")
	}
	if !l.IsRevoked(leaf) || l.IsRevoked(b.cert) || l.IsRevoked(a.cert) {
		t.Fatal("wrong certificates revoked")
	}
	e := l.Entries()[0]
	if e.Serial != leaf.SerialNumber.Text(16) || e.IssuerKeyID == "" || e.Issuer != "CN=b" || e.Subject != "CN=vm" {
		t.Errorf("entry %+v", e)
	}

	// The same serial from another issuer is a different certificate.
	other := a.forge(t, func() *x509.Certificate {
		c := leafTmpl("vm")
		c.SerialNumber = leaf.SerialNumber
		return c
	}(), leaf.PublicKey)
	if l.IsRevoked(other) {
		t.Error("same serial from another issuer revoked")
	}

	// Without an issuer key id, the issuer's name is matched.
	byName := &RevocationList{}
	byName.replace([]Revoked{{Serial: e.Serial, Issuer: "CN=b"}})
	if !byName.IsRevoked(leaf) {
		t.Error("entry without key id did not match by issuer name")
	}
	byName.replace([]Revoked{{Serial: e.Serial, Issuer: "CN=a"}})
	if byName.IsRevoked(leaf) {
		t.Error("entry for another issuer name matched")
	}
}

func TestRevokeFile(t *testing.T) {
	_, _, b := hierarchy(t, KeyEd25519)
	dir := t.TempDir()
	path := filepath.Join(dir, "revoked.json")
	if _, err := LoadRevocationList(path); err == nil {
		t.Fatal("missing revocation file loaded as empty")
	}
	// Revoke creates the file, and is idempotent.
	for i := 0; i < 2; i++ {
		if err := Revoke(path, b.cert); err != nil {
			t.Fatal(err)
		}
	}
	l, err := LoadRevocationList(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries()) != 1 || !l.IsRevoked(b.cert) {
		t.Errorf("entries %+v", l.Entries())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"version": 1`) {
		t.Errorf("file lacks its version: %s", data)
	}

	for _, tc := range []struct{ content, want string }{
		{`{"version":2,"revoked":[]}`, "version 2 is not supported"},
		{`{"version":1,"revoked":[{"serial":"XYZ","issuer":"CN=a"}]}`, `serial "XYZ" is not a serial number`},
		{`{"version":1,"revoked":[{"serial":"0a","issuer":"CN=a"}]}`, `serial "0a"`},
		{`{"version":1,"revoked":[{"serial":"a"}]}`, "no issuer"},
		{`{"version":1,"revoked":[],"extra":1}`, "unknown field"},
		{`not json`, "invalid character"},
	} {
		bad := filepath.Join(dir, "bad.json")
		if err := os.WriteFile(bad, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadRevocationList(bad)
		wantErr(t, err, tc.want)
	}
}

func TestWatcherKeepsLastGoodList(t *testing.T) {
	_, a, b := hierarchy(t, KeyEd25519)
	path := filepath.Join(t.TempDir(), "revoked.json")
	if err := Revoke(path, a.cert); err != nil {
		t.Fatal(err)
	}
	list := &RevocationList{}
	var (
		mu   sync.Mutex
		errs []error
	)
	w := WatchRevocations(path, list, 5*time.Millisecond, func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	})
	defer w.Stop()
	waitRevoked(t, list, a.cert) // initial load

	if err := os.WriteFile(path, []byte("{broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(errs)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("watcher did not report the broken file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !list.IsRevoked(a.cert) {
		t.Fatal("broken file emptied the list")
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	if len(errs) != 1 {
		t.Errorf("error reported %d times, want once per failure", len(errs))
	}
	mu.Unlock()

	// Repaired, with a different entry: picked up again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := Revoke(path, b.cert); err != nil {
		t.Fatal(err)
	}
	waitRevoked(t, list, b.cert)
	if list.IsRevoked(a.cert) {
		t.Error("old entry survived the reload")
	}
	w.Stop()
	w.Stop()
}

// TestRecheck: an identity Verify accepted stops holding once a
// certificate of its chain is revoked (the sub-CA here) or expires.
func TestRecheck(t *testing.T) {
	root, _, b := hierarchy(t, KeyEd25519)
	chain, _ := b.leaf(t, "vm", nil, KeyEd25519)
	list := &RevocationList{}
	now := time.Now()
	v := &Verifier{Roots: []*x509.Certificate{root.cert}, Revoked: list, Now: func() time.Time { return now }}
	id, err := v.Verify(chain)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Recheck(id); err != nil {
		t.Fatalf("recheck of a good identity: %v", err)
	}
	list.Add(b.cert)
	if err := v.Recheck(id); err == nil || !strings.Contains(err.Error(), `certificate "b"`) || !strings.Contains(err.Error(), "certificate revoked") {
		t.Fatalf("recheck after revoking the sub-CA: %v", err)
	}
	list.replace(nil)
	now = chain[0].NotAfter.Add(time.Second)
	if err := v.Recheck(id); err == nil || !strings.Contains(err.Error(), `certificate "vm" expired at`) {
		t.Fatalf("recheck after the leaf's notAfter: %v", err)
	}
}
