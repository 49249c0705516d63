// Command petrel-plugin-influx is Petrel's InfluxDB metrics sink. petreld
// starts it and calls Write once per collection interval; the plugin
// sends the batch as InfluxDB line protocol over HTTP (InfluxDB 1.x's
// /write endpoint), UDP or TCP, with the measurement, tag and field names
// documented in package sdk/metrics.
//
// Settings (all strings, from petreld's configuration):
//
//	protocol     "http" (default), "udp" or "tcp"
//	url          http: InfluxDB's base URL (default http://127.0.0.1:8086)
//	db           http: database to write to (required)
//	rp           http: retention policy (default: the database's default)
//	username     http: user for basic authentication (optional)
//	password     http: its password
//	address      udp, tcp: host:port of a line-protocol listener (required)
//	precision    timestamp precision: "ns" (default), "us", "ms" or "s"
//	timeout      bound on one Write, a Go duration (default "5s")
//	udp_payload  udp: largest datagram in bytes (default 1400)
//
// InfluxDB 1.x listens for UDP line protocol when its [[udp]] section is
// enabled (with a matching precision); TCP suits Telegraf's socket_listener
// and other line-protocol receivers.
package main

import "github.com/petrel-vmm/petrel/sdk/plugin"

func main() { plugin.ServeMetrics(newSink()) }
