package main

import (
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/petrel-vmm/petrel/sdk/metrics"
)

// config is the validated form of the plugin's settings.
type config struct {
	protocol string
	// http
	url                        *url.URL
	db, rp, username, password string
	// udp, tcp
	address    string
	udpPayload int
	// all
	precision lineprotocol.Precision
	// precisionParam is the precision as InfluxDB's /write spells it.
	precisionParam string
	timeout        time.Duration
}

// settingsFor lists which settings each protocol understands, so a typo or
// a setting meant for another protocol is refused instead of ignored.
var settingsFor = map[string][]string{
	"http": {"protocol", "url", "db", "rp", "username", "password", "precision", "timeout"},
	"udp":  {"protocol", "address", "precision", "timeout", "udp_payload"},
	"tcp":  {"protocol", "address", "precision", "timeout"},
}

var precisions = map[string]struct {
	p     lineprotocol.Precision
	param string
}{
	"ns": {lineprotocol.Nanosecond, "n"},
	"us": {lineprotocol.Microsecond, "u"},
	"ms": {lineprotocol.Millisecond, "ms"},
	"s":  {lineprotocol.Second, "s"},
}

// invalid wraps a settings problem in metrics.ErrInvalid.
func invalid(format string, args ...any) error {
	return fmt.Errorf("influx: "+format+": %w", append(args, metrics.ErrInvalid)...)
}

// parseConfig validates settings and fills in defaults.
func parseConfig(settings map[string]string) (config, error) {
	c := config{protocol: "http", timeout: 5 * time.Second, udpPayload: 1400}
	if p, ok := settings["protocol"]; ok {
		c.protocol = strings.ToLower(p)
	}
	known, ok := settingsFor[c.protocol]
	if !ok {
		return c, invalid("protocol %q is not one of http, udp, tcp", settings["protocol"])
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !contains(known, k) {
			return c, invalid("setting %q does not apply to protocol %s (known: %s)", k, c.protocol, strings.Join(known, ", "))
		}
	}

	pr := settings["precision"]
	if pr == "" {
		pr = "ns"
	}
	p, ok := precisions[pr]
	if !ok {
		return c, invalid("precision %q is not one of ns, us, ms, s", pr)
	}
	c.precision, c.precisionParam = p.p, p.param

	if s, ok := settings["timeout"]; ok {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return c, invalid("timeout %q is not a positive duration such as \"5s\"", s)
		}
		c.timeout = d
	}

	switch c.protocol {
	case "http":
		raw := settings["url"]
		if raw == "" {
			raw = "http://127.0.0.1:8086"
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			return c, invalid("url %q is not an http:// or https:// base URL such as http://127.0.0.1:8086", raw)
		}
		c.url = u
		c.db, c.rp = settings["db"], settings["rp"]
		if c.db == "" {
			return c, invalid("setting db (the database to write to) is required for protocol http")
		}
		c.username, c.password = settings["username"], settings["password"]
		if c.password != "" && c.username == "" {
			return c, invalid("setting password needs username")
		}
	case "udp", "tcp":
		c.address = settings["address"]
		if c.address == "" {
			return c, invalid("setting address (host:port) is required for protocol %s", c.protocol)
		}
		host, port, err := net.SplitHostPort(c.address)
		if err != nil || host == "" || port == "" {
			return c, invalid("address %q is not host:port", c.address)
		}
		if s, ok := settings["udp_payload"]; ok {
			n, err := strconv.Atoi(s)
			if err != nil || n < 512 || n > 65507 {
				return c, invalid("udp_payload %q is not a datagram size between 512 and 65507 bytes", s)
			}
			c.udpPayload = n
		}
	}
	return c, nil
}

// destination names where the sink writes, for messages.
func (c config) destination() string {
	if c.protocol == "http" {
		return c.url.Redacted()
	}
	return c.protocol + "://" + c.address
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
