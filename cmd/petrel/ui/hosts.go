package ui

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/petrel-vmm/petrel/cmd/internal/remote"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/sdk/client"
)

// HostConfig is one Petrel host of the console's host list: reached on
// its local socket, or through petrel-endpoint with the user's sub-CA,
// exactly as the petrel CLI reaches it with --socket or --destination.
type HostConfig struct {
	// Name is how the console shows the host: a label of [a-z0-9.-].
	Name string `json:"name"`
	// Socket is petreld's unix socket, for a host reached locally.
	Socket string `json:"socket,omitempty"`
	// Destination is petrel-endpoint's HOST[:PORT], for a remote host.
	Destination string `json:"destination,omitempty"`
	// CA and CAKey are the user's certificate chain and key files: they
	// sign a short-lived leaf for each connection to Destination (the key
	// never leaves this machine), and sign sub-tenants' requests.
	CA    string `json:"ca,omitempty"`
	CAKey string `json:"ca_key,omitempty"`
	// ServerCA is the CA certificate the endpoint's certificate must lead
	// to; ServerName the name it must carry (default: Destination's host).
	ServerCA   string `json:"server_ca,omitempty"`
	ServerName string `json:"server_name,omitempty"`
	// Revocations is the revocation list (revoked.json) the host's owner
	// revokes certificates in, when this machine holds it.
	Revocations string `json:"revocations,omitempty"`
}

// Config is the console's host list, kept in a small JSON file that the
// page edits.
type Config struct {
	Hosts []HostConfig `json:"hosts"`
}

// Validate checks that every host is complete and named once.
func (c *Config) Validate() error {
	seen := map[string]bool{}
	for i, h := range c.Hosts {
		if _, err := name.Root.Child(h.Name); err != nil {
			return fmt.Errorf("host %d: name %q: %w", i+1, h.Name, err)
		}
		if seen[h.Name] {
			return fmt.Errorf("host %q is listed twice", h.Name)
		}
		seen[h.Name] = true
		switch {
		case h.Socket != "" && h.Destination != "":
			return fmt.Errorf("host %q: give a socket or a destination, not both", h.Name)
		case h.Socket == "" && h.Destination == "":
			return fmt.Errorf("host %q: give petreld's socket, or the destination of its petrel-endpoint", h.Name)
		case h.Destination != "" && (h.CA == "" || h.CAKey == "" || h.ServerCA == ""):
			return fmt.Errorf("host %q: a destination needs your CA chain, its key and the server CA (as petrel --ca, --ca-key and --server-ca)", h.Name)
		case (h.CA == "") != (h.CAKey == ""):
			return fmt.Errorf("host %q: the CA chain and its key go together", h.Name)
		}
	}
	return nil
}

// LoadConfig reads the host list at path. A missing file is an empty
// list, so that a first start works.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read host list: %w", err)
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("host list %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("host list %s: %w", path, err)
	}
	return &c, nil
}

// Save writes the host list to path atomically (mode 0600: it names
// key files).
func (c *Config) Save(path string) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("save host list: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save host list: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("save host list: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save host list: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save host list: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save host list: %w", err)
	}
	return nil
}

// rotateAfter is how long a remote connection's leaf is used for new
// calls; leaves are valid for pki.DefaultLeafValidity, and calls already
// running on an older connection keep it until they end.
const rotateAfter = 4 * time.Minute

// host is a configured host and its connections.
type host struct {
	cfg HostConfig

	mu      sync.Mutex
	cur     *client.Client
	curAt   time.Time
	old     []*client.Client
	domain  name.Path
	signer  []*x509.Certificate
	signKey crypto.Signer
	closed  bool
}

// client returns a connection to the host: one for the socket, or one
// with a fresh leaf certificate for the endpoint, renewed every
// rotateAfter.
func (h *host) client() (*client.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("the host was removed from the list")
	}
	if h.cur != nil && (h.cfg.Socket != "" || time.Since(h.curAt) < rotateAfter) {
		return h.cur, nil
	}
	var c *client.Client
	var err error
	if h.cfg.Socket != "" {
		c, err = client.Dial(h.cfg.Socket)
	} else {
		c, err = h.dialRemote()
	}
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.cfg.Name, err)
	}
	if h.cur != nil {
		h.old = append(h.old, h.cur)
	}
	// Connections two rotations old carry expired leaves: nothing
	// running on them can still work.
	for len(h.old) > 1 {
		h.old[0].Close()
		h.old = h.old[1:]
	}
	h.cur, h.curAt = c, time.Now()
	return c, nil
}

// dialRemote makes a leaf for the whole domain (no command: a leaf
// without one acts on the domain, like the user's own CLI) and dials the
// endpoint with it.
func (h *host) dialRemote() (*client.Client, error) {
	if err := h.loadSigner(); err != nil {
		return nil, err
	}
	serverCA, err := pki.ReadCertsFile(h.cfg.ServerCA)
	if err != nil {
		return nil, fmt.Errorf("server CA: %w", err)
	}
	chain, key, err := pki.NewLeafChain(h.signer, h.signKey, "petrel", nil, "")
	if err != nil {
		return nil, err
	}
	return client.DialTLS(h.cfg.Destination, chain, key, serverCA[0], h.cfg.ServerName)
}

// loadSigner reads the host's CA chain and key (once) and the domain the
// chain stands for; h.mu is held.
func (h *host) loadSigner() error {
	if h.signer != nil {
		return nil
	}
	if h.cfg.CA == "" {
		return errors.New("no CA chain and key are configured for this host")
	}
	chain, err := pki.ReadCertsFile(h.cfg.CA)
	if err != nil {
		return fmt.Errorf("CA chain: %w", err)
	}
	key, err := pki.ReadKeyFile(h.cfg.CAKey)
	if err != nil {
		return fmt.Errorf("CA key: %w", err)
	}
	domain, err := remote.DomainOf(chain)
	if err != nil {
		return err
	}
	h.signer, h.signKey, h.domain = chain, key, domain
	return nil
}

// Domain is the part of the host's name space the console acts in: the
// root on a local socket, the chain's domain through an endpoint.
func (h *host) Domain() (name.Path, error) {
	if h.cfg.Socket != "" {
		return name.Root, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadSigner(); err != nil {
		return name.Path{}, fmt.Errorf("host %s: %w", h.cfg.Name, err)
	}
	return h.domain, nil
}

// signerFor returns the CA that signs sub-tenants' requests on this
// host.
func (h *host) signerFor() ([]*x509.Certificate, crypto.Signer, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadSigner(); err != nil {
		return nil, nil, err
	}
	return h.signer, h.signKey, nil
}

// close closes every connection; calls still running on them fail.
func (h *host) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, c := range append(h.old, h.cur) {
		if c != nil {
			c.Close()
		}
	}
	h.cur, h.old = nil, nil
}
