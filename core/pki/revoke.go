package pki

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"sync"
	"syscall"
	"time"
)

// revocationVersion is the version of the revocation file format.
const revocationVersion = 1

// maxRevocationFile bounds the revocation file read into memory; at
// roughly 250 bytes an entry it holds hundreds of thousands of entries.
const maxRevocationFile = 64 << 20

// Revoked identifies one revoked certificate. Serial numbers are unique
// only per issuer, so the issuer is recorded too: by its key identifier
// (the certificate's authority key identifier) when it has one, and by
// its distinguished name, which is what is matched when there is no key
// identifier.
type Revoked struct {
	// Serial is the certificate's serial number in lower-case hex,
	// without leading zeros.
	Serial string `json:"serial"`
	// IssuerKeyID is the certificate's authority key identifier in
	// lower-case hex, or empty.
	IssuerKeyID string `json:"issuer_key_id,omitempty"`
	// Issuer is the issuer's distinguished name, as x509 prints it.
	Issuer string `json:"issuer"`
	// Subject is the revoked certificate's name, for the people reading
	// the file; it plays no part in matching.
	Subject string `json:"subject,omitempty"`
	// RevokedAt records when the entry was added.
	RevokedAt time.Time `json:"revoked_at"`
}

// matches reports whether r designates c.
func (r Revoked) matches(c *x509.Certificate) bool {
	if r.Serial != serialHex(c) {
		return false
	}
	if r.IssuerKeyID != "" && len(c.AuthorityKeyId) > 0 {
		return r.IssuerKeyID == hex.EncodeToString(c.AuthorityKeyId)
	}
	return r.Issuer == c.Issuer.String()
}

// revocationFile is the JSON document on disk.
type revocationFile struct {
	Version int       `json:"version"`
	Revoked []Revoked `json:"revoked"`
}

// RevocationList is the set of certificates the owner has revoked. A
// chain is refused if any of its certificates is listed, so revoking a
// sub-CA revokes everything it issued. It is safe for concurrent use, and
// a Watcher replaces its contents in place, so a Verifier holding it sees
// new revocations without being rebuilt.
type RevocationList struct {
	mu       sync.RWMutex
	entries  []Revoked
	bySerial map[string][]Revoked
}

// LoadRevocationList reads a revocation file. A missing file is an
// error rather than an empty list: the endpoint must not start accepting
// revoked certificates because the file was deleted.
func LoadRevocationList(path string) (*RevocationList, error) {
	entries, err := readRevocationFile(path)
	if err != nil {
		return nil, err
	}
	l := &RevocationList{}
	l.replace(entries)
	return l, nil
}

func readRevocationFile(path string) ([]Revoked, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	if fi.Size() > maxRevocationFile {
		return nil, fmt.Errorf("revocation list %s: %d bytes, the limit is %d", path, fi.Size(), maxRevocationFile)
	}
	var doc revocationFile
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("revocation list %s: %w", path, err)
	}
	if doc.Version != revocationVersion {
		return nil, fmt.Errorf("revocation list %s: version %d is not supported (this build reads version %d)", path, doc.Version, revocationVersion)
	}
	for i, r := range doc.Revoked {
		if n, ok := new(big.Int).SetString(r.Serial, 16); !ok || n.Sign() < 0 || n.Text(16) != r.Serial {
			return nil, fmt.Errorf("revocation list %s: entry %d: serial %q is not a serial number in lower-case hex", path, i+1, r.Serial)
		}
		if r.IssuerKeyID == "" && r.Issuer == "" {
			return nil, fmt.Errorf("revocation list %s: entry %d: no issuer", path, i+1)
		}
	}
	return doc.Revoked, nil
}

// replace swaps in a new set of entries.
func (l *RevocationList) replace(entries []Revoked) {
	by := make(map[string][]Revoked, len(entries))
	for _, r := range entries {
		by[r.Serial] = append(by[r.Serial], r)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = entries
	l.bySerial = by
}

// IsRevoked reports whether c is listed. A nil list revokes nothing.
func (l *RevocationList) IsRevoked(c *x509.Certificate) bool {
	if l == nil {
		return false
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, r := range l.bySerial[serialHex(c)] {
		if r.matches(c) {
			return true
		}
	}
	return false
}

// Entries returns a copy of the listed certificates, for `petrel ca
// revoked` style listings.
func (l *RevocationList) Entries() []Revoked {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return append([]Revoked(nil), l.entries...)
}

// Add lists c and reports whether it was not listed already.
func (l *RevocationList) Add(c *x509.Certificate) bool {
	if l.IsRevoked(c) {
		return false
	}
	r := Revoked{
		Serial:    serialHex(c),
		Issuer:    c.Issuer.String(),
		Subject:   c.Subject.String(),
		RevokedAt: time.Now().UTC().Truncate(time.Second),
	}
	if len(c.AuthorityKeyId) > 0 {
		r.IssuerKeyID = hex.EncodeToString(c.AuthorityKeyId)
	}
	l.replace(append(l.Entries(), r))
	return true
}

// Save writes the list to path atomically (mode 0644: the list is not
// secret, and the unprivileged endpoint must read it).
func (l *RevocationList) Save(path string) error {
	doc := revocationFile{Version: revocationVersion, Revoked: l.Entries()}
	if doc.Revoked == nil {
		doc.Revoked = []Revoked{}
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("revocation list: %w", err)
	}
	return writeAtomic(path, append(data, '\n'), 0o644)
}

// Revoke adds c to the revocation file at path, creating the file if it
// does not exist. Running endpoints and daemons pick the change up
// through their Watcher.
func Revoke(path string, c *x509.Certificate) error {
	l := &RevocationList{}
	if _, err := os.Stat(path); err == nil {
		if l, err = LoadRevocationList(path); err != nil {
			return err
		}
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("revocation list: %w", err)
	}
	if !l.Add(c) {
		return nil
	}
	return l.Save(path)
}

// serialHex renders a serial number as the revocation file stores it.
func serialHex(c *x509.Certificate) string {
	if c.SerialNumber == nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

// DefaultWatchInterval is how often a Watcher looks at the revocation
// file (one stat): often enough that a revocation ends the streams it
// concerns within a second, the recheck of open streams included.
const DefaultWatchInterval = 250 * time.Millisecond

// Watcher keeps a RevocationList in step with its file, polling the
// file's modification time, size and inode so that both in-place edits
// and atomic replacements are seen. Polling avoids inotify's pitfalls
// with editors and renames and costs one stat a second.
type Watcher struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// WatchRevocations starts a Watcher that reloads path into list whenever
// the file changes (and once at start, to close the gap since list was
// loaded). If the file becomes unreadable or invalid, list keeps its
// last good contents and onError, if not nil, is called with the
// problem. interval 0 means DefaultWatchInterval. The caller owns the
// Watcher and must Stop it.
func WatchRevocations(path string, list *RevocationList, interval time.Duration, onError func(error)) *Watcher {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	w := &Watcher{stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(path, list, interval, onError)
	return w
}

// fileStamp is what changes when the revocation file does.
type fileStamp struct {
	mtime time.Time
	size  int64
	ino   uint64
}

func (w *Watcher) run(path string, list *RevocationList, interval time.Duration, onError func(error)) {
	defer close(w.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	var last fileStamp
	var failed bool
	for {
		fi, err := os.Stat(path)
		if err == nil {
			s := fileStamp{mtime: fi.ModTime(), size: fi.Size()}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				s.ino = st.Ino
			}
			if s != last || failed {
				var entries []Revoked
				entries, err = readRevocationFile(path)
				if err == nil {
					list.replace(entries)
					last = s
				}
			}
		} else {
			err = fmt.Errorf("revocation list: %w", err)
		}
		if err != nil && !failed && onError != nil {
			onError(err)
		}
		failed = err != nil
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

// Stop ends the Watcher and waits for its goroutine to exit. It may be
// called more than once.
func (w *Watcher) Stop() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}
