package daemon

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/core/store"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// Image storage is accounted like memory: every image held in the store
// counts against the image allowance (policy.Policy.Images) of the
// domains it is held for, and against the host's (image_store_mb, the
// root policy's allowance), so that no caller can make petreld's data
// directory grow by more than its policies allow.
//
// An image is held for a domain while a VM below it uses the image, and
// while an upload made by a caller of that domain waits for its create
// (a claim, dropped when the create fails and after uploadGrace at the
// latest). An upload being received holds its size (a reservation) for
// the uploader's domain until it is stored or dropped. Images are shared
// by digest, so one held twice under a domain counts once there. An
// image nothing holds is removed: at once when the create that brought
// it fails, else at the next collection.

// uploadGrace keeps a freshly uploaded image safe from garbage collection
// (and counted against its uploader) until the create that follows it.
const uploadGrace = 10 * time.Minute

// imageLedger is what petreld knows about image storage beyond the VM
// records: claims, reservations and the sizes of stored images. Its lock
// also orders committing an upload against collection, so an image is
// never removed between being stored and being claimed.
type imageLedger struct {
	mu sync.Mutex
	// claims maps a digest to the domains whose callers uploaded it and
	// when; a claim lasts uploadGrace, or until a create that used the
	// image fails.
	claims map[string]map[string]claim
	// reserved holds the sizes of uploads being received, by id.
	reserved map[uint64]reservation
	// holds holds the images of creates being run, by id, so that they
	// count (and stay) until the VM's record does.
	holds map[uint64]reservation
	// next is the last id given to a reservation or a hold.
	next uint64
	// sizes caches the sizes of stored images; content-addressed files
	// never change.
	sizes map[string]int64
}

// claim is one domain's hold on an uploaded image.
type claim struct {
	domain name.Path
	at     time.Time
}

// reservation is storage held for a domain: bytes of an upload being
// received, or the images of a create being admitted.
type reservation struct {
	domain name.Path
	bytes  int64
	images []string
}

// newImageLedger returns an empty ledger: claims and reservations do not
// outlive petreld, whose start-up collection removes what nothing holds.
func newImageLedger() imageLedger {
	return imageLedger{claims: map[string]map[string]claim{}, reserved: map[uint64]reservation{},
		holds: map[uint64]reservation{}, sizes: map[string]int64{}}
}

// callerDomain is the domain a call acts for: the caller's certificate
// domain, or the root for a local administrator.
func callerDomain(id *pki.Identity) name.Path {
	if id == nil {
		return name.Root
	}
	return id.Domain
}

// imageSize returns the size of a stored image, 0 when it is not stored.
// d.images.mu must be held.
func (d *Daemon) imageSize(sha string, stored map[string]int64) int64 {
	if n, ok := d.images.sizes[sha]; ok {
		return n
	}
	if n, ok := stored[sha]; ok {
		d.images.sizes[sha] = n
		return n
	}
	path, err := d.store.ImagePath(sha)
	if err != nil {
		return 0
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	d.images.sizes[sha] = fi.Size()
	return fi.Size()
}

// imageUsage returns, for a policy check, the images held under a path:
// for the root, everything in the store and every upload being received
// (the host-wide limit is on the store itself); for any other path, the
// images of the VMs below it (except the VM named except, which a
// force-create replaces), the claims and holds of its domain and those
// below, and the uploads they are receiving. Reservations appear under
// keys that are not digests, so they never merge with an image.
// d.images.mu must be held.
func (d *Daemon) imageUsage(except string) (func(name.Path) map[string]int64, error) {
	stored, err := d.store.ImageSizes()
	if err != nil {
		return nil, fmt.Errorf("image storage: %w", err)
	}
	recs, err := d.sup.Info(":")
	if err != nil {
		return nil, fmt.Errorf("image storage: %w", err)
	}
	type vmImages struct {
		vm   name.Path
		shas []string
	}
	var vms []vmImages
	for _, r := range recs {
		p, err := name.Parse(r.Name)
		if err != nil || r.Name == except {
			continue
		}
		vms = append(vms, vmImages{p, []string{r.ImageSHA256, r.InitrdSHA256}})
	}
	now := time.Now()
	return func(a name.Path) map[string]int64 {
		out := map[string]int64{}
		for id, r := range d.images.reserved {
			if a.IsPrefixOf(r.domain) {
				out[fmt.Sprintf("upload %d", id)] = r.bytes
			}
		}
		if a.IsRoot() {
			for sha, n := range stored {
				out[sha] = n
			}
			return out
		}
		for _, v := range vms {
			if a.Equal(v.vm) || !a.IsPrefixOf(v.vm) {
				continue
			}
			for _, sha := range v.shas {
				if sha != "" {
					out[sha] = d.imageSize(sha, stored)
				}
			}
		}
		for sha, by := range d.images.claims {
			for _, c := range by {
				if now.Sub(c.at) < uploadGrace && a.IsPrefixOf(c.domain) {
					out[sha] = d.imageSize(sha, stored)
				}
			}
		}
		for _, h := range d.images.holds {
			if a.IsPrefixOf(h.domain) {
				for _, sha := range h.images {
					out[sha] = d.imageSize(sha, stored)
				}
			}
		}
		return out
	}, nil
}

// imagesUnder is the image storage held under path, for listings and for
// checking a policy being set against what is held already.
func (d *Daemon) imagesUnder(path name.Path) map[string]int64 {
	d.images.mu.Lock()
	defer d.images.mu.Unlock()
	usage, err := d.imageUsage("")
	if err != nil {
		d.log.Warn("image storage", "error", err)
		return nil
	}
	return usage(path)
}

// imageRefusal turns an error of an image storage check into the status
// the caller sees: exceeded policies are ResourceExhausted (exit 10).
func imageRefusal(what string, err error) error {
	if errors.Is(err, policy.ErrExceeded) {
		return status.Errorf(codes.ResourceExhausted, "%s: %v", what, err)
	}
	return status.Errorf(codes.Internal, "%s: %v", what, err)
}

// admitUpload decides whether a caller of domain may upload an image of
// declared bytes (0: not said), and reserves its storage. It returns the
// reservation and how many bytes may be received. The upload is refused
// when a policy that applies to the domain allows no VM (no image could
// be used), or when the image would not fit the image allowance of the
// domain, of any ancestor, or of the host.
func (d *Daemon) admitUpload(domain name.Path, declared int64) (uint64, int64, error) {
	d.refreshRoot()
	d.images.mu.Lock()
	defer d.images.mu.Unlock()
	applying := d.policies.Applying(domain)
	if err := policy.CheckMayDeploy(applying, domain); err != nil {
		return 0, 0, imageRefusal("upload refused", err)
	}
	usage, err := d.imageUsage("")
	if err != nil {
		return 0, 0, status.Error(codes.Internal, err.Error())
	}
	bytes := declared
	if bytes <= 0 {
		bytes = min(policy.ImageRoom(applying, domain, usage), MaxImageBytes)
		if bytes <= 0 {
			bytes = 1 // refused below, with the policy that is full
		}
	}
	if err := policy.CheckImagesAgainst(applying, domain, map[string]int64{"upload": bytes}, usage); err != nil {
		return 0, 0, imageRefusal("upload refused", err)
	}
	d.images.next++
	id := d.images.next
	d.images.reserved[id] = reservation{domain: domain, bytes: bytes}
	return id, bytes, nil
}

// release drops a reservation; it may be called more than once.
func (d *Daemon) release(id uint64) {
	d.images.mu.Lock()
	delete(d.images.reserved, id)
	d.images.mu.Unlock()
}

// uploadTooLarge explains why an upload was cut off at limit bytes: the
// size it declared, the largest image, or the storage its domain has.
func (d *Daemon) uploadTooLarge(domain name.Path, declared, limit int64) error {
	switch {
	case declared > 0:
		return status.Errorf(codes.InvalidArgument, "the image is larger than the %d bytes its upload declared", declared)
	case limit >= MaxImageBytes:
		return status.Errorf(codes.InvalidArgument, "image of more than %d bytes exceeds the limit of %d bytes", limit, MaxImageBytes)
	}
	d.images.mu.Lock()
	defer d.images.mu.Unlock()
	usage, err := d.imageUsage("")
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	err = policy.CheckImagesAgainst(d.policies.Applying(domain), domain, map[string]int64{"upload": limit + 1}, usage)
	if err == nil {
		err = fmt.Errorf("%w: the image is larger than the %d bytes of image storage left", policy.ErrExceeded, limit)
	}
	return imageRefusal("upload refused", err)
}

// commitUpload checks a received image again, now that its digest is
// known (an image the domain holds already costs nothing), stores it and
// claims it for the domain until its create. The reservation id is
// dropped first, as the image itself now counts.
func (d *Daemon) commitUpload(domain name.Path, st *store.StagedImage, id uint64) (*daemonv1.ImageRef, error) {
	d.images.mu.Lock()
	defer d.images.mu.Unlock()
	delete(d.images.reserved, id)
	usage, err := d.imageUsage("")
	if err != nil {
		st.Discard()
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := policy.CheckImagesAgainst(d.policies.Applying(domain), domain, map[string]int64{st.SHA256: st.Size}, usage); err != nil {
		st.Discard()
		return nil, imageRefusal("upload refused", err)
	}
	if err := st.Commit(); err != nil {
		return nil, status.Errorf(codes.Internal, "store image: %v", err)
	}
	d.images.sizes[st.SHA256] = st.Size
	d.claimLocked(st.SHA256, domain)
	return &daemonv1.ImageRef{Sha256: st.SHA256, Size: st.Size}, nil
}

// claimKnown claims for domain an image the store has already, when the
// caller names its digest, so that its content need not be sent again.
// It reports false when the store does not have it.
func (d *Daemon) claimKnown(domain name.Path, sha string) (*daemonv1.ImageRef, bool, error) {
	d.refreshRoot()
	d.images.mu.Lock()
	defer d.images.mu.Unlock()
	if _, err := d.store.ImagePath(sha); err != nil {
		return nil, false, nil
	}
	applying := d.policies.Applying(domain)
	if err := policy.CheckMayDeploy(applying, domain); err != nil {
		return nil, false, imageRefusal("upload refused", err)
	}
	usage, err := d.imageUsage("")
	if err != nil {
		return nil, false, status.Error(codes.Internal, err.Error())
	}
	size := d.imageSize(sha, nil)
	if err := policy.CheckImagesAgainst(applying, domain, map[string]int64{sha: size}, usage); err != nil {
		return nil, false, imageRefusal("upload refused", err)
	}
	d.claimLocked(sha, domain)
	return &daemonv1.ImageRef{Sha256: sha, Size: size}, true, nil
}

// unknownImages refuses a create that names digests the image store does
// not hold, with an UnknownImage detail listing them, so that a client
// that sent digests rather than content knows to upload them and create
// again. A caller whose policies allow no VM is told that instead, so the
// store's content is shown to no one who could not deploy it. Digests
// that are not SHA-256 are left to the create, which refuses them as
// invalid.
func (d *Daemon) unknownImages(caller name.Path, shas []string) error {
	var missing []string
	for _, sha := range shas {
		if sha == "" || !store.IsImageName(sha) {
			continue
		}
		if _, err := d.store.ImagePath(sha); err != nil {
			missing = append(missing, sha)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	d.refreshRoot()
	if err := policy.CheckMayDeploy(d.policies.Applying(caller), caller); err != nil {
		return imageRefusal("upload refused", err) // the refusal an upload would meet
	}
	st := status.Newf(codes.InvalidArgument, "image sha256:%s is not in petreld's image store (unknown digest): upload it, then create", missing[0])
	withDetail, err := st.WithDetails(&daemonv1.UnknownImage{Sha256: missing})
	if err != nil {
		return st.Err()
	}
	return withDetail.Err()
}

// claimLocked records domain's claim on sha; d.images.mu must be held.
func (d *Daemon) claimLocked(sha string, domain name.Path) {
	if d.images.claims[sha] == nil {
		d.images.claims[sha] = map[string]claim{}
	}
	d.images.claims[sha][domain.String()] = claim{domain: domain, at: time.Now()}
}

// admitCreate checks the images of a VM about to be created against the
// image allowance of every ancestor of the VM (an image a policy holds
// already costs nothing there), and holds them for the VM's domain while
// the create runs. The hold must be given back with createDone.
func (d *Daemon) admitCreate(vm name.Path, shas []string, replacing string) (uint64, error) {
	d.refreshRoot()
	d.images.mu.Lock()
	defer d.images.mu.Unlock()
	usage, err := d.imageUsage(replacing)
	if err != nil {
		return 0, status.Error(codes.Internal, err.Error())
	}
	want := map[string]int64{}
	var held []string
	for _, sha := range shas {
		if sha == "" {
			continue
		}
		if _, err := d.store.ImagePath(sha); err != nil {
			continue // the create reports a missing image
		}
		want[sha] = d.imageSize(sha, nil)
		held = append(held, sha)
	}
	if err := policy.CheckImagesAgainst(d.policies.Governing(vm), vm.Parent(), want, usage); err != nil {
		return 0, imageRefusal(fmt.Sprintf("deploy %q", vm), err)
	}
	d.images.next++
	id := d.images.next
	d.images.holds[id] = reservation{domain: vm.Parent(), images: held}
	return id, nil
}

// createDone ends a create's hold on its images. When the create failed
// it also ends the caller's claims on them, so that an image nothing else
// holds is removed at once rather than after uploadGrace. After a create
// that succeeded the claim stays until uploadGrace, still counted against
// the caller's domain: clients may create again by digest after
// destroying the VM, as they could before.
func (d *Daemon) createDone(caller name.Path, hold uint64, shas []string, failed bool) {
	d.images.mu.Lock()
	delete(d.images.holds, hold)
	for _, sha := range shas {
		if !failed {
			break
		}
		if by := d.images.claims[sha]; by != nil {
			delete(by, caller.String())
			if len(by) == 0 {
				delete(d.images.claims, sha)
			}
		}
	}
	d.images.mu.Unlock()
	d.collectImages()
}

// collectImages removes the images nothing holds: no VM record, no claim
// within uploadGrace, no create being admitted. Uploads being received
// are temporary files, which collection never touches, and they are
// committed and claimed under the same lock, so a new image is never
// removed before its claim.
func (d *Daemon) collectImages() {
	d.images.mu.Lock()
	defer d.images.mu.Unlock()
	keep := d.sup.ImagesInUse()
	now := time.Now()
	for sha, by := range d.images.claims {
		for k, c := range by {
			if now.Sub(c.at) >= uploadGrace {
				delete(by, k)
			}
		}
		if len(by) == 0 {
			delete(d.images.claims, sha)
			continue
		}
		keep[sha] = true
	}
	for _, h := range d.images.holds {
		for _, sha := range h.images {
			keep[sha] = true
		}
	}
	n, err := d.store.RemoveImagesExcept(keep)
	if err != nil {
		d.log.Warn("image garbage collection", "error", err)
	} else if n > 0 {
		d.log.Info("removed unused images", "count", n)
	}
	for sha := range d.images.sizes {
		if !keep[sha] {
			delete(d.images.sizes, sha)
		}
	}
}
