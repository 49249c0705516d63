// Package oci stores Solo5 unikernels in OCI registries and fetches them
// back, so that a host can run an image named by a reference such as
// registry.example.org/team/web:1.4 instead of a file someone copied to it.
//
// A unikernel is an OCI artifact (image-spec 1.1) laid out as follows:
//
//   - the manifest's artifactType is ArtifactType
//     ("application/vnd.petrel.unikernel.v1");
//   - its config is the empty descriptor (application/vnd.oci.empty.v1+json);
//   - it has exactly one layer, of media type LayerMediaType
//     ("application/vnd.petrel.unikernel.image.v1"), whose content is the
//     unikernel's ELF file, unchanged and uncompressed;
//   - the manifest's annotations name the image's Solo5 target
//     (AnnotationTarget, "hvt", "spt", ...) and ABI version (AnnotationABI),
//     read from the image's ABI note when it is pushed, and its file name
//     (org.opencontainers.image.title).
//
// The unikernel's layer digest is the SHA-256 the Petrel image store names
// it by, so a host that has the digest already needs only the manifest.
//
// Registries are reached over HTTPS, except loopback addresses
// (localhost, 127.0.0.0/8, ::1) and the hosts listed in
// Options.InsecureRegistries, which are reached over plain HTTP.
// Credentials come from a docker/OCI configuration file
// (Options.ConfigFile, else $DOCKER_CONFIG/config.json, else
// ~/.docker/config.json), including its credential helpers.
package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// The artifact layout (see the package documentation).
const (
	// ArtifactType is the artifactType of a unikernel's manifest.
	ArtifactType = "application/vnd.petrel.unikernel.v1"
	// LayerMediaType is the media type of the one layer: the ELF file.
	LayerMediaType = "application/vnd.petrel.unikernel.image.v1"
	// AnnotationTarget names the image's Solo5 target (hvt, spt, ...).
	AnnotationTarget = "org.petrel.unikernel.target"
	// AnnotationABI is the image's Solo5 ABI version, in decimal.
	AnnotationABI = "org.petrel.unikernel.abi"
)

// maxManifestBytes bounds the manifests fetched: a unikernel's is a few
// hundred bytes, and a hostile registry must not make a host read more.
const maxManifestBytes = 64 << 10

// Options say how to reach registries.
type Options struct {
	// InsecureRegistries lists registry hosts (host or host:port, as in
	// references) reached over plain HTTP although not loopback.
	InsecureRegistries []string
	// ConfigFile is the docker/OCI configuration file with credentials;
	// empty for $DOCKER_CONFIG/config.json or ~/.docker/config.json.
	ConfigFile string
}

// ParseReference parses ref as a registry reference that names its
// registry host: registry.example.org/team/web:1.4, localhost:5000/web,
// or one pinned by @sha256:digest. A missing tag means "latest". As with
// docker, the first component is a registry host only when it contains a
// dot or a colon or is "localhost"; "team/web:1.4" is refused, since
// Petrel has no default registry.
func ParseReference(ref string) (registry.Reference, error) {
	host, _, ok := strings.Cut(ref, "/")
	if !ok || !validHost(host) || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return registry.Reference{}, fmt.Errorf("%q does not name a registry host (as in registry.example.org/team/web:1.4)", ref)
	}
	r, err := registry.ParseReference(ref)
	if err != nil {
		return registry.Reference{}, fmt.Errorf("%q is not a registry reference: %w", ref, err)
	}
	if r.Reference == "" {
		r.Reference = "latest"
	}
	return r, nil
}

// validHost says whether s is a registry host[:port]: DNS labels of
// letters, digits and hyphens, an IPv4 address or a bracketed IPv6 one,
// so that paths such as ./web.hvt or ../images/web are never hosts.
func validHost(s string) bool {
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		if port == "" || strings.Trim(port, "0123456789") != "" {
			return false
		}
		host = h
	}
	if strings.HasPrefix(s, "[") {
		return net.ParseIP(host) != nil
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || strings.HasPrefix(label, "-") || strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return false
		}
	}
	return true
}

// IsLoopback says whether a registry host (host or host:port) is this
// machine's loopback: "localhost" or a loopback address. Names other
// than localhost are not resolved.
func IsLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// plainHTTP says whether host is reached over plain HTTP.
func (o Options) plainHTTP(host string) bool {
	if IsLoopback(host) {
		return true
	}
	for _, h := range o.InsecureRegistries {
		if h == host {
			return true
		}
	}
	return false
}

// repository opens the repository of ref with credentials and transport.
func (o Options) repository(ref registry.Reference) (*remote.Repository, error) {
	repo, err := remote.NewRepository(ref.Registry + "/" + ref.Repository)
	if err != nil {
		return nil, fmt.Errorf("repository %s/%s: %w", ref.Registry, ref.Repository, err)
	}
	repo.PlainHTTP = o.plainHTTP(ref.Registry)
	path := o.ConfigFile
	var store credentials.Store
	if path == "" {
		store, err = credentials.NewStoreFromDocker(credentials.StoreOptions{})
	} else {
		store, err = credentials.NewStore(path, credentials.StoreOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	repo.Client = &auth.Client{Client: retry.DefaultClient, Cache: auth.NewCache(), Credential: credentials.Credential(store)}
	return repo, nil
}

// DefaultConfigFile is the credentials file used when Options.ConfigFile
// is empty: $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
func DefaultConfigFile() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}

// Artifact is a unikernel named by a reference, as its manifest says.
type Artifact struct {
	// Pinned is the reference pinned to its manifest digest:
	// registry/repository@sha256:...
	Pinned string
	// Manifest is the manifest's digest.
	Manifest digest.Digest
	// Image is the unikernel's layer: its digest is the SHA-256 of the
	// ELF file, its size the file's.
	Image ocispec.Descriptor
	// Target and ABI are the manifest's annotations.
	Target, ABI string
}

// SHA256 is the image's digest in the Petrel image store's form (hex).
func (a *Artifact) SHA256() string { return a.Image.Digest.Encoded() }

// ErrNotUnikernel is wrapped by the error of Resolve when the reference
// names something other than a Petrel unikernel artifact.
var ErrNotUnikernel = errors.New("not a Petrel unikernel artifact")

// Resolve finds what ref names now: its tag's manifest digest (one
// request), then the manifest itself, verified against that digest.
func Resolve(ctx context.Context, ref string, o Options) (*Artifact, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	repo, err := o.repository(r)
	if err != nil {
		return nil, err
	}
	return resolve(ctx, repo, r)
}

func resolve(ctx context.Context, repo *remote.Repository, r registry.Reference) (*Artifact, error) {
	desc, err := repo.Resolve(ctx, r.Reference)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", r, err)
	}
	if desc.Size > maxManifestBytes {
		return nil, fmt.Errorf("%s: %w: its manifest has %d bytes", r, ErrNotUnikernel, desc.Size)
	}
	if _, err := r.Digest(); err == nil && desc.Digest.String() != r.Reference {
		return nil, fmt.Errorf("%s: the registry answered with manifest %s", r, desc.Digest)
	}
	body, err := content.FetchAll(ctx, repo.Manifests(), desc)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest of %s: %w", r, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%s: %w: manifest: %v", r, ErrNotUnikernel, err)
	}
	if m.ArtifactType != ArtifactType {
		return nil, fmt.Errorf("%s: %w: artifact type %q, not %q (push unikernels with petrel image push)", r, ErrNotUnikernel, m.ArtifactType, ArtifactType)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != LayerMediaType {
		return nil, fmt.Errorf("%s: %w: it must have exactly one layer of type %s", r, ErrNotUnikernel, LayerMediaType)
	}
	layer := m.Layers[0]
	if layer.Digest.Algorithm() != digest.SHA256 || layer.Digest.Validate() != nil || layer.Size < 0 {
		return nil, fmt.Errorf("%s: %w: layer digest %q is not a valid sha256 digest", r, ErrNotUnikernel, layer.Digest)
	}
	pinned := r
	pinned.Reference = desc.Digest.String()
	return &Artifact{Pinned: pinned.String(), Manifest: desc.Digest, Image: layer,
		Target: m.Annotations[AnnotationTarget], ABI: m.Annotations[AnnotationABI]}, nil
}

// Open opens the unikernel of a (from Resolve) at its registry. It does
// not check the content: the caller hashes what it reads and compares it
// with a.Image (see Verify), so that nothing unverified is kept.
func Open(ctx context.Context, a *Artifact, o Options) (io.ReadCloser, error) {
	r, err := ParseReference(a.Pinned)
	if err != nil {
		return nil, err
	}
	repo, err := o.repository(r)
	if err != nil {
		return nil, err
	}
	rc, err := repo.Blobs().Fetch(ctx, a.Image)
	if err != nil {
		return nil, fmt.Errorf("fetch image %s of %s: %w", a.Image.Digest, a.Pinned, err)
	}
	return rc, nil
}

// Verify checks content received for a's image, of digest sha (hex
// SHA-256) and size, against its manifest.
func Verify(a *Artifact, sha string, size int64) error {
	if sha != a.SHA256() || size != a.Image.Size {
		return fmt.Errorf("image of %s: digest mismatch: received sha256:%s (%d bytes), the manifest says %s (%d bytes)",
			a.Pinned, sha, size, a.Image.Digest, a.Image.Size)
	}
	return nil
}

// Pushed is what Push stored.
type Pushed struct {
	Artifact
	// Uploaded is false when the registry had the image already.
	Uploaded bool
}

// Push stores the unikernel at path in the registry under ref (its tag,
// "latest" when none is given), laid out as the package documentation
// says. The image's Solo5 ABI note gives the target and ABI annotations;
// a file without one is refused. progress, when not nil, is called as the
// image is sent.
func Push(ctx context.Context, path, ref string, o Options, progress func(sent, total int64)) (*Pushed, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if _, err := r.Digest(); err == nil {
		return nil, fmt.Errorf("push to %s: name a tag, not a digest", ref)
	}
	im, err := solo5.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", path, err)
	}
	dg, err := digest.SHA256.FromReader(f)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("push %s: %w", path, err)
	}
	layer := ocispec.Descriptor{MediaType: LayerMediaType, Digest: dg, Size: fi.Size(),
		Annotations: map[string]string{ocispec.AnnotationTitle: filepath.Base(path)}}
	repo, err := o.repository(r)
	if err != nil {
		return nil, err
	}
	out := &Pushed{}
	exists, err := repo.Blobs().Exists(ctx, layer)
	if err != nil {
		return nil, fmt.Errorf("push %s to %s: %w", path, r.Registry, err)
	}
	if !exists {
		var body io.Reader = f
		if progress != nil {
			body = &progressReader{r: f, total: fi.Size(), report: progress}
		}
		if err := repo.Blobs().Push(ctx, layer, body); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
			return nil, fmt.Errorf("push %s to %s: %w", path, r.Registry, err)
		}
		out.Uploaded = true
	}
	if progress != nil {
		progress(fi.Size(), fi.Size())
	}
	ann := map[string]string{AnnotationTarget: im.Target.String(), AnnotationABI: fmt.Sprint(im.ABIVersion),
		ocispec.AnnotationTitle: filepath.Base(path),
		// A fixed creation time makes the manifest a function of the
		// image: pushing the same file twice gives the same digest.
		ocispec.AnnotationCreated: "1970-01-01T00:00:00Z"}
	desc, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, ArtifactType,
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}, ManifestAnnotations: ann})
	if err != nil {
		return nil, fmt.Errorf("push manifest of %s to %s: %w", path, r.Registry, err)
	}
	if err := repo.Tag(ctx, desc, r.Reference); err != nil {
		return nil, fmt.Errorf("tag %s: %w", ref, err)
	}
	pinned := r
	pinned.Reference = desc.Digest.String()
	out.Artifact = Artifact{Pinned: pinned.String(), Manifest: desc.Digest, Image: layer,
		Target: ann[AnnotationTarget], ABI: ann[AnnotationABI]}
	return out, nil
}

// progressReader reports how much of a stream was read.
type progressReader struct {
	r      io.Reader
	n      int64
	total  int64
	report func(sent, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if n > 0 {
		p.report(p.n, p.total)
	}
	return n, err
}
