package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

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

func newOutput(c config) output {
	switch c.protocol {
	case "udp":
		return &udpOutput{c: c}
	case "tcp":
		return &tcpOutput{c: c}
	}
	return newHTTPOutput(c)
}

// unavailable wraps a delivery problem in metrics.ErrUnavailable.
func unavailable(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, metrics.ErrUnavailable)...)
}

// httpOutput posts to InfluxDB 1.x's /write endpoint. Its transport keeps
// connections alive between intervals and redials by itself.
type httpOutput struct {
	c         config
	client    *http.Client
	transport *http.Transport
	writeURL  string
	pingURL   string
}

func newHTTPOutput(c config) *httpOutput {
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
		client:    &http.Client{Transport: tr},
		transport: tr,
		writeURL:  base + "/write?" + q.Encode(),
		pingURL:   base + "/ping",
	}
}

func (o *httpOutput) send(ctx context.Context, lines []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.writeURL, bytes.NewReader(lines))
	if err != nil {
		return fmt.Errorf("build request for %s: %w", o.c.destination(), err)
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	if o.c.username != "" {
		req.SetBasicAuth(o.c.username, o.c.password)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return unavailable("write to %s: %v", o.c.destination(), err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return unavailable("write to %s: %s: %s", o.c.destination(), resp.Status, bytes.TrimSpace(msg))
	}
	return fmt.Errorf("write to %s (db %q): %s: %s", o.c.destination(), o.c.db, resp.Status, bytes.TrimSpace(msg))
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
