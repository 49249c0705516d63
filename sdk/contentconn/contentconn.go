// Package contentconn is the connection beside a gRPC call on which a
// remote client moves a transfer's content to or from petrel-endpoint.
//
// Through the endpoint, a block device's or an image's content would
// otherwise travel in gRPC messages: framed into HTTP/2 frames of 16 KiB
// by the client, and taken out of them again by the endpoint, which on a
// small host costs about as much CPU as TLS and hashing together. A
// content connection carries the bytes as they are, in TLS records only.
//
// The client opens a second TLS connection to the endpoint with the same
// certificate, offering only the application protocol Protocol (ALPN),
// and writes a fresh token on it (TokenLen lowercase hex characters).
// It then makes the transfer call as usual, naming the token in the
// request's local_file field, and writes the content on the connection
// (an upload: exactly the size the request declares, or, compressed, in
// the frames of package sdk/transfer through their ending frame) or
// reads it from there (a download) until its end; the checksum and the
// call's end, which say whether the content is whole, still travel on
// the call. The endpoint takes an upload as ended only by its size or
// its ending frame: TLS does not tell a connection its client closed
// from a finished content. The endpoint pairs the call with the
// connection only when both were opened with the same client
// certificate. An endpoint that does not offer Protocol fails the
// handshake, and the client streams the content through the call
// instead.
package contentconn

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
)

// Protocol is the ALPN protocol name of a content connection, with its
// version.
const Protocol = "petrel-content/1"

// TokenLen is the length of a token: 16 random bytes in lowercase hex.
const TokenLen = 32

// Conn is the client's end of a content connection.
type Conn struct {
	*tls.Conn
	raw net.Conn
	// Token names the connection in the transfer request.
	Token string
}

// Dial opens a content connection to the endpoint at addr (HOST:PORT)
// with cfg, the client's mutual TLS configuration (a copy offering only
// Protocol is used), and writes its token.
func Dial(ctx context.Context, addr string, cfg *tls.Config) (*Conn, error) {
	var b [TokenLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("content connection token: %w", err)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("content connection to %s: %w", addr, err)
	}
	c := cfg.Clone()
	c.NextProtos = []string{Protocol}
	tc := tls.Client(raw, c)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("content connection to %s: %w", addr, err)
	}
	if tc.ConnectionState().NegotiatedProtocol != Protocol {
		raw.Close()
		return nil, fmt.Errorf("content connection to %s: the endpoint does not speak %s", addr, Protocol)
	}
	tok := hex.EncodeToString(b[:])
	if _, err := io.WriteString(tc, tok); err != nil {
		raw.Close()
		return nil, fmt.Errorf("content connection to %s: %w", addr, err)
	}
	return &Conn{Conn: tc, raw: raw, Token: tok}, nil
}

// Abort closes the connection without TLS's closing alert: the content
// was cut, and the endpoint, which then reads an error rather than the
// content's end, must not take it for whole. (The call, which the client
// cancels too, is what decides in the end: nothing is stored unless it
// ends whole.)
func (c *Conn) Abort() { c.raw.Close() }

// ReadToken reads the token that opens a content connection: the
// endpoint's end.
func ReadToken(r io.Reader) (string, error) {
	var b [TokenLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("content connection token: %w", err)
	}
	if !ValidToken(string(b[:])) {
		return "", errors.New("content connection token: not lowercase hex")
	}
	return string(b[:]), nil
}

// ValidToken tells whether tok is a token as Dial writes it: TokenLen
// lowercase hex characters.
func ValidToken(tok string) bool {
	v, err := hex.DecodeString(tok)
	return err == nil && len(tok) == TokenLen && hex.EncodeToString(v) == tok
}
