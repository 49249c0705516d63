package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// DaemonUploader uploads image files over any daemon client, the local
// socket's or the endpoint's. It sends the file's digest first, so
// petreld answers at once when it holds those bytes already.
type DaemonUploader struct {
	// Daemon is petreld.
	Daemon daemonv1.DaemonClient
}

// uploadChunk is the size of each upload message.
const uploadChunk = 1 << 20

// UploadImageFile uploads the file at path; progress is not reported.
func (u DaemonUploader) UploadImageFile(ctx context.Context, path string, _ func(sent, total int64)) (*daemonv1.ImageRef, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind %s: %w", path, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := u.Daemon.UploadImage(ctx)
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", path, err)
	}
	first := &daemonv1.ImageChunk{Size: size, Sha256: hex.EncodeToString(h.Sum(nil))}
	buf := make([]byte, uploadChunk)
	for {
		n, rerr := f.Read(buf)
		if n > 0 || first != nil {
			msg := first
			if msg == nil {
				msg = &daemonv1.ImageChunk{}
			}
			first = nil
			msg.Data = append([]byte(nil), buf[:n]...)
			if err := stream.Send(msg); err != nil {
				// The daemon may have answered early (it knew the
				// digest): the answer is in CloseAndRecv.
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("upload %s: %w", path, err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("read %s: %w", path, rerr)
		}
	}
	ref, err := stream.CloseAndRecv()
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", path, err)
	}
	return ref, nil
}
