// Package metrics defines the Go side of the metrics sink service: the
// interface a sink implements, the go-plugin adapters that carry it over
// gRPC between petreld and a plugin process, and Points, which flattens a
// batch into the measurements every Petrel sink shares.
//
// Sink authors implement Sink and pass it to plugin.ServeMetrics; petreld
// receives a Sink that forwards every call over gRPC. petreld calls Write
// once per collection interval with everything it measured, never once per
// sample, and from a per-sink queue, so a slow sink delays nobody else.
//
// # Naming scheme
//
// Points turns a Batch into the measurements below so that the InfluxDB
// plugin, the example JSON-lines plugin and third-party sinks agree on
// names, and dashboards work with any of them. Every point carries the
// batch time and, when the batch names one, the tag host. Tags with an
// empty value are left out; tags are sorted by key. Counters are
// cumulative (they only grow, except when a VM restarts and its tender's
// counters start again). Integer fields are int64 (unsigned counters are
// clamped at the int64 maximum); fields ending in _seconds are float64.
// Floating-point fields that are not finite are left out.
//
// petrel_vm — one point per VM.
//
//	tags:   vm (full name, "a:b:web"), path (the parent path, "a:b", or ":"
//	        for a VM at the root), backend ("hvt", "spt", ...), state
//	        ("starting", "running", "exited", "restarting", "failed",
//	        "lost", "unsupervised")
//	fields: cpu_user_seconds, cpu_system_seconds (counters, CPU time of the
//	        VM's tender), rss_bytes, vsize_bytes, shim_rss_bytes (gauges),
//	        minor_faults, major_faults, voluntary_context_switches,
//	        involuntary_context_switches (counters), threads (gauge),
//	        uptime_seconds (time since the current run started), restarts
//	        (counter), memory_bytes (memory assigned to the VM)
//
// petrel_vm_interface — one point per VM network interface, counted from
// the guest's side (rx is what the guest received).
//
//	tags:   vm, path, interface (device name in the unikernel's manifest),
//	        host_if (the tap device on the host), bridge
//	fields: rx_bytes, rx_packets, rx_errors, rx_dropped, tx_bytes,
//	        tx_packets, tx_errors, tx_dropped (counters)
//
// petrel_host — host totals, when the batch has them.
//
//	fields: cpus, memory_total_bytes, memory_available_bytes, load1
//	        (float64), vm_memory_bytes (memory assigned to VMs)
//
// petrel_daemon — petreld's own health, when the batch has it.
//
//	fields: rss_bytes, vms (VMs known, all states), dropped_batches
//	        (batches petreld could not hand to this sink: its queue was
//	        full or the write failed, counter), collect_seconds (time spent
//	        collecting the batch)
//
// petrel_vms — one point per VM state petreld reports.
//
//	tags:   state
//	fields: count
//
// petrel_plugin — one point per plugin petreld runs.
//
//	tags:   plugin
//	fields: restarts (counter, since petreld started)
//
// petrel_sink — the sink the batch is written to, when the batch says.
// Each sink reports on itself, so that a dashboard fed by a sink shows
// what that sink lost or holds back.
//
//	tags:   sink (its metrics block's name)
//	fields: dropped_batches (batches lost for good on their way to this
//	        sink, in petreld or in the sink's buffer, counter),
//	        queued_batches, queued_bytes (batches, and their bytes on disk,
//	        waiting in the sink's buffer for the destination when this
//	        batch arrived; see package buffer)
package metrics

import (
	"context"
	"errors"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Sink forwards batches of samples to a metrics system. Implementations
// must be safe for concurrent use and must return from every call within a
// bounded time (honouring ctx), so that a dead destination is reported as
// an error instead of a stuck plugin.
type Sink interface {
	// Info identifies the plugin.
	Info(ctx context.Context) (*pluginv1.PluginInfo, error)
	// Configure applies settings from petreld's configuration. It is called
	// after the plugin starts, before Write; a second call replaces the
	// settings. Settings that can never work are refused with ErrInvalid.
	Configure(ctx context.Context, req *pluginv1.ConfigureRequest) error
	// Fingerprint reports whether the sink can deliver right now.
	Fingerprint(ctx context.Context) (*pluginv1.FingerprintResponse, error)
	// Write delivers one interval's samples. It fails with ErrUnavailable
	// when the destination cannot be reached, so petreld can keep the
	// batch and count drops; it never blocks past its own timeout.
	Write(ctx context.Context, batch *pluginv1.Batch) error
	// Close flushes and releases connections and listeners. The plugin
	// exits afterwards; Write after Close fails with ErrNotConfigured.
	Close(ctx context.Context) error
}

// Error classes a sink returns so that petreld can tell bad settings from
// a destination that is down. They survive the gRPC boundary as status
// codes.
var (
	// ErrInvalid marks settings or input that can never work (a missing
	// database name, an unknown protocol, a nil batch).
	ErrInvalid = errors.New("invalid sink settings")
	// ErrUnavailable marks a destination that cannot be reached now; the
	// same call may succeed later.
	ErrUnavailable = errors.New("metrics destination unavailable")
	// ErrNotConfigured marks a call that needs Configure first, or that
	// came after Close.
	ErrNotConfigured = errors.New("sink not configured")
)
