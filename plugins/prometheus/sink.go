package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// version is set at build time with -ldflags.
var version = "0.1.0-dev"

const (
	defaultAddress = "127.0.0.1:9464"
	defaultPath    = "/metrics"
)

// sink is the Prometheus metrics sink: an HTTP server whose single
// collector serves the snapshot built from the latest Write.
type sink struct {
	log     hclog.Logger
	current atomic.Pointer[snapshot]
	reg     *prometheus.Registry

	mu   sync.Mutex
	srv  *server // nil until configured and after Close
	addr string
}

// server is one running HTTP listener and the goroutine serving it.
type server struct {
	http *http.Server
	ln   net.Listener
	done chan struct{}
}

func newSink() *sink {
	s := &sink{
		log: hclog.New(&hclog.LoggerOptions{Name: "prometheus", Output: os.Stderr, JSONFormat: true}),
		reg: prometheus.NewRegistry(),
	}
	s.current.Store(&snapshot{})
	s.reg.MustRegister(collector{s})
	return s
}

// collector forwards to whatever snapshot is current, so a Write swaps
// everything a scrape sees in one step.
type collector struct{ s *sink }

// Describe implements prometheus.Collector.
func (c collector) Describe(ch chan<- *prometheus.Desc) { describeAll(ch) }

// Collect implements prometheus.Collector.
func (c collector) Collect(ch chan<- prometheus.Metric) { c.s.current.Load().Collect(ch) }

// Info identifies the plugin.
func (s *sink) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_METRICS, Name: "prometheus", Version: version,
		ApiVersions: []uint32{petrelplugin.ProtocolVersion}}, nil
}

// parseSettings validates settings and fills in defaults.
func parseSettings(settings map[string]string) (addr, path string, err error) {
	addr, path = defaultAddress, defaultPath
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := settings[k]
		switch k {
		case "address":
			addr = v
		case "path":
			path = v
		default:
			return "", "", fmt.Errorf("prometheus: unknown setting %q (known: address, path): %w", k, metrics.ErrInvalid)
		}
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return "", "", fmt.Errorf("prometheus: address %q is not host:port such as %s: %w", addr, defaultAddress, metrics.ErrInvalid)
	}
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?# ") {
		return "", "", fmt.Errorf("prometheus: path %q is not a URL path such as %s: %w", path, defaultPath, metrics.ErrInvalid)
	}
	return addr, path, nil
}

// Configure starts serving on the configured address, replacing any
// earlier listener. A listener that cannot be opened (the port is taken)
// is reported as ErrUnavailable: the same settings may work later.
func (s *sink) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error {
	addr, path, err := parseSettings(req.GetSettings())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		if err := s.stop(ctx); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("prometheus: listen on %s: %v: %w", addr, err, metrics.ErrUnavailable)
	}
	mux := http.NewServeMux()
	mux.Handle(path, promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
		Timeout:           10 * time.Second,
	}))
	srv := &server{
		http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(srv.done)
		if err := srv.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server stopped", "address", ln.Addr().String(), "error", err)
		}
	}()
	s.srv, s.addr = srv, ln.Addr().String()+path
	return nil
}

// stop shuts the server down, waiting for scrapes in flight until ctx
// ends, and for the serving goroutine. Called with s.mu held.
func (s *sink) stop(ctx context.Context) error {
	srv := s.srv
	s.srv = nil
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := srv.http.Shutdown(ctx)
	if err != nil {
		srv.http.Close()
	}
	<-srv.done
	if err != nil {
		return fmt.Errorf("prometheus: stop serving %s: %w", s.addr, err)
	}
	return nil
}

// Fingerprint reports where the metrics are served.
func (s *sink) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_UNHEALTHY, Description: "not configured"}, nil
	}
	return &pluginv1.FingerprintResponse{
		Health:      pluginv1.Health_HEALTH_HEALTHY,
		Description: "serving metrics on http://" + s.addr,
		Attributes:  map[string]string{"url": "http://" + s.addr},
	}, nil
}

// Write replaces the snapshot scrapes see. It never waits for a scrape.
func (s *sink) Write(_ context.Context, batch *pluginv1.Batch) error {
	if batch == nil {
		return fmt.Errorf("prometheus: nil batch: %w", metrics.ErrInvalid)
	}
	snap := buildSnapshot(batch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return fmt.Errorf("prometheus: write: %w", metrics.ErrNotConfigured)
	}
	if snap.skipped > 0 {
		s.log.Warn("samples left out of the batch", "count", snap.skipped)
	}
	s.current.Store(snap)
	return nil
}

// Close stops serving; the sink needs Configure again to write.
func (s *sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current.Store(&snapshot{})
	if s.srv == nil {
		return nil
	}
	return s.stop(ctx)
}
