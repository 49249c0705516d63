package supervisor

import (
	"context"
	"errors"
	"fmt"

	"github.com/petrel-vmm/petrel/core/internal/console"
	"github.com/petrel-vmm/petrel/core/internal/consolemux"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
)

// followConsole copies runID's console into ring until the run's output
// ends: over its backend's one console stream when the backend can
// follow consoles together, alone otherwise.
func (s *Supervisor) followConsole(ctx context.Context, hv hypervisor.Hypervisor, backend, runID string, ring *console.Ring) {
	if _, ok := hv.(hypervisor.ConsoleFollower); ok {
		if s.consoleMux(backend).Follow(ctx, runID, ring) {
			return
		}
	}
	s.pumpConsole(ctx, hv, runID, ring)
}

// consoleMux returns the console stream of a backend, made on first use.
func (s *Supervisor) consoleMux(backend string) *consolemux.Mux {
	s.muxMu.Lock()
	defer s.muxMu.Unlock()
	if m, ok := s.muxes[backend]; ok {
		return m
	}
	m := consolemux.New(func(ctx context.Context) (hypervisor.ConsoleStream, error) {
		return s.openConsoles(ctx, backend)
	}, consolemux.Options{RetryDelay: retryDelay, Retries: consoleRetries, Logger: s.opts.Logger.Named("console").With("backend", backend)})
	if s.muxes == nil {
		s.muxes = map[string]*consolemux.Mux{}
	}
	s.muxes[backend] = m
	return m
}

// openConsoles opens a console stream to a backend whose capabilities
// say it serves one.
func (s *Supervisor) openConsoles(ctx context.Context, backend string) (hypervisor.ConsoleStream, error) {
	hv, err := s.opts.Backends.Hypervisor(backend)
	if err != nil {
		return nil, err
	}
	f, ok := hv.(hypervisor.ConsoleFollower)
	if !ok {
		return nil, fmt.Errorf("backend %s: %w", backend, errors.ErrUnsupported)
	}
	caps, err := hv.Capabilities(ctx)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", backend, err)
	}
	if !caps.GetFollowsConsoles() {
		return nil, fmt.Errorf("backend %s does not follow consoles together: %w", backend, errors.ErrUnsupported)
	}
	return f.FollowConsoles(ctx)
}

// closeConsoleMuxes stops every backend's console stream.
func (s *Supervisor) closeConsoleMuxes() {
	s.muxMu.Lock()
	muxes := s.muxes
	s.muxes = nil
	s.muxMu.Unlock()
	for _, m := range muxes {
		m.Close()
	}
}
