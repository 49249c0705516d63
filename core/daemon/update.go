package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/internal/supervisor"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/vmrecord"
	"github.com/petrel-vmm/petrel/sdk/oci"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// Updating a VM replaces its image and keeps everything else: name,
// memory, CPUs, arguments, devices, restart policy. The replacement is the
// supervisor's forced create, which records the new configuration before
// the old run goes, so a daemon killed during an update finds the VM
// recorded with the old image (killed before) or the new one (after),
// and runs what it finds. The new image must then hold for a grace
// period: a run that exits non-zero or by a signal, or a health check
// (console marker, TCP or HTTP probe) that does not succeed within it,
// makes petreld restore the previous image the same way, and the update
// is reported as rolled back. The previous image is held in the store
// until the update is decided, so while an update runs both images count
// against the image allowances of the VM's domain. One VM is updated by
// one update at a time.

// Update limits.
const (
	// defaultGrace is how long a new image must hold when the caller
	// does not say.
	defaultGrace = 5 * time.Second
	// maxGrace bounds the grace period a caller may ask for.
	maxGrace = 10 * time.Minute
	// healthPoll is how often the new run is looked at.
	healthPoll = 100 * time.Millisecond
	// probeTimeout bounds one probe.
	probeTimeout = time.Second
)

// createVM deploys p for caller, for Create and Update: the image
// storage checks and holds (images.go), then the supervisor's create.
func (d *Daemon) createVM(ctx context.Context, caller name.Path, p supervisor.CreateParams) (supervisor.Record, error) {
	images := []string{p.ImageSHA256, p.InitrdSHA256}
	vm, err := name.ParseVM(p.Name)
	if err != nil {
		d.createDone(caller, 0, images, true)
		return supervisor.Record{}, status.Error(codes.InvalidArgument, err.Error())
	}
	replacing := ""
	if p.Force {
		replacing = vm.String()
	}
	hold, err := d.admitCreate(vm, images, replacing)
	if err != nil {
		d.createDone(caller, 0, images, true)
		return supervisor.Record{}, err
	}
	rec, err := d.sup.Create(ctx, p)
	d.createDone(caller, hold, images, err != nil)
	if err != nil {
		return supervisor.Record{}, grpcError(err)
	}
	return rec, nil
}

// holdImages keeps images in the store, counted for domain, until the
// returned function is called.
func (d *Daemon) holdImages(domain name.Path, shas ...string) func() {
	d.images.mu.Lock()
	d.images.next++
	id := d.images.next
	d.images.holds[id] = reservation{domain: domain, images: shas}
	d.images.mu.Unlock()
	return func() {
		d.images.mu.Lock()
		delete(d.images.holds, id)
		d.images.mu.Unlock()
		d.collectImages()
	}
}

// paramsOf is the configuration of a VM's record, to create it again.
func paramsOf(r supervisor.Record) supervisor.CreateParams {
	return supervisor.CreateParams{
		Name: r.Name, Backend: r.Backend, ImageSHA256: r.ImageSHA256, ImageName: r.ImageName, MemoryMB: r.MemoryMB,
		CPUs: r.CPUs, Args: r.Args, Restart: r.Restart, Startup: r.Startup, Blocks: r.Blocks, Nets: r.Nets,
		InitrdSHA256: r.InitrdSHA256, KernelCmdline: r.KernelCmdline, ImageRef: r.ImageRef, ImageDigest: r.ImageDigest,
		Force: true,
	}
}

// checkProbe refuses a probe Update could not run.
func checkProbe(probe string) error {
	if probe == "" {
		return nil
	}
	u, err := url.Parse(probe)
	if err != nil || u.Host == "" || (u.Scheme != "tcp" && u.Scheme != "http") {
		return fmt.Errorf("probe %q: expected tcp://HOST:PORT or http://HOST[:PORT]/PATH", probe)
	}
	if u.Scheme == "tcp" && u.Port() == "" {
		return fmt.Errorf("probe %q: a TCP probe needs a port", probe)
	}
	return nil
}

// runProbe tries the probe once.
func runProbe(ctx context.Context, probe string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	u, err := url.Parse(probe)
	if err != nil {
		return err
	}
	if u.Scheme == "tcp" {
		var dl net.Dialer
		c, err := dl.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, probe, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("%s answered %s", probe, resp.Status)
	}
	return nil
}

// errVanished says the VM was destroyed while its update was watched.
var errVanished = errors.New("the VM was destroyed during the update")

// errStopping says petreld began to stop while it watched an update.
var errStopping = errors.New("petreld is stopping")

// watch follows the new run of a VM for grace and says why it failed, or
// nil when it held: no exit other than 0, and the marker seen and the
// probe answered (when asked for) within grace.
func (d *Daemon) watch(ctx context.Context, vm string, grace time.Duration, marker, probe string) error {
	deadline := time.Now().Add(grace)
	markerSeen, probeOK := marker == "", probe == ""
	var seen time.Time // the newest console line read
	var lastProbe error
	t := time.NewTicker(healthPoll)
	defer t.Stop()
	for {
		recs, err := d.sup.Info(vm)
		if err != nil || len(recs) != 1 {
			return errVanished
		}
		r := recs[0]
		switch {
		case r.HasExit && r.ExitSignal != 0:
			return fmt.Errorf("the new image was killed by signal %d", r.ExitSignal)
		case r.HasExit && r.ExitCode != 0:
			return fmt.Errorf("the new image exited with code %d", r.ExitCode)
		case r.State == vmrecord.StateFailed || r.State == vmrecord.StateLost:
			return fmt.Errorf("the new image is %s: %s", r.State, r.Message)
		}
		if !markerSeen {
			// Each poll reads only the lines since the last one it saw
			// (that one again too, as lines may share a time).
			if ring, err := d.sup.Console(vm); err == nil {
				if lines, err := ring.History(seen, 0); err == nil {
					for _, l := range lines {
						if strings.Contains(l.Text, marker) {
							markerSeen = true
							break
						}
					}
					if len(lines) > 0 {
						seen = lines[len(lines)-1].Time
					}
				}
			}
		}
		if !probeOK {
			if lastProbe = runProbe(ctx, probe); lastProbe == nil {
				probeOK = true
			}
		}
		if time.Now().After(deadline) {
			switch {
			case !markerSeen:
				return fmt.Errorf("the new image did not print %q within %s", marker, grace)
			case !probeOK:
				return fmt.Errorf("probe %s did not succeed within %s: %v", probe, grace, lastProbe)
			}
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return errStopping
		}
	}
}

// Update replaces a VM's image with the one an OCI reference names (the
// reference it was created from by default), and restores the previous
// image when the new one does not hold for the grace period.
func (s *server) Update(ctx context.Context, req *daemonv1.UpdateRequest) (*daemonv1.UpdateResponse, error) {
	caller := callerDomain(authz.IdentityFrom(ctx))
	vm, err := name.ParseVM(req.GetName())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	grace := time.Duration(req.GetGraceMs()) * time.Millisecond
	switch {
	case grace == 0:
		grace = defaultGrace
	case grace < 0 || grace > maxGrace:
		return nil, status.Errorf(codes.InvalidArgument, "grace period %s: must be positive and at most %s", grace, maxGrace)
	}
	if err := checkProbe(req.GetProbe()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, busy := s.d.updating.LoadOrStore(vm.String(), true); busy {
		return nil, status.Errorf(codes.Aborted, "an update of %s is in progress", vm)
	}
	defer s.d.updating.Delete(vm.String())
	recs, err := s.d.sup.Info(vm.String())
	if err != nil {
		return nil, grpcError(err)
	}
	if len(recs) != 1 || recs[0].Name != vm.String() {
		return nil, status.Errorf(codes.NotFound, "no VM %s", vm)
	}
	old := recs[0]
	ref := req.GetImageRef()
	if ref == "" {
		ref = old.ImageRef
	}
	if ref == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "%s was created from an uploaded file, not a registry reference: name one (petrel update %s REF)", vm, vm)
	}
	if _, err := oci.ParseReference(ref); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	img, err := s.d.pull(ctx, caller, ref, nil)
	if err != nil {
		return nil, err
	}
	if img.GetSha256() == old.ImageSHA256 {
		return &daemonv1.UpdateResponse{Vm: toVM(old), Unchanged: true,
			Message: fmt.Sprintf("%s runs %s already", vm, fmtPulled(img))}, nil
	}
	// The previous image stays in the store until the update is decided.
	release := s.d.holdImages(vm.Parent(), old.ImageSHA256, old.InitrdSHA256)
	defer release()
	// Once the replacement begins, it is decided whatever the caller
	// does: an update abandoned halfway would leave an unchecked image.
	// Only petreld's stopping ends it undecided.
	work, endWork := context.WithCancel(context.WithoutCancel(ctx))
	defer endWork()
	defer context.AfterFunc(s.d.life, endWork)()
	next := paramsOf(old)
	next.ImageSHA256, next.ImageRef, next.ImageDigest, next.ImageName = img.GetSha256(), ref, img.GetManifestDigest(), ref
	if _, err := s.d.createVM(work, caller, next); err != nil {
		if recs, ierr := s.d.sup.Info(vm.String()); ierr == nil && len(recs) == 1 && recs[0].ImageSHA256 == old.ImageSHA256 {
			return nil, err // refused before anything was replaced
		}
		return s.rollBack(work, caller, old, img.GetSha256(), fmt.Errorf("the new image did not start: %v", status.Convert(err).Message()))
	}
	if why := s.d.watch(work, vm.String(), grace, req.GetHealthyMarker(), req.GetProbe()); why != nil {
		switch {
		case errors.Is(why, errVanished):
			return nil, status.Errorf(codes.Aborted, "update of %s: %v", vm, why)
		case errors.Is(why, errStopping):
			return nil, status.Errorf(codes.Aborted, "petreld stopped while it watched the update of %s: %s runs the new image %s, unchecked; to return to the previous one, update it to %s",
				vm, vm, fmtPulled(img), previousImage(old))
		}
		return s.rollBack(work, caller, old, img.GetSha256(), why)
	}
	recs, err = s.d.sup.Info(vm.String())
	if err != nil || len(recs) != 1 {
		return nil, status.Errorf(codes.Aborted, "update of %s: %v", vm, errVanished)
	}
	return &daemonv1.UpdateResponse{Vm: toVM(recs[0]),
		Message: fmt.Sprintf("updated %s to %s; it held for %s", vm, fmtPulled(img), grace)}, nil
}

// previousImage names the image a VM ran before its update: its pinned
// reference, or the name of the file it was created from.
func previousImage(old supervisor.Record) string {
	if old.ImageRef != "" {
		return old.ImageRef + "@" + old.ImageDigest
	}
	return old.ImageName
}

// rollBack runs a VM's previous configuration again after its update to
// image failed for the reason why. The caller's claim on the failed
// image ends, as after a failed create, so that it is not kept.
func (s *server) rollBack(ctx context.Context, caller name.Path, old supervisor.Record, image string, why error) (*daemonv1.UpdateResponse, error) {
	prev := previousImage(old)
	s.d.log.Warn("update rolled back", "vm", old.Name, "reason", why)
	rec, err := s.d.createVM(ctx, caller, paramsOf(old))
	s.d.createDone(caller, 0, []string{image}, true)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "update of %s failed (%v), and restoring its previous image %s failed too: %v",
			old.Name, why, prev, status.Convert(err).Message())
	}
	return &daemonv1.UpdateResponse{Vm: toVM(rec), RolledBack: true,
		Message: fmt.Sprintf("update of %s rolled back: %v; it runs its previous image %s again", old.Name, why, prev)}, nil
}

// checkTimeout bounds each registry question of CheckImage, so that a
// registry that is down makes `petrel info --check-updates` say so
// quickly instead of hanging.
const checkTimeout = 3 * time.Second

// CheckImage says, for each selected VM created from a reference, which
// manifest digest its reference names now. Each reference is resolved
// once, however many VMs name it; registries are asked in parallel, each
// within checkTimeout.
func (s *server) CheckImage(ctx context.Context, req *daemonv1.CheckImageRequest) (*daemonv1.CheckImageResponse, error) {
	recs, err := s.d.sup.Info(req.GetName())
	if err != nil {
		return nil, grpcError(err)
	}
	out := &daemonv1.CheckImageResponse{}
	byRef := map[string][]*daemonv1.ImageStatus{}
	for _, r := range recs {
		if r.ImageRef != "" {
			st := &daemonv1.ImageStatus{Name: r.Name, ImageRef: r.ImageRef, Current: r.ImageDigest}
			out.Images = append(out.Images, st)
			byRef[r.ImageRef] = append(byRef[r.ImageRef], st)
		}
	}
	done := make(chan struct{}, len(byRef))
	opts := s.d.ociOptions()
	for ref, sts := range byRef {
		go func() {
			defer func() { done <- struct{}{} }()
			latest, why := "", ""
			if err := s.d.allowRegistry(ref); err != nil {
				why = status.Convert(err).Message()
			} else {
				cctx, cancel := context.WithTimeout(ctx, checkTimeout)
				defer cancel()
				if a, err := oci.Resolve(cctx, ref, opts); err != nil {
					why = status.Convert(registryError(ref, err)).Message()
				} else {
					latest = a.Manifest.String()
				}
			}
			for _, st := range sts {
				st.Latest, st.Error = latest, why
			}
		}()
	}
	for range byRef {
		<-done
	}
	return out, nil
}
