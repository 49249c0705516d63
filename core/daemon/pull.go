package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/sdk/oci"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// Pulling: petreld, not the client, fetches images named by OCI
// references, so that remote callers and node agents need only name a
// reference, and a host fetches each digest once: the layer digest of a
// unikernel artifact is the SHA-256 the image store names it by, and an
// image the store has is claimed, not fetched (sdk/oci documents the
// artifact layout). A pulled image counts against the image storage of
// the caller's domain exactly as an upload does (images.go): its size,
// from the manifest, is reserved before the first byte is fetched, and
// the content is hashed and compared with the manifest before it is
// kept.

// ociOptions says how petreld reaches registries (insecure_registries,
// registry_config).
func (d *Daemon) ociOptions() oci.Options {
	return oci.Options{InsecureRegistries: d.cfg.InsecureRegistries, ConfigFile: d.cfg.RegistryConfig}
}

// allowRegistry checks that ref parses and names a registry this host
// pulls from (allowed_registries; an empty list allows every one), before
// anything is asked of the registry.
func (d *Daemon) allowRegistry(ref string) error {
	r, err := oci.ParseReference(ref)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	allowed := d.cfg.AllowedRegistries
	if len(allowed) == 0 {
		return nil
	}
	for _, h := range allowed {
		if strings.EqualFold(h, r.Registry) {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "%s: this host does not pull from the registry %s (allowed_registries in petreld's configuration: %s)",
		ref, r.Registry, strings.Join(allowed, ", "))
}

// registryError turns an error of talking to a registry into the status
// a caller sees.
func registryError(ref string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	var resp *errcode.ErrorResponse
	switch {
	case errors.Is(err, oci.ErrNotUnikernel):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errdef.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: %v", ref, err)
	case errors.Is(err, auth.ErrBasicCredentialNotFound),
		errors.As(err, &resp) && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden):
		return status.Errorf(codes.PermissionDenied, "registry refused access to %s (credentials come from petreld's registry_config): %v", ref, err)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "registry of %s: %v", ref, err)
	}
	return status.Errorf(codes.Unavailable, "registry of %s: %v", ref, err)
}

// pull resolves ref and keeps the unikernel it names in the store for
// domain: claimed when the store has its digest, else fetched, verified
// and stored. progress, when not nil, is called as bytes arrive.
func (d *Daemon) pull(ctx context.Context, domain name.Path, ref string, progress func(done, total int64)) (*daemonv1.PulledImage, error) {
	if err := d.allowRegistry(ref); err != nil {
		return nil, err
	}
	opts := d.ociOptions()
	a, err := oci.Resolve(ctx, ref, opts)
	if err != nil {
		return nil, registryError(ref, err)
	}
	out := &daemonv1.PulledImage{Sha256: a.SHA256(), Size: a.Image.Size, Pinned: a.Pinned,
		ManifestDigest: a.Manifest.String(), Target: a.Target, Abi: a.ABI}
	if a.Image.Size > MaxImageBytes {
		return nil, status.Errorf(codes.InvalidArgument, "%s: image of %d bytes exceeds the limit of %d bytes", ref, a.Image.Size, MaxImageBytes)
	}
	d.collectImages()
	if _, ok, err := d.claimKnown(domain, a.SHA256()); err != nil || ok {
		return out, err
	}
	id, limit, err := d.admitUpload(domain, a.Image.Size)
	if err != nil {
		return nil, err
	}
	defer d.release(id)
	rc, err := oci.Open(ctx, a, opts)
	if err != nil {
		return nil, registryError(ref, err)
	}
	defer rc.Close()
	var r io.Reader = rc
	if progress != nil {
		r = &countingReader{r: rc, total: a.Image.Size, report: progress}
	}
	st, err := d.store.StageImage(r, max(limit, 1))
	if err != nil {
		if errors.Is(err, store.ErrTooLarge) {
			return nil, status.Errorf(codes.InvalidArgument, "image of %s: digest mismatch: the registry sent more than the %d bytes its manifest says", a.Pinned, a.Image.Size)
		}
		return nil, registryError(ref, err)
	}
	defer st.Discard()
	if err := oci.Verify(a, st.SHA256, st.Size); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, err := d.commitUpload(domain, st, id); err != nil {
		return nil, err
	}
	out.Fetched = true
	return out, nil
}

// countingReader reports the bytes read, at most every progressEvery.
type countingReader struct {
	r      io.Reader
	n      int64
	total  int64
	last   time.Time
	report func(done, total int64)
}

// progressEvery spaces progress messages, so a fast pull is not slowed by
// them.
const progressEvery = 100 * time.Millisecond

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if now := time.Now(); n > 0 && (now.Sub(c.last) >= progressEvery || c.n == c.total) {
		c.last = now
		c.report(c.n, c.total)
	}
	return n, err
}

// PullImage pulls an image named by an OCI reference into the store for
// the caller's domain (see pull), streaming progress, then the result.
func (s *server) PullImage(req *daemonv1.PullImageRequest, stream daemonv1.Daemon_PullImageServer) error {
	domain := callerDomain(authz.IdentityFrom(stream.Context()))
	var sendErr error
	img, err := s.d.pull(stream.Context(), domain, req.GetRef(), func(done, total int64) {
		if sendErr == nil {
			sendErr = stream.Send(&daemonv1.PullProgress{Done: done, Total: total})
		}
	})
	if err != nil {
		return err
	}
	if sendErr != nil {
		return sendErr
	}
	return stream.Send(&daemonv1.PullProgress{Done: img.GetSize(), Total: img.GetSize(), Image: img})
}

// pullForCreate pulls the image of a create that names a reference and
// fills in its digest. A digest given as well must be the one the
// reference names (clients that pulled first, to show progress, give
// both).
func (s *server) pullForCreate(ctx context.Context, caller name.Path, req *daemonv1.CreateRequest) (*daemonv1.PulledImage, error) {
	img, err := s.d.pull(ctx, caller, req.GetImageRef(), nil)
	if err != nil {
		return nil, err
	}
	if want := req.GetImageSha256(); want != "" && want != img.GetSha256() {
		return nil, status.Errorf(codes.FailedPrecondition, "%s names image sha256:%s now, not the sha256:%s given (the tag moved?)",
			req.GetImageRef(), img.GetSha256(), want)
	}
	req.ImageSha256 = img.GetSha256()
	return img, nil
}

// fmtPulled describes a pulled image for messages.
func fmtPulled(img *daemonv1.PulledImage) string {
	return fmt.Sprintf("%s (image sha256:%s)", img.GetPinned(), img.GetSha256())
}
