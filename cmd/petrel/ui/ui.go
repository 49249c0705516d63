// Package ui is petrel's web console, `petrel ui`: a small HTTP server on
// the operator's own machine that serves one page and a JSON API over the
// same daemon API the CLI uses, to one or more Petrel hosts, locally on
// petreld's socket or remotely through petrel-endpoint with the user's
// own sub-CA, whose key never leaves the machine. It adds no accounts and
// no authority: a page can do exactly what its user's certificates (or
// socket permissions) allow.
//
// The page is reached with a one-time token, as Jupyter does: the URL
// the command prints carries it, the first visit turns it into an
// HttpOnly cookie, and every request without it is refused. Requests that
// change anything must also carry it in a header (which another site's
// page cannot set) and come from the console's own origin, so the console
// is safe from cross-site request forgery; the Host header is checked
// against the address listened on, against DNS rebinding.
//
// Every asset is embedded in the binary (no CDN, no fonts from elsewhere).
package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// TokenCookie is the cookie that carries the token after the first
// visit; TokenHeader the header mutating requests carry it in.
const (
	TokenCookie = "petrel_ui"
	TokenHeader = "X-Petrel-Token"
)

// Options configure a Server.
type Options struct {
	// ConfigPath is the host list file, read at start and written when
	// the page edits it.
	ConfigPath string
	// Token is the secret of the console's URL; empty for a random one.
	Token string
	// Logf, when set, receives one line per failed request.
	Logf func(format string, args ...any)
}

// Server is the web console.
type Server struct {
	opts  Options
	token string

	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	cfg      *Config
	hosts    map[string]*host
	watchers map[string]*watcher

	// allowedHosts are the Host header values accepted; empty accepts
	// any (a console listening beyond loopback on purpose).
	allowedHosts map[string]bool

	page *template.Template
}

// New reads the host list and prepares the console; seed, when the list
// is empty, is used as the first list (the host the CLI's flags name).
func New(opts Options, seed []HostConfig) (*Server, error) {
	cfg, err := LoadConfig(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	if len(cfg.Hosts) == 0 && len(seed) > 0 {
		cfg.Hosts = seed
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
	}
	token := opts.Token
	if token == "" {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("make token: %w", err)
		}
		token = hex.EncodeToString(b)
	}
	page, err := template.ParseFS(assets, "assets/index.html")
	if err != nil {
		return nil, fmt.Errorf("page template: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{opts: opts, token: token, ctx: ctx, cancel: cancel, hosts: map[string]*host{}, watchers: map[string]*watcher{}, page: page}
	s.setConfig(cfg)
	return s, nil
}

// Token is the console's secret, for the URL to print.
func (s *Server) Token() string { return s.token }

// setConfig installs a host list, closing what the old one had and the
// new one lacks or changed.
func (s *Server) setConfig(cfg *Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[string]*host{}
	for _, hc := range cfg.Hosts {
		if old, ok := s.hosts[hc.Name]; ok && old.cfg == hc {
			keep[hc.Name] = old
			continue
		}
		keep[hc.Name] = &host{cfg: hc}
	}
	for n, old := range s.hosts {
		if keep[n] != old {
			if w := s.watchers[n]; w != nil {
				w.stop()
				delete(s.watchers, n)
			}
			old.close()
		}
	}
	s.cfg, s.hosts = cfg, keep
}

// host returns the configured host called n.
func (s *Server) host(n string) (*host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hosts[n]
	if !ok {
		return nil, httpError{http.StatusNotFound, fmt.Sprintf("no host %q in the host list", n)}
	}
	return h, nil
}

// watcherOf returns the host's watcher, started on first use.
func (s *Server) watcherOf(h *host) *watcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.watchers[h.cfg.Name]
	if w == nil && s.hosts[h.cfg.Name] == h && s.ctx.Err() == nil {
		w = newWatcher(s.ctx, h)
		s.watchers[h.cfg.Name] = w
	}
	return w
}

// Close stops every watcher and closes every connection; requests still
// running fail.
func (s *Server) Close() {
	s.cancel()
	s.mu.Lock()
	ws, hs := s.watchers, s.hosts
	s.watchers, s.hosts = map[string]*watcher{}, map[string]*host{}
	s.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
	for _, h := range hs {
		h.close()
	}
}

// Serve serves the console on l until ctx ends, then shuts down
// gracefully (streams are ended) and closes the server.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.allowedHosts = allowedHosts(l.Addr())
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return s.ctx }}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		s.cancel() // ends event and console streams, so Shutdown need not wait for them
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
		<-done
	}
	s.Close()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// allowedHosts are the Host headers of a console listening on addr: its
// address, and localhost's names for a loopback address. A console on a
// non-loopback address accepts any.
func allowedHosts(addr net.Addr) map[string]bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok || !ta.IP.IsLoopback() {
		return nil
	}
	port := fmt.Sprint(ta.Port)
	return map[string]bool{
		net.JoinHostPort(ta.IP.String(), port): true,
		net.JoinHostPort("localhost", port):    true,
		net.JoinHostPort("127.0.0.1", port):    true,
		net.JoinHostPort("::1", port):          true,
	}
}

// Handler is the console's HTTP handler, with authentication.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.routes(mux)
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree always has assets/
	}
	files := http.FileServerFS(static)
	mux.HandleFunc("GET /{$}", s.servePage)
	mux.Handle("GET /app.js", files)
	mux.Handle("GET /app.css", files)
	mux.Handle("GET /icon.svg", files)
	return s.authenticate(mux)
}

// authenticate admits requests that carry the token, turns a first
// visit's ?token= into the cookie, and refuses the rest; mutating
// requests need the token header and the console's own origin.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		if s.allowedHosts != nil && !s.allowedHosts[r.Host] {
			http.Error(w, "petrel ui: unexpected Host header (open the address petrel ui printed)", http.StatusMisdirectedRequest)
			return
		}
		if t := r.URL.Query().Get("token"); t != "" && r.Method == http.MethodGet && r.URL.Path == "/" {
			if !s.valid(t) {
				s.refuse(w, r)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: TokenCookie, Value: s.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		mutating := r.Method != http.MethodGet && r.Method != http.MethodHead
		switch {
		case mutating:
			if !s.valid(r.Header.Get(TokenHeader)) {
				s.refuse(w, r)
				return
			}
			if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
				http.Error(w, "petrel ui: request from another origin refused", http.StatusForbidden)
				return
			}
		default:
			c, err := r.Cookie(TokenCookie)
			if (err != nil || !s.valid(c.Value)) && !s.valid(r.Header.Get(TokenHeader)) {
				s.refuse(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) valid(t string) bool {
	return t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(s.token)) == 1
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "not signed in: open the URL petrel ui printed, with its token"})
		return
	}
	http.Error(w, "petrel ui: open the URL `petrel ui` printed, with its token (?token=...)", http.StatusUnauthorized)
}

// servePage serves the page with the token for its requests' header.
func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := s.page.Execute(&buf, map[string]string{"Token": s.token}); err != nil {
		http.Error(w, "petrel ui: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
}
