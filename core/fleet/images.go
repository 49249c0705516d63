package fleet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// ImageResolver makes the image a pod names available to petreld and
// fills in what the create request needs to name it. The agent calls it
// before every create; it must be safe for concurrent use.
//
// RegistryImages passes the reference to petreld, which pulls it;
// FileImages serves a local-file form for hosts without a registry.
type ImageResolver interface {
	Resolve(ctx context.Context, ref string, req *daemonv1.CreateRequest) error
}

// Uploader is the part of sdk/client.Client that FileImages needs.
type Uploader interface {
	UploadImageFile(ctx context.Context, path string, progress func(sent, total int64)) (*daemonv1.ImageRef, error)
}

// FileImages maps an image reference to a file in Dir and uploads it to
// petreld (which answers at once when it has those bytes already):
// "REGISTRY/PATH/NAME:TAG" is Dir/NAME.TAG, and "NAME" without a tag is
// Dir/NAME. So "local/hello:spt" is Dir/hello.spt.
type FileImages struct {
	// Dir holds the image files.
	Dir string
	// Upload sends a file to petreld.
	Upload Uploader
}

// FilePath is the file a reference names, or an error when the reference
// is not of the local-file form.
func (f FileImages) FilePath(ref string) (string, error) {
	base := ref
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	if at := strings.IndexByte(base, '@'); at >= 0 {
		return "", &Refusal{Reason: fmt.Sprintf("image %q is pinned by digest, which the local image directory cannot serve", ref)}
	}
	name, tag, _ := strings.Cut(base, ":")
	if name == "" || name == "." || name == ".." || tag == "." || tag == ".." || strings.ContainsAny(tag, "/") {
		return "", &Refusal{Reason: fmt.Sprintf("image %q does not name a file", ref)}
	}
	file := name
	if tag != "" {
		file = name + "." + tag
	}
	return filepath.Join(f.Dir, file), nil
}

// Resolve uploads the file the reference names and sets the request's
// image digest.
func (f FileImages) Resolve(ctx context.Context, ref string, req *daemonv1.CreateRequest) error {
	path, err := f.FilePath(ref)
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("image %q: %w", ref, err)
	}
	img, err := f.Upload.UploadImageFile(ctx, path, nil)
	if err != nil {
		return fmt.Errorf("upload image %q from %s: %w", ref, path, err)
	}
	req.ImageSha256 = img.GetSha256()
	return nil
}

// RegistryImages passes the reference on to petreld, which pulls it from
// its registry by digest (unless its store holds that digest already) and
// records the reference on the VM.
type RegistryImages struct{}

// Resolve sets the request's image reference.
func (RegistryImages) Resolve(_ context.Context, ref string, req *daemonv1.CreateRequest) error {
	req.ImageRef = ref
	return nil
}

// LocalRegistry is the registry part of the references FileImages serves
// when it sits beside a registry (Images): "local/NAME:TAG".
const LocalRegistry = "local"

// Images serves references of LocalRegistry from Files and passes every
// other one to the registry resolver.
type Images struct {
	// Files serves "local/…" references; nil refuses them.
	Files *FileImages
	// Registry resolves the rest.
	Registry ImageResolver
}

// Resolve picks the resolver for the reference.
func (m Images) Resolve(ctx context.Context, ref string, req *daemonv1.CreateRequest) error {
	if strings.HasPrefix(ref, LocalRegistry+"/") {
		if m.Files == nil {
			return &Refusal{Reason: fmt.Sprintf("image %q names the agent's image directory, and it has none (--image-dir)", ref)}
		}
		return m.Files.Resolve(ctx, ref, req)
	}
	return m.Registry.Resolve(ctx, ref, req)
}
