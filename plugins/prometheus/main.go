// Command petrel-plugin-prometheus is Petrel's Prometheus metrics sink.
// petreld starts it and calls Write once per collection interval; the
// plugin serves the latest batch on an HTTP endpoint for Prometheus to
// scrape. Each Write replaces the whole snapshot, so VMs that were
// destroyed disappear from the next scrape.
//
// Settings (all strings, from petreld's configuration):
//
//	address  host:port to listen on (default 127.0.0.1:9464)
//	path     URL path of the metrics (default /metrics)
//
// Metric names follow Prometheus conventions (base units, _total for
// counters); see collector.go for the full list. The batch's host name is
// not a label: Prometheus attaches the scraped instance itself.
// petrel_sink_dropped_batches_total{sink="prometheus"} counts the batches
// petreld could not hand to this plugin; the plugin needs no buffer (an
// outage of Prometheus costs scrapes, which Prometheus notices itself), so
// petrel_sink_queued_batches is 0. petrel_build_info carries petreld's
// version and Go release, and the plugin's version, as labels.
package main

import "github.com/petrel-vmm/petrel/sdk/petrelplugin"

func main() { petrelplugin.ServeMetrics(newSink()) }
