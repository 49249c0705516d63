package client

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

func TestUnknownImages(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "unknown digest").WithDetails(&daemonv1.UnknownImage{Sha256: []string{"aa", "bb"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := UnknownImages(st.Err()); !reflect.DeepEqual(got, []string{"aa", "bb"}) {
		t.Fatalf("UnknownImages of the refusal = %v", got)
	}
	for _, err := range []error{nil, errors.New("plain"), status.Error(codes.InvalidArgument, "bad name")} {
		if got := UnknownImages(err); got != nil {
			t.Fatalf("UnknownImages(%v) = %v, want nil", err, got)
		}
	}
}

func TestHashFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	content := []byte("not really a unikernel")
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	if got, err := HashFile(p); err != nil || got != hex.EncodeToString(sum[:]) {
		t.Fatalf("HashFile = %q, %v", got, err)
	}
	if _, err := HashFile(dir); err == nil {
		t.Fatal("HashFile of a directory succeeded")
	}
	if _, err := HashFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("HashFile of a missing file: %v", err)
	}
}
