// Command petrel-plugin-jsonl is an example third-party metrics sink for
// Petrel: it appends every point of every batch to a file as one JSON
// object per line. It imports only Petrel's sdk/, as any plugin may. The
// SDK's buffer keeps the batches it cannot append (a full disk) and
// appends them, in order, once it can.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	"github.com/petrel-vmm/petrel/sdk/metrics/buffer"
	"github.com/petrel-vmm/petrel/sdk/petrelplugin"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

func main() { petrelplugin.ServeMetrics(buffer.Wrap(&sink{}, buffer.Options{})) }

// sink holds the open file; the mutex keeps concurrent batches apart.
type sink struct {
	mu   sync.Mutex
	file *os.File
}

func (s *sink) Info(context.Context) (*pluginv1.PluginInfo, error) {
	return &pluginv1.PluginInfo{Kind: pluginv1.Kind_KIND_METRICS, Name: "jsonl", Version: "1.0.0",
		ApiVersions: []uint32{petrelplugin.ProtocolVersion}}, nil
}

// Configure opens (creating if needed) the file named by the setting path.
func (s *sink) Configure(_ context.Context, req *pluginv1.ConfigureRequest) error {
	path := req.GetSettings()["path"]
	if path == "" {
		return fmt.Errorf("jsonl: setting path (the file to append to) is required: %w", metrics.ErrInvalid)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("jsonl: %v: %w", err, metrics.ErrInvalid)
	}
	s.Close(context.Background())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.file = f
	return nil
}

func (s *sink) Fingerprint(context.Context) (*pluginv1.FingerprintResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_UNHEALTHY, Description: "not configured"}, nil
	}
	return &pluginv1.FingerprintResponse{Health: pluginv1.Health_HEALTH_HEALTHY, Description: "appending to " + s.file.Name()}, nil
}

// Write appends the whole batch with one write call, so that readers do
// not see half a batch.
func (s *sink) Write(_ context.Context, batch *pluginv1.Batch) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, p := range metrics.Points(batch) {
		if err := enc.Encode(p); err != nil {
			return fmt.Errorf("jsonl: encode %s: %w", p.Measurement, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return fmt.Errorf("jsonl: write: %w", metrics.ErrNotConfigured)
	}
	if _, err := s.file.Write(buf.Bytes()); err != nil {
		// A full or vanished disk may come back: worth keeping the batch.
		return fmt.Errorf("jsonl: append to %s: %v: %w", s.file.Name(), err, metrics.ErrUnavailable)
	}
	return nil
}

func (s *sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	return err
}
