package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var errBad = errors.New("bad request")

func TestRoundTrip(t *testing.T) {
	cs := Classes{{errBad, codes.InvalidArgument}}
	for _, class := range []error{errBad, context.Canceled, context.DeadlineExceeded} {
		err := fmt.Errorf("doing it: %w", class)
		back := cs.FromStatus(cs.ToStatus(err), "plugin")
		if !errors.Is(back, class) || back.Error() != err.Error() {
			t.Errorf("%v came back as %v", err, back)
		}
	}
	plain := cs.FromStatus(cs.ToStatus(errors.New("boom")), "plugin")
	if plain.Error() != "boom" || errors.Is(plain, errBad) {
		t.Errorf("unclassified: %v", plain)
	}
	other := cs.FromStatus(status.Error(codes.Unavailable, "connection lost"), "plugin")
	if other.Error() != "plugin: connection lost" || !errors.Is(other, ErrUnreachable) {
		t.Errorf("transport error: %v", other)
	}
	nested := status.Error(codes.NotFound, "gone")
	if got := cs.ToStatus(nested); status.Code(got) != codes.NotFound {
		t.Errorf("nested status lost its code: %v", got)
	}
	if cs.ToStatus(nil) != nil || cs.FromStatus(nil, "x") != nil {
		t.Error("nil not preserved")
	}
}
