package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// createAttempts bounds the creates of CreateFromFiles: the first names
// digests only, the next follow uploads. A third covers an image that
// petreld collected (nothing held it) between the first create and the
// second.
const createAttempts = 3

// UnknownImages returns the image digests that err, an error of Create,
// names as not held by petreld's image store (daemonv1.UnknownImage), or
// nil when err is not that refusal.
func UnknownImages(err error) []string {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return nil
	}
	for _, d := range st.Details() {
		if u, ok := d.(*daemonv1.UnknownImage); ok {
			return u.GetSha256()
		}
	}
	return nil
}

// HashFile returns the SHA-256 of the regular file at path, in lowercase
// hex, as petreld's image store names images.
func HashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CreateFromFiles creates the VM req describes from local files: image,
// and initrd unless it is empty, whose digests it sets in req. It sends
// their digests, not their content: only when petreld answers that it
// does not hold one (UnknownImages) is that file uploaded, and the create
// sent again. Deploying an image petreld holds already (a re-deploy, or
// another VM's) therefore costs one call and no transfer; the create is
// checked against the caller's policies either way. image is empty when
// req names its image otherwise (ImageRef, a registry reference petreld
// pulls). progress, when not nil, gives the progress callback of each
// upload (it may return nil).
func (c *Client) CreateFromFiles(ctx context.Context, req *daemonv1.CreateRequest, image, initrd string, progress func(path string) func(sent, total int64)) (*daemonv1.VM, error) {
	files := map[string]string{}
	if image != "" {
		sha, err := HashFile(image)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", image, err)
		}
		req.ImageSha256, files[sha] = sha, image
	}
	if initrd != "" {
		isha, err := HashFile(initrd)
		if err != nil {
			return nil, fmt.Errorf("initrd %s: %w", initrd, err)
		}
		req.InitrdSha256, files[isha] = isha, initrd
	}
	for attempt := 1; ; attempt++ {
		// A copy each time: interceptors may rewrite what they send (the
		// CLI's remote mode makes names absolute).
		vm, err := c.API.Create(ctx, proto.Clone(req).(*daemonv1.CreateRequest))
		missing := UnknownImages(err)
		if missing == nil || attempt == createAttempts {
			return vm, err
		}
		for _, m := range missing {
			path, ok := files[m]
			if !ok {
				return nil, err // not a digest this create sent
			}
			var p func(sent, total int64)
			if progress != nil {
				p = progress(path)
			}
			if _, err := c.uploadImageFile(ctx, path, m, p); err != nil {
				if _, ok := status.FromError(err); ok {
					return nil, err
				}
				return nil, fmt.Errorf("upload %s: %w", path, err)
			}
		}
	}
}
