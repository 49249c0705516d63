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
package main

import "github.com/petrel-vmm/petrel/sdk/plugin"

func main() { plugin.ServeMetrics(newSink()) }
