package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// PullImage asks petreld to pull the unikernel an OCI reference names
// (registry/repository:tag or @sha256:digest) into its image store, which
// it does only when the store does not have the digest already; petreld
// reaches the registry with its own credentials and settings. progress,
// when not nil, is called as petreld receives the image. The result's
// Sha256 may be given to Create as ImageSha256, with the reference as
// ImageRef so that the VM records it; Create with ImageRef alone pulls
// too, without progress.
func (c *Client) PullImage(ctx context.Context, ref string, progress Progress) (*daemonv1.PulledImage, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.API.PullImage(ctx, &daemonv1.PullImageRequest{Ref: ref})
	if err != nil {
		return nil, err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("pull %s: petreld ended the pull without a result", ref)
		}
		if err != nil {
			return nil, err
		}
		if progress != nil {
			progress(msg.GetDone(), msg.GetTotal())
		}
		if img := msg.GetImage(); img != nil {
			return img, nil
		}
	}
}
