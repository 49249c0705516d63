package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// chooseBackend returns the backend that runs a create's image, setting
// p.Backend to its name.
//
// A Solo5 image says which target it was built for. When the create
// named no backend and the host's default backend does not run that
// target, the one enabled backend that does is chosen (a healthy one
// where several run it and only one is healthy), so that `petrel create
// hello hello.spt` works on a host whose default is hvt. A create that
// names a backend which cannot run the image is refused with the
// --backend that would work. Images that are not Solo5 unikernels (Linux
// kernels for qemu) go to the named or default backend, which judges them.
func (s *Supervisor) chooseBackend(ctx context.Context, p *CreateParams, imagePath string, explicit bool) (hypervisor.Hypervisor, error) {
	hv, err := s.opts.Backends.Hypervisor(p.Backend)
	if err != nil {
		return nil, err
	}
	img, err := solo5.ReadFile(imagePath)
	if err != nil {
		if errors.Is(err, solo5.ErrNotSolo5) || errors.Is(err, solo5.ErrNotELF) {
			return hv, nil
		}
		why := strings.TrimPrefix(err.Error(), imagePath+": ")
		return nil, hideStorePaths(invalid("image %s: %s", s.imageLabel(p), why), &pluginv1.VMSpec{ImagePath: imagePath}, s.imageLabel(p))
	}
	target := img.Target.String()
	runs, err := s.runsTarget(ctx, hv, target)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", p.Backend, err)
	}
	if runs {
		return hv, nil
	}
	others := s.backendsFor(ctx, target, p.Backend)
	if explicit || len(others) != 1 {
		return nil, invalid("%s", s.mismatch(p, target, others))
	}
	p.Backend = others[0]
	return s.opts.Backends.Hypervisor(p.Backend)
}

// imageLabel names a create's image the way its user gave it.
func (s *Supervisor) imageLabel(p *CreateParams) string {
	if p.ImageName != "" {
		return p.ImageName
	}
	return "sha256:" + p.ImageSHA256
}

// recordImageLabel names a VM's image the way its user gave it, like
// imageLabel does for a create.
func recordImageLabel(r Record) string {
	if r.ImageName != "" {
		return r.ImageName
	}
	return "sha256:" + r.ImageSHA256
}

// storePathError is an error whose message names files by what their
// users call them; it unwraps to the original, so its kind (invalid,
// unavailable...) is unchanged.
type storePathError struct {
	err error
	msg string
}

func (e *storePathError) Error() string { return e.msg }
func (e *storePathError) Unwrap() error { return e.err }

// hideStorePaths replaces the image store's file names in err, as
// backends report them ("image: /var/lib/petrel/images/sha256/cc46...:
// not an ELF file"), with the names a user knows: the image's (the file
// they gave) and "initrd". A store path means nothing to the user, and
// to a remote one it describes the host.
func hideStorePaths(err error, spec *pluginv1.VMSpec, image string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if p := spec.GetImagePath(); p != "" {
		msg = strings.ReplaceAll(msg, "image: "+p, "image "+image)
		msg = strings.ReplaceAll(msg, p, image)
	}
	if p := spec.GetInitrdPath(); p != "" {
		msg = strings.ReplaceAll(msg, "initrd: "+p, "initrd")
		msg = strings.ReplaceAll(msg, p, "the initrd")
	}
	if msg == err.Error() {
		return err
	}
	return &storePathError{err: err, msg: msg}
}

// mismatch explains why backend p.Backend cannot run a target image and
// what would.
func (s *Supervisor) mismatch(p *CreateParams, target string, others []string) string {
	msg := fmt.Sprintf("%s is a Solo5 %s unikernel, which backend %s does not run", s.imageLabel(p), target, p.Backend)
	switch len(others) {
	case 0:
		return msg + fmt.Sprintf("; no enabled backend on this host runs %s unikernels", target)
	case 1:
		return msg + fmt.Sprintf("; use --backend %s", others[0])
	}
	return msg + fmt.Sprintf("; use --backend with one of %s", strings.Join(others, ", "))
}

// runsTarget asks a backend whether it runs images of a Solo5 target.
func (s *Supervisor) runsTarget(ctx context.Context, hv hypervisor.Hypervisor, target string) (bool, error) {
	caps, err := hv.Capabilities(ctx)
	if err != nil {
		return false, err
	}
	return slices.Contains(caps.GetTargets(), target), nil
}

// backendsFor lists the enabled backends other than except that run
// target; where some of them are healthy and some are not, only the
// healthy ones. A backend that does not answer is left out. Health is
// asked only when there is a choice: a single candidate is the answer
// whatever its health, and a create that needs it is spared the calls.
func (s *Supervisor) backendsFor(ctx context.Context, target, except string) []string {
	var all, healthy []string
	var hvs []hypervisor.Hypervisor
	for _, name := range s.opts.Backends.Names() {
		if name == except {
			continue
		}
		hv, err := s.opts.Backends.Hypervisor(name)
		if err != nil {
			continue
		}
		if ok, err := s.runsTarget(ctx, hv, target); err != nil || !ok {
			continue
		}
		all = append(all, name)
		hvs = append(hvs, hv)
	}
	if len(all) < 2 {
		return all
	}
	for i, hv := range hvs {
		if fp, err := hv.Fingerprint(ctx); err == nil && fp.GetHealth() == pluginv1.Health_HEALTH_HEALTHY {
			healthy = append(healthy, all[i])
		}
	}
	if len(healthy) > 0 {
		return healthy
	}
	return all
}
