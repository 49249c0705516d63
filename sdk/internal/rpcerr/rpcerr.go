// Package rpcerr carries error classes across the gRPC boundary between
// petreld and its plugins. Each plugin service defines sentinel errors
// (invalid request, unavailable backend, ...) and a table mapping them to
// status codes; a server turns its errors into statuses with ToStatus, and
// the client turns statuses back into errors that match the same
// sentinels with errors.Is, keeping the remote message.
package rpcerr

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrUnreachable marks a call that did not reach the plugin, or whose
// answer never came back, because the connection failed: the plugin
// process exited, crashed or is being restarted (gRPC's Unavailable). The
// plugin may or may not have acted on the request, so only a request that
// is safe to repeat may be retried, once a new plugin process serves.
var ErrUnreachable = errors.New("plugin unreachable")

// Class maps a sentinel error to a status code.
type Class struct {
	Err  error
	Code codes.Code
}

// Classes is a service's table; context cancellation and deadlines are
// always added.
type Classes []Class

var always = Classes{{context.Canceled, codes.Canceled}, {context.DeadlineExceeded, codes.DeadlineExceeded}}

// ToStatus maps err to a gRPC status whose code says its class. An error
// that already is a status (from a nested call) keeps its code unless it
// matches a class.
func (cs Classes) ToStatus(err error) error {
	if err == nil {
		return nil
	}
	for _, c := range append(cs, always...) {
		if errors.Is(err, c.Err) {
			return status.Error(c.Code, err.Error())
		}
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unknown, err.Error())
}

// classError carries a remote message while matching a local class.
type classError struct {
	msg   string
	class error
}

func (e *classError) Error() string { return e.msg }
func (e *classError) Unwrap() error { return e.class }

// FromStatus turns a status back into an error of the right class; what
// (e.g. "network plugin") prefixes messages of unclassified codes.
func (cs Classes) FromStatus(err error, what string) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, c := range append(cs, always...) {
		if st.Code() == c.Code {
			return &classError{msg: st.Message(), class: c.Err}
		}
	}
	if st.Code() == codes.Unknown {
		return errors.New(st.Message())
	}
	if st.Code() == codes.Unavailable {
		return &classError{msg: what + ": " + st.Message(), class: ErrUnreachable}
	}
	return fmt.Errorf("%s: %s", what, st.Message())
}
