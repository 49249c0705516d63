// Command petrel-plugin-influx is Petrel's InfluxDB metrics sink. petreld
// starts it and calls Write once per collection interval; the plugin
// sends the batch as InfluxDB line protocol over HTTP (InfluxDB 1.x's
// /write endpoint), UDP or TCP, with the measurement, tag and field names
// documented in package sdk/metrics.
//
// Settings (all strings, from petreld's configuration):
//
//	protocol        "http" (default), "udp" or "tcp"
//	url             http: InfluxDB's base URL (default http://127.0.0.1:8086)
//	db              http: database to write to (required; created if missing)
//	rp              http: retention policy (default: the database's default)
//	username        http: user for basic authentication (optional)
//	password        http: its password
//	address         udp, tcp: host:port of a line-protocol listener (required)
//	precision       timestamp precision: "ns" (default), "us", "ms" or "s"
//	timeout         bound on one Write, a Go duration (default "5s")
//	udp_payload     udp: largest datagram in bytes (default 1400)
//	buffer_mb       size of the buffer for batches the destination cannot
//	                take now, in MiB on disk (default 64; "0": none)
//	buffer_max_age  how long a batch may wait in the buffer (default "24h")
//
// Over HTTP, a database that does not exist is created (CREATE DATABASE,
// which InfluxDB allows without authentication or to an admin) at the
// first write; where the user may not create it, the error, in petreld's
// log and in `petrel plugins`, names the command that does.
//
// While the destination is down, batches wait in the buffer of package
// sdk/metrics/buffer, on disk under the state directory petreld gives
// the plugin (<data_dir>/plugins/influx/buffer), so a restart of the
// plugin, of petreld or of the host during the outage loses nothing; they
// are written in order once it is back. Health turns degraded while
// writes fail, unhealthy while batches are being lost, with the last
// error; every batch carries petrel_sink with what the buffer held and
// what was lost.
//
// InfluxDB 1.x listens for UDP line protocol when its [[udp]] section is
// enabled (with a matching precision); TCP suits Telegraf's socket_listener
// and other line-protocol receivers. UDP delivery is unconfirmed, so only
// a refused datagram (the port closed) keeps a batch in the buffer.
package main

import "github.com/petrel-vmm/petrel/sdk/petrelplugin"

func main() { petrelplugin.ServeMetrics(newPlugin()) }
