package metrics

import (
	"encoding/json"
	"math"
	"sort"
	"strings"
	"time"

	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// Measurement names produced by Points; the package documentation lists
// their tags and fields.
const (
	MeasurementVM        = "petrel_vm"
	MeasurementInterface = "petrel_vm_interface"
	MeasurementHost      = "petrel_host"
	MeasurementDaemon    = "petrel_daemon"
	MeasurementVMs       = "petrel_vms"
	MeasurementPlugin    = "petrel_plugin"
	MeasurementSink      = "petrel_sink"
)

// Point is one measurement at one time, in the shape most time-series
// databases accept (InfluxDB's line protocol, OpenTSDB, JSON documents).
type Point struct {
	// Measurement is one of the Measurement constants.
	Measurement string
	// Tags identify the series; sorted by key, none with an empty value.
	Tags []Tag
	// Fields are the values, in the documented order.
	Fields []Field
	// Time is the batch's collection time.
	Time time.Time
}

// Tag is one indexed key/value pair of a Point.
type Tag struct {
	Key, Value string
}

// Field is one value of a Point. Value is an int64 or a finite float64,
// so every sink can encode it without further checks.
type Field struct {
	Key   string
	Value any
}

// Tag returns the value of the tag key, or "" when the point lacks it.
func (p Point) Tag(key string) string {
	for _, t := range p.Tags {
		if t.Key == key {
			return t.Value
		}
	}
	return ""
}

// Field returns the value of the field key, or nil when the point lacks it.
func (p Point) Field(key string) any {
	for _, f := range p.Fields {
		if f.Key == key {
			return f.Value
		}
	}
	return nil
}

// MarshalJSON encodes a point as one flat JSON object,
// {"time": RFC 3339, "measurement": ..., "tags": {...}, "fields": {...}},
// the form a JSON-lines sink writes and log pipelines index.
func (p Point) MarshalJSON() ([]byte, error) {
	tags := make(map[string]string, len(p.Tags))
	for _, t := range p.Tags {
		tags[t.Key] = t.Value
	}
	fields := make(map[string]any, len(p.Fields))
	for _, f := range p.Fields {
		fields[f.Key] = f.Value
	}
	return json.Marshal(struct {
		Time        time.Time         `json:"time"`
		Measurement string            `json:"measurement"`
		Tags        map[string]string `json:"tags"`
		Fields      map[string]any    `json:"fields"`
	}{p.Time.UTC(), p.Measurement, tags, fields})
}

// Points flattens a batch into the measurements described in the package
// documentation, in a stable order: VMs and their interfaces in batch
// order, then host, daemon, VM states and plugins (the last two sorted),
// then the sink. A nil batch yields no points.
func Points(b *pluginv1.Batch) []Point {
	if b == nil {
		return nil
	}
	t := time.Unix(0, b.GetTimeNs())
	host := b.GetHost()
	pts := make([]Point, 0, 2*len(b.GetVms())+4)
	add := func(m string, tags []Tag, fields []Field) {
		pts = append(pts, Point{Measurement: m, Tags: tagSet(append(tags, Tag{"host", host})), Fields: fields, Time: t})
	}
	for _, vm := range b.GetVms() {
		path := ParentPath(vm.GetName())
		add(MeasurementVM,
			[]Tag{{"vm", vm.GetName()}, {"path", path}, {"backend", vm.GetBackend()}, {"state", vm.GetState()}},
			fieldSet(
				f("cpu_user_seconds", seconds(vm.GetCpuUserNs())),
				f("cpu_system_seconds", seconds(vm.GetCpuSystemNs())),
				f("rss_bytes", vm.GetRssBytes()),
				f("vsize_bytes", vm.GetVsizeBytes()),
				f("shim_rss_bytes", vm.GetShimRssBytes()),
				f("minor_faults", vm.GetMinflt()),
				f("major_faults", vm.GetMajflt()),
				f("voluntary_context_switches", vm.GetNvcsw()),
				f("involuntary_context_switches", vm.GetNivcsw()),
				f("threads", vm.GetThreads()),
				f("uptime_seconds", vm.GetUptimeSeconds()),
				f("restarts", int64(vm.GetRestarts())),
				f("memory_bytes", int64(vm.GetMemoryMb())<<20),
			))
		for _, ifc := range vm.GetInterfaces() {
			add(MeasurementInterface,
				[]Tag{{"vm", vm.GetName()}, {"path", path}, {"interface", ifc.GetName()}, {"host_if", ifc.GetHostIf()}, {"bridge", ifc.GetBridge()}},
				fieldSet(
					f("rx_bytes", clamp(ifc.GetRxBytes())),
					f("rx_packets", clamp(ifc.GetRxPackets())),
					f("rx_errors", clamp(ifc.GetRxErrors())),
					f("rx_dropped", clamp(ifc.GetRxDropped())),
					f("tx_bytes", clamp(ifc.GetTxBytes())),
					f("tx_packets", clamp(ifc.GetTxPackets())),
					f("tx_errors", clamp(ifc.GetTxErrors())),
					f("tx_dropped", clamp(ifc.GetTxDropped())),
				))
		}
	}
	if h := b.GetHostSample(); h != nil {
		add(MeasurementHost, nil, fieldSet(
			f("cpus", int64(h.GetCpus())),
			f("memory_total_bytes", clamp(h.GetMemoryTotalBytes())),
			f("memory_available_bytes", clamp(h.GetMemoryAvailableBytes())),
			f("load1", h.GetLoad1()),
			f("vm_memory_bytes", clamp(h.GetVmMemoryBytes())),
		))
	}
	if d := b.GetDaemon(); d != nil {
		var vms int64
		for _, n := range d.GetVmsByState() {
			vms += int64(n)
		}
		add(MeasurementDaemon, nil, fieldSet(
			f("rss_bytes", d.GetRssBytes()),
			f("vms", vms),
			f("dropped_batches", clamp(d.GetDroppedBatches())),
			f("collect_seconds", seconds(d.GetCollectNs())),
		))
		for _, state := range sortedKeys(d.GetVmsByState()) {
			add(MeasurementVMs, []Tag{{"state", state}}, fieldSet(f("count", int64(d.GetVmsByState()[state]))))
		}
		for _, name := range sortedKeys(d.GetPluginRestarts()) {
			add(MeasurementPlugin, []Tag{{"plugin", name}}, fieldSet(f("restarts", int64(d.GetPluginRestarts()[name]))))
		}
	}
	if sk := b.GetSink(); sk != nil {
		add(MeasurementSink, []Tag{{"sink", sk.GetName()}}, fieldSet(
			f("dropped_batches", clamp(SinkDropped(sk))),
			f("queued_batches", clamp(sk.GetQueuedBatches())),
			f("queued_bytes", clamp(sk.GetQueuedBytes())),
		))
	}
	return pts
}

// SinkDropped returns every batch a sink lost for good, in petreld and in
// its own buffer, saturating instead of wrapping: the one figure an
// operator needs to know whether data is missing.
func SinkDropped(sk *pluginv1.SinkSample) uint64 {
	d := sk.GetDroppedBatches() + sk.GetBufferDroppedBatches()
	if d < sk.GetDroppedBatches() {
		return math.MaxUint64
	}
	return d
}

// ParentPath returns the path a VM lives under: "a:b" for "a:b:vm", and
// the root ":" for a VM with a single label. Sinks that tag by path use it
// so that every sink agrees on the value.
func ParentPath(name string) string {
	i := strings.LastIndexByte(name, ':')
	if i <= 0 {
		return ":"
	}
	return name[:i]
}

func f(key string, v any) Field { return Field{Key: key, Value: v} }

// fieldSet drops floating-point fields no encoding can carry (NaN, ±Inf).
func fieldSet(fs ...Field) []Field {
	out := fs[:0]
	for _, x := range fs {
		if v, ok := x.Value.(float64); ok && (math.IsNaN(v) || math.IsInf(v, 0)) {
			continue
		}
		out = append(out, x)
	}
	return out
}

// tagSet drops empty tags and sorts the rest by key, the order InfluxDB's
// line protocol requires.
func tagSet(ts []Tag) []Tag {
	out := ts[:0]
	for _, t := range ts {
		if t.Value != "" {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func seconds(ns int64) float64 { return float64(ns) / 1e9 }

// clamp converts an unsigned counter to int64, which every time-series
// database accepts, saturating instead of wrapping negative.
func clamp(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
