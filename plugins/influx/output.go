package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/petrel-vmm/petrel/sdk/metrics"
)

// output delivers encoded lines to one destination. send gets complete
// lines and a context bounded by the configured timeout; it returns an
// error wrapping metrics.ErrUnavailable when the destination cannot be
// reached. output methods are called with the sink's lock held, except
// probe, which must be safe to call concurrently with send.
type output interface {
	send(ctx context.Context, lines []byte) error
	// probe checks the destination without sending data and returns a
	// one-line description and attributes for Fingerprint.
	probe(ctx context.Context) (string, map[string]string, error)
	close() error
}

func newOutput(c config, log hclog.Logger) output {
	switch c.protocol {
	case "udp":
		return &udpOutput{c: c}
	case "tcp":
		return &tcpOutput{c: c}
	}
	return newHTTPOutput(c, log)
}

// unavailable wraps a delivery problem in metrics.ErrUnavailable.
func unavailable(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, metrics.ErrUnavailable)...)
}

// httpOutput posts to InfluxDB 1.x's /write endpoint, creating the
// database when the server says it is missing. Its transport keeps
// connections alive between intervals and redials by itself.
type httpOutput struct {
	c         config
	log       hclog.Logger
	client    *http.Client
	transport *http.Transport
	writeURL  string
	queryURL  string
	pingURL   string
}

func newHTTPOutput(c config, log hclog.Logger) *httpOutput {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: c.timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          2,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   c.timeout,
		ResponseHeaderTimeout: c.timeout,
	}
	q := url.Values{"db": {c.db}, "precision": {c.precisionParam}}
	if c.rp != "" {
		q.Set("rp", c.rp)
	}
	base := strings.TrimRight(c.url.String(), "/")
	return &httpOutput{
		c:         c,
		log:       log,
		client:    &http.Client{Transport: tr},
		transport: tr,
		writeURL:  base + "/write?" + q.Encode(),
		queryURL:  base + "/query",
		pingURL:   base + "/ping",
	}
}

// send writes lines. When InfluxDB answers that the database does not
// exist, send creates it and writes again; where the server does not let
// the configured user create it, the error says how to.
//
// Errors that may pass are ErrUnavailable, so the buffer keeps the batch:
// a server down or overloaded, and also a missing database or refused
// credentials, which an operator fixes without the data being at fault.
// A request InfluxDB refuses for its content (400: a field whose type
// conflicts with what the database holds) is not: sending it again would
// fail again.
func (o *httpOutput) send(ctx context.Context, lines []byte) error {
	status, msg, err := o.post(ctx, lines)
	if err == nil && status == http.StatusNotFound && strings.Contains(msg, "database not found") {
		if err := o.createDB(ctx); err != nil {
			return err
		}
		status, msg, err = o.post(ctx, lines)
	}
	switch {
	case err != nil:
		return unavailable("write to %s: %v", o.c.destination(), err)
	case status/100 == 2:
		return nil
	case status >= 500 || status == http.StatusTooManyRequests || status == http.StatusNotFound:
		return unavailable("write to %s (db %q): %d %s: %s", o.c.destination(), o.c.db, status, http.StatusText(status), msg)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return unavailable("write to %s (db %q) as %s: %d %s: %s; check the settings username and password, and that the user may write to the database",
			o.c.destination(), o.c.db, o.user(), status, http.StatusText(status), msg)
	}
	return fmt.Errorf("write to %s (db %q): %d %s: %s", o.c.destination(), o.c.db, status, http.StatusText(status), msg)
}

// post sends one request to /write and returns InfluxDB's status and
// message.
func (o *httpOutput) post(ctx context.Context, lines []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.writeURL, bytes.NewReader(lines))
	if err != nil {
		return 0, "", fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	return o.do(req)
}

// do runs req with the configured credentials and reads InfluxDB's
// answer: the status and the message of its JSON error, if any.
func (o *httpOutput) do(req *http.Request) (int, string, error) {
	if o.c.username != "" {
		req.SetBasicAuth(o.c.username, o.c.password)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, influxError(body), nil
}

// influxError extracts the message of InfluxDB's error answers,
// {"error": "..."} at the top or in a statement's result: "" for JSON
// without one, and the body as text when it is not JSON (a proxy's page).
func influxError(body []byte) string {
	var r struct {
		Error   string
		Results []struct{ Error string }
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return string(bytes.TrimSpace(body))
	}
	for _, res := range r.Results {
		if r.Error == "" {
			r.Error = res.Error
		}
	}
	return r.Error
}

// createDB creates the configured database with CREATE DATABASE over
// /query, which InfluxDB allows without authentication or for an admin
// user. CREATE DATABASE of an existing database succeeds and changes
// nothing, so two sinks racing to create it are harmless.
func (o *httpOutput) createDB(ctx context.Context) error {
	stmt := "CREATE DATABASE " + quoteIdent(o.c.db)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.queryURL, strings.NewReader(url.Values{"q": {stmt}}.Encode()))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	status, msg, err := o.do(req)
	switch {
	case err != nil:
		return unavailable("create database %q at %s: %v", o.c.db, o.c.destination(), err)
	case status/100 == 2 && msg == "":
		o.log.Info("created the database, which did not exist", "db", o.c.db, "url", o.c.destination())
		return nil
	case status >= 500:
		return unavailable("create database %q at %s: %d %s: %s", o.c.db, o.c.destination(), status, http.StatusText(status), msg)
	}
	return unavailable("database %q does not exist at %s and %s may not create it (%d %s: %s); create it as an InfluxDB admin with  influx -execute '%s'  or set db to an existing database",
		o.c.db, o.c.destination(), o.user(), status, http.StatusText(status), msg, stmt)
}

// user names the configured InfluxDB user for messages.
func (o *httpOutput) user() string {
	if o.c.username == "" {
		return "an anonymous user"
	}
	return fmt.Sprintf("user %q", o.c.username)
}

// quoteIdent quotes an InfluxQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func (o *httpOutput) probe(ctx context.Context) (string, map[string]string, error) {
	attrs := map[string]string{"protocol": "http", "url": o.c.url.Redacted(), "db": o.c.db}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.pingURL, nil)
	if err != nil {
		return "", attrs, fmt.Errorf("build request for %s: %w", o.pingURL, err)
	}
	if o.c.username != "" {
		req.SetBasicAuth(o.c.username, o.c.password)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return "", attrs, unavailable("ping %s: %v", o.c.destination(), err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "", attrs, unavailable("ping %s: %s", o.c.destination(), resp.Status)
	}
	v := resp.Header.Get("X-Influxdb-Version")
	if v != "" {
		attrs["influxdb.version"] = v
	}
	return fmt.Sprintf("InfluxDB %s at %s, database %s", v, o.c.destination(), o.c.db), attrs, nil
}

func (o *httpOutput) close() error {
	o.transport.CloseIdleConnections()
	return nil
}

// udpOutput sends datagrams of whole lines to a connected UDP socket.
// Delivery is unconfirmed; the kernel reports a closed port on a later
// send (ECONNREFUSED), which surfaces as ErrUnavailable.
type udpOutput struct {
	c    config
	conn net.Conn
}

func (o *udpOutput) send(ctx context.Context, lines []byte) error {
	if o.conn == nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "udp", o.c.address)
		if err != nil {
			return unavailable("dial %s: %v", o.c.destination(), err)
		}
		o.conn = conn
	}
	if dl, ok := ctx.Deadline(); ok {
		o.conn.SetWriteDeadline(dl)
	}
	for _, dgram := range datagrams(lines, o.c.udpPayload) {
		if _, err := o.conn.Write(dgram); err != nil {
			return unavailable("send to %s: %v", o.c.destination(), err)
		}
	}
	return nil
}

func (o *udpOutput) probe(context.Context) (string, map[string]string, error) {
	return "sending UDP line protocol to " + o.c.address + " (delivery unconfirmed)",
		map[string]string{"protocol": "udp", "address": o.c.address}, nil
}

func (o *udpOutput) close() error {
	if o.conn == nil {
		return nil
	}
	err := o.conn.Close()
	o.conn = nil
	return err
}

// datagrams splits lines at line boundaries into chunks of at most max
// bytes; a single longer line travels alone.
func datagrams(lines []byte, max int) [][]byte {
	var out [][]byte
	for len(lines) > 0 {
		end := 0
		for end < len(lines) {
			nl := bytes.IndexByte(lines[end:], '\n')
			next := len(lines)
			if nl >= 0 {
				next = end + nl + 1
			}
			if end > 0 && next > max {
				break
			}
			end = next
		}
		out = append(out, lines[:end])
		lines = lines[end:]
	}
	return out
}

// tcpOutput streams lines over one long-lived TCP connection and redials
// when the peer has gone away.
type tcpOutput struct {
	c    config
	conn net.Conn
}

func (o *tcpOutput) send(ctx context.Context, lines []byte) error {
	if o.conn != nil && peerClosed(o.conn) {
		o.conn.Close()
		o.conn = nil
	}
	if o.conn == nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", o.c.address)
		if err != nil {
			return unavailable("connect to %s: %v", o.c.destination(), err)
		}
		o.conn = conn
	}
	if dl, ok := ctx.Deadline(); ok {
		o.conn.SetWriteDeadline(dl)
	}
	if _, err := o.conn.Write(lines); err != nil {
		o.conn.Close()
		o.conn = nil
		return unavailable("send to %s: %v", o.c.destination(), err)
	}
	return nil
}

// peerClosed reports whether the other end closed or reset conn. The
// receivers never send anything, so a zero-byte peek (end of stream) or an
// error other than "nothing to read" means the connection is gone; without
// this check the first batch after a receiver restart would vanish into a
// dead socket.
func peerClosed(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = (n == 0 && err == nil) || (err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR))
		return true
	})
	return closed || err != nil
}

func (o *tcpOutput) probe(ctx context.Context) (string, map[string]string, error) {
	attrs := map[string]string{"protocol": "tcp", "address": o.c.address}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", o.c.address)
	if err != nil {
		return "", attrs, unavailable("connect to %s: %v", o.c.destination(), err)
	}
	conn.Close()
	return "sending TCP line protocol to " + o.c.address, attrs, nil
}

func (o *tcpOutput) close() error {
	if o.conn == nil {
		return nil
	}
	err := o.conn.Close()
	o.conn = nil
	return err
}
