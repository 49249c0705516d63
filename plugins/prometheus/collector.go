package main

import (
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-vmm/petrel/sdk/metrics"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
)

// family is one metric name with its help text, type and labels, and how
// to read its value from a sample.
type family[S any] struct {
	desc  *prometheus.Desc
	vtype prometheus.ValueType
	value func(S) float64
}

func newFamily[S any](name, help string, vtype prometheus.ValueType, labels []string, value func(S) float64) family[S] {
	return family[S]{desc: prometheus.NewDesc(name, help, labels, nil), vtype: vtype, value: value}
}

var (
	vmLabels  = []string{"vm"}
	ifLabels  = []string{"vm", "interface"}
	counter   = prometheus.CounterValue
	gauge     = prometheus.GaugeValue
	secondsNs = func(ns int64) float64 { return float64(ns) / 1e9 }
)

// Descriptions of every metric the plugin serves. Info metrics carry the
// labels that change over a VM's life (state, tap device) with the value
// 1, so that the value series keep stable identities; join on vm (and
// interface) to use them.
var (
	vmInfo = prometheus.NewDesc("petrel_vm_info",
		"Information about a VM; the value is always 1.", []string{"vm", "path", "backend", "state"}, nil)
	ifInfo = prometheus.NewDesc("petrel_vm_interface_info",
		"Information about a VM network interface; the value is always 1.", []string{"vm", "interface", "host_if", "bridge"}, nil)

	vmFamilies = []family[*pluginv1.VMSample]{
		newFamily("petrel_vm_cpu_user_seconds_total", "User CPU time consumed by the VM's tender.", counter, vmLabels,
			func(v *pluginv1.VMSample) float64 { return secondsNs(v.GetCpuUserNs()) }),
		newFamily("petrel_vm_cpu_system_seconds_total", "System CPU time consumed by the VM's tender.", counter, vmLabels,
			func(v *pluginv1.VMSample) float64 { return secondsNs(v.GetCpuSystemNs()) }),
		newFamily("petrel_vm_resident_memory_bytes", "Resident memory of the VM's tender.", gauge, vmLabels,
			func(v *pluginv1.VMSample) float64 { return float64(v.GetRssBytes()) }),
		newFamily("petrel_vm_virtual_memory_bytes", "Virtual memory size of the VM's tender.", gauge, vmLabels,
			func(v *pluginv1.VMSample) float64 { return float64(v.GetVsizeBytes()) }),
		newFamily("petrel_vm_shim_resident_memory_bytes", "Resident memory of the VM's shim process.", gauge, vmLabels,
			func(v *pluginv1.VMSample) float64 { return float64(v.GetShimRssBytes()) }),
		newFamily("petrel_vm_memory_size_bytes", "Memory assigned to the VM.", gauge, vmLabels,
			func(v *pluginv1.VMSample) float64 { return float64(v.GetMemoryMb()) * (1 << 20) }),
		newFamily("petrel_vm_minor_page_faults_total", "Minor page faults of the VM's tender.", counter, vmLabels,
			func(v *pluginv1.VMSample) float64 { return float64(v.GetMinflt()) }),
		newFamily("petrel_vm_major_page_faults_total", "Major page faults of the VM's tender.", counter, vmLabels,
			func(v *pluginv1.VMSample) float64 { return float64(v.GetMajflt()) }),
		newFamily("petrel_vm_voluntary_context_switches_total", "Voluntary context switches of the VM's tender.", counter, vmLabels,
			func(v *pluginv1.VMSample) float64 { return float64(v.GetNvcsw()) }),
		newFamily("petrel_vm_involuntary_context_switches_total", "Involuntary context switches of the VM's tender.", counter, vmLabels,
			func(v *pluginv1.VMSample) float64 { return float64(v.GetNivcsw()) }),
		newFamily("petrel_vm_threads", "Threads of the VM's tender.", gauge, vmLabels,
			func(v *pluginv1.VMSample) float64 { return float64(v.GetThreads()) }),
		newFamily("petrel_vm_uptime_seconds", "Time since the VM's current run started.", gauge, vmLabels,
			func(v *pluginv1.VMSample) float64 { return v.GetUptimeSeconds() }),
		newFamily("petrel_vm_restarts_total", "Times petreld restarted the VM.", counter, vmLabels,
			func(v *pluginv1.VMSample) float64 { return float64(v.GetRestarts()) }),
	}

	ifFamilies = []family[*pluginv1.InterfaceSample]{
		newFamily("petrel_vm_interface_receive_bytes_total", "Bytes received by the guest on the interface.", counter, ifLabels,
			func(i *pluginv1.InterfaceSample) float64 { return float64(i.GetRxBytes()) }),
		newFamily("petrel_vm_interface_receive_packets_total", "Packets received by the guest on the interface.", counter, ifLabels,
			func(i *pluginv1.InterfaceSample) float64 { return float64(i.GetRxPackets()) }),
		newFamily("petrel_vm_interface_receive_errors_total", "Receive errors on the interface.", counter, ifLabels,
			func(i *pluginv1.InterfaceSample) float64 { return float64(i.GetRxErrors()) }),
		newFamily("petrel_vm_interface_receive_dropped_total", "Packets dropped on their way to the guest.", counter, ifLabels,
			func(i *pluginv1.InterfaceSample) float64 { return float64(i.GetRxDropped()) }),
		newFamily("petrel_vm_interface_transmit_bytes_total", "Bytes sent by the guest on the interface.", counter, ifLabels,
			func(i *pluginv1.InterfaceSample) float64 { return float64(i.GetTxBytes()) }),
		newFamily("petrel_vm_interface_transmit_packets_total", "Packets sent by the guest on the interface.", counter, ifLabels,
			func(i *pluginv1.InterfaceSample) float64 { return float64(i.GetTxPackets()) }),
		newFamily("petrel_vm_interface_transmit_errors_total", "Transmit errors on the interface.", counter, ifLabels,
			func(i *pluginv1.InterfaceSample) float64 { return float64(i.GetTxErrors()) }),
		newFamily("petrel_vm_interface_transmit_dropped_total", "Packets from the guest dropped on the interface.", counter, ifLabels,
			func(i *pluginv1.InterfaceSample) float64 { return float64(i.GetTxDropped()) }),
	}

	hostFamilies = []family[*pluginv1.HostSample]{
		newFamily("petrel_host_cpus", "CPUs of the host.", gauge, nil,
			func(h *pluginv1.HostSample) float64 { return float64(h.GetCpus()) }),
		newFamily("petrel_host_memory_total_bytes", "Memory of the host.", gauge, nil,
			func(h *pluginv1.HostSample) float64 { return float64(h.GetMemoryTotalBytes()) }),
		newFamily("petrel_host_memory_available_bytes", "Memory available for new allocations on the host.", gauge, nil,
			func(h *pluginv1.HostSample) float64 { return float64(h.GetMemoryAvailableBytes()) }),
		newFamily("petrel_host_load1", "One-minute load average of the host.", gauge, nil,
			func(h *pluginv1.HostSample) float64 { return h.GetLoad1() }),
		newFamily("petrel_host_vm_memory_bytes", "Memory assigned to VMs on the host.", gauge, nil,
			func(h *pluginv1.HostSample) float64 { return float64(h.GetVmMemoryBytes()) }),
	}

	daemonFamilies = []family[*pluginv1.DaemonSample]{
		newFamily("petrel_daemon_resident_memory_bytes", "Resident memory of petreld.", gauge, nil,
			func(d *pluginv1.DaemonSample) float64 { return float64(d.GetRssBytes()) }),
		newFamily("petrel_daemon_dropped_batches_total", "Metric batches this sink lost because it fell behind.", counter, nil,
			func(d *pluginv1.DaemonSample) float64 { return float64(d.GetDroppedBatches()) }),
		newFamily("petrel_daemon_collect_duration_seconds", "Time petreld spent collecting the latest batch.", gauge, nil,
			func(d *pluginv1.DaemonSample) float64 { return secondsNs(d.GetCollectNs()) }),
	}

	sinkLabels   = []string{"sink"}
	sinkFamilies = []family[*pluginv1.SinkSample]{
		newFamily("petrel_sink_dropped_batches_total", "Metric batches lost for good on their way to this sink, in petreld or in the sink's buffer.", counter, sinkLabels,
			func(s *pluginv1.SinkSample) float64 { return float64(metrics.SinkDropped(s)) }),
		newFamily("petrel_sink_queued_batches", "Metric batches waiting in the sink's buffer for its destination; always 0 for this sink, which Prometheus scrapes.", gauge, sinkLabels,
			func(s *pluginv1.SinkSample) float64 { return float64(s.GetQueuedBatches()) }),
		newFamily("petrel_sink_queued_bytes", "Disk space of the metric batches waiting in the sink's buffer.", gauge, sinkLabels,
			func(s *pluginv1.SinkSample) float64 { return float64(s.GetQueuedBytes()) }),
	}

	buildInfo = prometheus.NewDesc("petrel_build_info",
		"Versions of petreld (version, the Go release it was built with) and of this plugin; the value is always 1.",
		[]string{"version", "goversion", "goos", "goarch", "plugin_version"}, nil)

	vmsByState = prometheus.NewDesc("petrel_vms",
		"VMs known to petreld, by state.", []string{"state"}, nil)
	pluginRestarts = prometheus.NewDesc("petrel_plugin_restarts_total",
		"Times petreld restarted a plugin since it started.", []string{"plugin"}, nil)
	lastCollect = prometheus.NewDesc("petrel_last_collect_timestamp_seconds",
		"Time petreld collected the batch served now, for detecting a stalled collector.", nil, nil)
)

// describeAll sends every description the snapshot can contain.
func describeAll(ch chan<- *prometheus.Desc) {
	ch <- vmInfo
	ch <- ifInfo
	for _, f := range vmFamilies {
		ch <- f.desc
	}
	for _, f := range ifFamilies {
		ch <- f.desc
	}
	for _, f := range hostFamilies {
		ch <- f.desc
	}
	for _, f := range daemonFamilies {
		ch <- f.desc
	}
	for _, f := range sinkFamilies {
		ch <- f.desc
	}
	ch <- buildInfo
	ch <- vmsByState
	ch <- pluginRestarts
	ch <- lastCollect
}

// snapshot is the set of metrics built from one batch. It is immutable
// once built, so scrapes read it without locking.
type snapshot struct {
	metrics []prometheus.Metric
	// skipped counts samples left out (duplicates, labels that are not
	// valid UTF-8).
	skipped int
}

// Describe implements prometheus.Collector.
func (s *snapshot) Describe(ch chan<- *prometheus.Desc) { describeAll(ch) }

// Collect implements prometheus.Collector.
func (s *snapshot) Collect(ch chan<- prometheus.Metric) {
	for _, m := range s.metrics {
		ch <- m
	}
}

// buildSnapshot turns a batch into metrics. A VM or interface that
// appears twice keeps its first sample: Prometheus refuses a scrape with
// duplicate series, and one bad entry must not hide all the others.
func buildSnapshot(b *pluginv1.Batch) *snapshot {
	s := &snapshot{}
	add := func(desc *prometheus.Desc, vtype prometheus.ValueType, v float64, labels ...string) {
		for i := range labels {
			labels[i] = strings.ToValidUTF8(labels[i], "\uFFFD")
		}
		m, err := prometheus.NewConstMetric(desc, vtype, v, labels...)
		if err != nil {
			s.skipped++
			return
		}
		s.metrics = append(s.metrics, m)
	}
	seenVM := map[string]bool{}
	for _, vm := range b.GetVms() {
		name := vm.GetName()
		if seenVM[name] {
			s.skipped++
			continue
		}
		seenVM[name] = true
		add(vmInfo, gauge, 1, name, metrics.ParentPath(name), vm.GetBackend(), vm.GetState())
		for _, f := range vmFamilies {
			add(f.desc, f.vtype, f.value(vm), name)
		}
		seenIf := map[string]bool{}
		for _, ifc := range vm.GetInterfaces() {
			if seenIf[ifc.GetName()] {
				s.skipped++
				continue
			}
			seenIf[ifc.GetName()] = true
			add(ifInfo, gauge, 1, name, ifc.GetName(), ifc.GetHostIf(), ifc.GetBridge())
			for _, f := range ifFamilies {
				add(f.desc, f.vtype, f.value(ifc), name, ifc.GetName())
			}
		}
	}
	if h := b.GetHostSample(); h != nil {
		for _, f := range hostFamilies {
			add(f.desc, f.vtype, f.value(h))
		}
	}
	if d := b.GetDaemon(); d != nil {
		for _, f := range daemonFamilies {
			add(f.desc, f.vtype, f.value(d))
		}
		for state, n := range d.GetVmsByState() {
			add(vmsByState, gauge, float64(n), state)
		}
		for name, n := range d.GetPluginRestarts() {
			add(pluginRestarts, counter, float64(n), name)
		}
		add(buildInfo, gauge, 1, d.GetVersion(), d.GetGoVersion(), runtime.GOOS, runtime.GOARCH, version)
	}
	if sk := b.GetSink(); sk != nil {
		for _, f := range sinkFamilies {
			add(f.desc, f.vtype, f.value(sk), sk.GetName())
		}
	}
	if b.GetTimeNs() != 0 {
		add(lastCollect, gauge, secondsNs(b.GetTimeNs()))
	}
	return s
}
