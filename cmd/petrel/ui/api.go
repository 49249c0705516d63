package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/cmd/internal/size"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/sdk/client"
	"github.com/petrel-vmm/petrel/sdk/oci"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// callTimeout bounds a unary call to a host.
const callTimeout = 30 * time.Second

// httpError is a refusal with its HTTP status and a sentence.
type httpError struct {
	code int
	msg  string
}

func (e httpError) Error() string { return e.msg }

// badRequest is an httpError for input that can never work.
func badRequest(format string, args ...any) error {
	return httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// describe says in words what a host's error means, as the CLI does.
func describe(err error, hc HostConfig) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := st.Message()
	if st.Code() == codes.Unavailable {
		switch {
		case strings.Contains(msg, "permission denied"):
			return fmt.Sprintf("cannot connect to petreld at %s: permission denied", hc.Socket)
		case hc.Destination != "":
			return fmt.Sprintf("cannot connect to the petrel endpoint at %s (is petrel-endpoint running and reachable?): %s", hc.Destination, msg)
		default:
			return fmt.Sprintf("cannot connect to petreld at %s (is it running?)", hc.Socket)
		}
	}
	return msg
}

// statusOf is the HTTP status for a host's error.
func statusOf(err error) int {
	var he httpError
	if errors.As(err, &he) {
		return he.code
	}
	st, ok := status.FromError(err)
	if !ok {
		return http.StatusInternalServerError
	}
	switch st.Code() {
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.ResourceExhausted:
		return http.StatusUnprocessableEntity
	case codes.PermissionDenied, codes.Unauthenticated:
		return http.StatusForbidden
	case codes.Unavailable, codes.FailedPrecondition:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// handler is an API handler that returns its answer or an error.
type handler func(r *http.Request) (any, error)

// api adapts a handler: JSON out, errors as {"error": sentence} with a
// status that matches them.
func (s *Server) api(f handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r)
		if err != nil {
			msg := err.Error()
			if h := r.URL.Query().Get("host"); h != "" {
				if hh, herr := s.host(h); herr == nil {
					msg = describe(err, hh.cfg)
				}
			}
			if s.opts.Logf != nil {
				s.opts.Logf("%s %s: %s", r.Method, r.URL.Path, msg)
			}
			writeJSON(w, statusOf(err), map[string]string{"error": msg})
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Server) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/hosts", s.api(s.getHosts))
	mux.HandleFunc("GET /api/config", s.api(s.getConfig))
	mux.HandleFunc("PUT /api/config", s.api(s.putConfig))
	mux.HandleFunc("GET /api/overview", s.api(s.getOverview))
	mux.HandleFunc("GET /api/vms", s.api(s.getVMs))
	mux.HandleFunc("GET /api/vm", s.api(s.getVM))
	mux.HandleFunc("POST /api/vm/create", s.api(s.createVM))
	mux.HandleFunc("POST /api/vm/restart", s.api(s.restartVM))
	mux.HandleFunc("POST /api/vm/destroy", s.api(s.destroyVM))
	mux.HandleFunc("PUT /api/image", s.api(s.uploadImage))
	mux.HandleFunc("GET /api/console", s.console)
	mux.HandleFunc("GET /api/events", s.events)
	mux.HandleFunc("GET /api/bridges", s.api(s.getBridges))
	mux.HandleFunc("GET /api/blocks", s.api(s.getBlocks))
	mux.HandleFunc("POST /api/block/create", s.api(s.createBlock))
	mux.HandleFunc("PUT /api/block/upload", s.api(s.uploadBlock))
	mux.HandleFunc("GET /api/block/download", s.downloadBlock)
	mux.HandleFunc("POST /api/block/destroy", s.api(s.destroyBlock))
	mux.HandleFunc("GET /api/policies", s.api(s.getPolicies))
	mux.HandleFunc("POST /api/policy/add", s.api(s.addPolicy))
	mux.HandleFunc("POST /api/policy/remove", s.api(s.removePolicy))
	mux.HandleFunc("POST /api/ca/sign", s.api(s.signPolicy))
	mux.HandleFunc("POST /api/ca/revoke", s.api(s.revoke))
}

// hostAndClient resolves the ?host= of a request and connects to it.
func (s *Server) hostAndClient(r *http.Request) (*host, *client.Client, error) {
	h, err := s.host(r.URL.Query().Get("host"))
	if err != nil {
		return nil, nil, err
	}
	c, err := h.client()
	if err != nil {
		return nil, nil, err
	}
	return h, c, nil
}

// clientAPI is the daemon API a host is called through.
type clientAPI = daemonv1.DaemonClient

// decode reads a JSON request body into v.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("request body: %v", err)
	}
	return nil
}

// targetName checks a name given on the page: a valid name (as the CLI
// checks it) in the host's domain, strictly below it.
func targetName(h *host, what, s string) (string, error) {
	p, err := name.ParseVM(s)
	if err != nil {
		return "", badRequest("%s %q: %v", what, s, err)
	}
	d, err := h.Domain()
	if err != nil {
		return "", err
	}
	if !d.IsPrefixOf(p) || d.Equal(p) {
		return "", badRequest("%s %q is outside your domain %s on host %s", what, s, d, h.cfg.Name)
	}
	return p.String(), nil
}

// hostView is a host in the host list, with whether it answers.
type hostView struct {
	HostConfig
	Kind    string `json:"kind"`
	Domain  string `json:"domain"`
	Version string `json:"version,omitempty"`
	Error   string `json:"error,omitempty"`
	CanSign bool   `json:"can_sign"`
}

func (s *Server) getHosts(r *http.Request) (any, error) {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	views := make([]hostView, len(cfg.Hosts))
	var wg sync.WaitGroup
	for i, hc := range cfg.Hosts {
		views[i] = hostView{HostConfig: hc, Kind: "local", CanSign: hc.CA != ""}
		if hc.Destination != "" {
			views[i].Kind = "remote"
		}
		h, err := s.host(hc.Name)
		if err != nil {
			views[i].Error = err.Error()
			continue
		}
		wg.Add(1)
		go func(v *hostView) {
			defer wg.Done()
			d, err := h.Domain()
			if err != nil {
				v.Error = err.Error()
				return
			}
			v.Domain = d.String()
			c, err := h.client()
			if err != nil {
				v.Error = err.Error()
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			ver, err := c.API.Version(ctx, &daemonv1.VersionRequest{})
			if err != nil {
				v.Error = describe(err, h.cfg)
				return
			}
			v.Version = ver.GetVersion()
		}(&views[i])
	}
	wg.Wait()
	return views, nil
}

func (s *Server) getConfig(*http.Request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg, nil
}

func (s *Server) putConfig(r *http.Request) (any, error) {
	var cfg Config
	if err := decode(r, &cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, badRequest("%v", err)
	}
	if err := cfg.Save(s.opts.ConfigPath); err != nil {
		return nil, err
	}
	s.setConfig(&cfg)
	return &cfg, nil
}

// vmView is a VM as the page shows it.
type vmView struct {
	Name          string                      `json:"name"`
	State         string                      `json:"state"`
	Backend       string                      `json:"backend"`
	Image         string                      `json:"image"`
	ImageSHA      string                      `json:"image_sha256"`
	MemoryMB      uint32                      `json:"memory_mb"`
	CPUs          []uint32                    `json:"cpus"`
	Args          []string                    `json:"args"`
	Pid           int64                       `json:"pid,omitempty"`
	HasExit       bool                        `json:"has_exit"`
	ExitCode      int32                       `json:"exit_code"`
	ExitSignal    int32                       `json:"exit_signal"`
	Restarts      uint32                      `json:"restarts"`
	RestartOnFail bool                        `json:"restart_on_fail"`
	ExitCodes     []int32                     `json:"restart_exit_codes"`
	Startup       int32                       `json:"startup"`
	CreatedNs     int64                       `json:"created_ns"`
	StartedNs     int64                       `json:"started_ns"`
	ExitedNs      int64                       `json:"exited_ns"`
	Message       string                      `json:"message,omitempty"`
	Nets          []*daemonv1.NetAttachment   `json:"nets"`
	Blocks        []*daemonv1.BlockAttachment `json:"blocks"`
}

func vmOf(vm *daemonv1.VM) vmView {
	v := vmView{Name: vm.GetName(), State: vm.GetState(), Backend: vm.GetBackend(), Image: vm.GetImageName(), ImageSHA: vm.GetImageSha256(),
		MemoryMB: vm.GetMemoryMb(), CPUs: vm.GetCpus(), Args: vm.GetArgs(), Pid: vm.GetPid(), HasExit: vm.GetHasExit(),
		ExitCode: vm.GetExitCode(), ExitSignal: vm.GetExitSignal(), Restarts: vm.GetRestarts(),
		RestartOnFail: vm.GetRestart().GetOnFailure(), ExitCodes: vm.GetRestart().GetExitCodes(), Startup: vm.GetStartup(),
		CreatedNs: vm.GetCreatedAtNs(), StartedNs: vm.GetStartedAtNs(), ExitedNs: vm.GetExitedAtNs(), Message: vm.GetMessage(),
		Nets: vm.GetNets(), Blocks: vm.GetBlocks()}
	if v.CPUs == nil {
		v.CPUs = []uint32{}
	}
	if v.Args == nil {
		v.Args = []string{}
	}
	if v.Nets == nil {
		v.Nets = []*daemonv1.NetAttachment{}
	}
	if v.Blocks == nil {
		v.Blocks = []*daemonv1.BlockAttachment{}
	}
	return v
}

func (s *Server) listVMs(ctx context.Context, c clientAPI) ([]vmView, error) {
	res, err := c.Info(ctx, &daemonv1.InfoRequest{})
	if err != nil {
		return nil, err
	}
	out := []vmView{}
	for _, vm := range res.GetVms() {
		out = append(out, vmOf(vm))
	}
	return out, nil
}

func (s *Server) getVMs(r *http.Request) (any, error) {
	_, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	return s.listVMs(ctx, c.API)
}

func (s *Server) getVM(r *http.Request) (any, error) {
	h, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	n, err := targetName(h, "VM", r.URL.Query().Get("name"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	res, err := c.API.Info(ctx, &daemonv1.InfoRequest{Name: n})
	if err != nil {
		return nil, err
	}
	for _, vm := range res.GetVms() {
		if vm.GetName() == n {
			return map[string]any{"vm": vmOf(vm), "series": s.watcherOf(h).seriesOf(n)}, nil
		}
	}
	return nil, httpError{http.StatusNotFound, fmt.Sprintf("no VM %s on host %s", n, h.cfg.Name)}
}

// overview is one host's part of the fleet overview.
type overview struct {
	Host      string            `json:"host"`
	Domain    string            `json:"domain"`
	VMs       []vmView          `json:"vms"`
	Policies  []policyView      `json:"policies"`
	Plugins   []pluginView      `json:"plugins"`
	Blocks    []blockView       `json:"blocks"`
	Events    []eventView       `json:"events"`
	HostStats map[string]any    `json:"host_stats,omitempty"`
	Errors    map[string]string `json:"errors"`

	// PluginsSummary is set when Plugins is petreld's health summary,
	// all it shows a caller other than the host's owner: no versions,
	// restarts or problems.
	PluginsSummary bool `json:"plugins_summary"`
}

// pluginView is a plugin and its health.
type pluginView struct {
	Name     string   `json:"name"`
	Kind     string   `json:"kind"`
	Version  string   `json:"version"`
	Health   string   `json:"health"`
	Restarts uint32   `json:"restarts"`
	Problems []string `json:"problems"`
}

func (s *Server) getOverview(r *http.Request) (any, error) {
	h, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	d, err := h.Domain()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	o := overview{Host: h.cfg.Name, Domain: d.String(), VMs: []vmView{}, Policies: []policyView{}, Plugins: []pluginView{}, Blocks: []blockView{}, Errors: map[string]string{}}
	var mu sync.Mutex
	fail := func(part string, err error) {
		mu.Lock()
		o.Errors[part] = describe(err, h.cfg)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(4)
	go func() {
		defer wg.Done()
		vms, err := s.listVMs(ctx, c.API)
		if err != nil {
			fail("vms", err)
			return
		}
		o.VMs = vms
	}()
	go func() {
		defer wg.Done()
		ps, err := listPolicies(ctx, c.API)
		if err != nil {
			fail("policies", err)
			return
		}
		o.Policies = ps
	}()
	go func() {
		defer wg.Done()
		res, err := c.ListPlugins(ctx)
		if err != nil {
			fail("plugins", err)
			return
		}
		o.PluginsSummary = res.Summary
		for _, p := range res.Plugins {
			v := pluginView{Name: p.GetName(), Kind: p.GetKind(), Version: p.GetVersion(), Health: p.GetHealth(), Restarts: p.GetRestarts(), Problems: []string{}}
			for _, pr := range p.GetProblems() {
				v.Problems = append(v.Problems, strings.TrimSpace(pr.GetDescription()+" "+pr.GetFix()))
			}
			o.Plugins = append(o.Plugins, v)
		}
	}()
	go func() {
		defer wg.Done()
		bs, err := listBlocks(ctx, c.API)
		if err != nil {
			fail("blocks", err)
			return
		}
		o.Blocks = bs
	}()
	wg.Wait()
	snap := s.watcherOf(h).snapshot()
	o.Events = snap.Events
	if o.Events == nil {
		o.Events = []eventView{}
	}
	if snap.EventsErr != "" {
		o.Errors["events"] = snap.EventsErr
	}
	if hs := snap.Last.GetHostSample(); hs != nil {
		o.HostStats = map[string]any{"cpus": hs.GetCpus(), "memory_total": hs.GetMemoryTotalBytes(), "memory_available": hs.GetMemoryAvailableBytes(),
			"load1": hs.GetLoad1(), "vm_memory": hs.GetVmMemoryBytes()}
	}
	return o, nil
}

// createRequest is the deploy form.
type createRequest struct {
	Name      string   `json:"name"`
	ImageSHA  string   `json:"image_sha256"`
	ImageRef  string   `json:"image_ref"`
	ImageName string   `json:"image_name"`
	Backend   string   `json:"backend"`
	Memory    string   `json:"memory"`
	CPUs      []uint32 `json:"cpus"`
	Args      []string `json:"args"`
	Nets      []struct {
		Name   string `json:"name"`
		Bridge string `json:"bridge"`
		MAC    string `json:"mac"`
	} `json:"nets"`
	Blocks []struct {
		Name       string `json:"name"`
		Device     string `json:"device"`
		SectorSize uint32 `json:"sector_size"`
	} `json:"blocks"`
	RestartOnFail bool    `json:"restart_on_fail"`
	ExitCodes     []int32 `json:"exit_codes"`
	Startup       int32   `json:"startup"`
	Force         bool    `json:"force"`
}

// request checks the form as `petrel create` checks its command line and
// makes the daemon's request.
func (cr *createRequest) request(h *host) (*daemonv1.CreateRequest, error) {
	n, err := targetName(h, "VM name", cr.Name)
	if err != nil {
		return nil, err
	}
	ref := strings.TrimSpace(cr.ImageRef)
	switch {
	case ref != "" && cr.ImageSHA != "":
		return nil, badRequest("give an image file or a registry reference, not both")
	case ref != "":
		if _, err := oci.ParseReference(ref); err != nil {
			return nil, badRequest("registry reference %q: %v", ref, err)
		}
		if cr.ImageName == "" {
			cr.ImageName = ref
		}
	case len(cr.ImageSHA) != 64:
		return nil, badRequest("choose an image file to upload, or give a registry reference")
	}
	req := &daemonv1.CreateRequest{Name: n, ImageSha256: cr.ImageSHA, ImageRef: ref, ImageName: cr.ImageName, Backend: strings.TrimSpace(cr.Backend),
		Cpus: cr.CPUs, Args: cr.Args, Startup: cr.Startup, Force: cr.Force,
		Restart: &daemonv1.RestartPolicy{OnFailure: cr.RestartOnFail || len(cr.ExitCodes) > 0, ExitCodes: cr.ExitCodes}}
	if m := strings.TrimSpace(cr.Memory); m != "" {
		mb, err := size.Parse(m, math.MaxUint32)
		if err != nil {
			return nil, badRequest("memory %q: %v", m, err)
		}
		if mb == 0 {
			return nil, badRequest("memory 0: a VM needs memory; leave it empty for petreld's default (32 MB)")
		}
		req.MemoryMb = uint32(mb)
	}
	for i, nt := range cr.Nets {
		if nt.Name == "" || nt.Bridge == "" {
			return nil, badRequest("network %d: give the device name from the image's manifest and a bridge", i+1)
		}
		req.Nets = append(req.Nets, &daemonv1.NetAttachment{Name: nt.Name, Bridge: nt.Bridge, Mac: nt.MAC})
	}
	for i, b := range cr.Blocks {
		if b.Name == "" {
			return nil, badRequest("block device %d: give the device name from the image's manifest", i+1)
		}
		req.Blocks = append(req.Blocks, &daemonv1.BlockAttachment{Name: b.Name, Device: b.Device, SectorSize: b.SectorSize})
	}
	return req, nil
}

func (s *Server) createVM(r *http.Request) (any, error) {
	h, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	var cr createRequest
	if err := decode(r, &cr); err != nil {
		return nil, err
	}
	req, err := cr.request(h)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	vm, err := c.API.Create(ctx, req)
	if err != nil {
		return nil, err
	}
	return vmOf(vm), nil
}

// named decodes a request that acts on one named thing (a VM, a block
// device, a policy path) of the host the URL names, and returns the
// host's client, the request and the name qualified for that host: the
// preamble every such action shares.
func (s *Server) named(r *http.Request, what string) (*client.Client, nameRequest, string, error) {
	var nr nameRequest
	h, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, nr, "", err
	}
	if err := decode(r, &nr); err != nil {
		return nil, nr, "", err
	}
	n, err := targetName(h, what, nr.Name)
	if err != nil {
		return nil, nr, "", err
	}
	return c, nr, n, nil
}

// nameRequest names a VM, device or path to act on.
type nameRequest struct {
	Name        string   `json:"name"`
	ReplaceArgs bool     `json:"replace_args"`
	Args        []string `json:"args"`
}

func (s *Server) restartVM(r *http.Request) (any, error) {
	c, nr, n, err := s.named(r, "VM")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	vm, err := c.API.Restart(ctx, &daemonv1.RestartRequest{Name: n, ReplaceArgs: nr.ReplaceArgs, Args: nr.Args})
	if err != nil {
		return nil, err
	}
	return vmOf(vm), nil
}

func (s *Server) destroyVM(r *http.Request) (any, error) {
	c, _, n, err := s.named(r, "VM")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	if _, err := c.API.Destroy(ctx, &daemonv1.DestroyRequest{Name: n}); err != nil {
		return nil, err
	}
	return map[string]string{"destroyed": n}, nil
}

func (s *Server) getBridges(r *http.Request) (any, error) {
	_, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	res, err := c.API.Bridges(ctx, &daemonv1.BridgesRequest{})
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, b := range res.GetBridges() {
		out = append(out, map[string]any{"name": b.GetName(), "mtu": b.GetMtu(), "up": b.GetUp()})
	}
	return out, nil
}

// policyView is a policy entry as the page shows it: limits, use and
// where the limits come from. The limits are policy.Policy's fields with
// its JSON keys, except that an allowance the policy leaves unstated is
// null rather than absent, which the page tests for.
type policyView struct {
	Path         string   `json:"path"`
	VMs          int      `json:"vms"`
	MemoryMB     int      `json:"memory_mb"`
	CPUs         []int    `json:"cpus"`
	BlockMB      *int     `json:"block_mb"`
	ImagesMB     *int     `json:"images_mb"`
	Bridges      []string `json:"bridges"`
	UsedVMs      int32    `json:"used_vms"`
	UsedMemoryMB int64    `json:"used_memory_mb"`
	UsedBlockMB  int64    `json:"used_block_mb"`
	UsedImagesMB int64    `json:"used_images_mb"`
	Local        bool     `json:"local"`
	Certificate  bool     `json:"certificate"`
}

func listPolicies(ctx context.Context, c clientAPI) ([]policyView, error) {
	res, err := c.PolicyList(ctx, &daemonv1.PolicyListRequest{})
	if err != nil {
		return nil, err
	}
	out := []policyView{}
	for _, e := range res.GetPolicies() {
		p := policy.FromProto(e.GetPolicy())
		v := policyView{Path: e.GetPath(), VMs: p.VMs, MemoryMB: p.MemoryMB, CPUs: p.CPUs, BlockMB: p.BlockMB, ImagesMB: p.ImagesMB,
			Bridges: p.Bridges, UsedVMs: e.GetUsedVms(), UsedMemoryMB: e.GetUsedMemoryMb(), UsedBlockMB: e.GetUsedBlockMb(),
			UsedImagesMB: e.GetUsedImagesMb(), Local: e.GetLocal() != nil, Certificate: e.GetCertificate() != nil}
		if v.CPUs == nil {
			v.CPUs = []int{}
		}
		if v.Bridges == nil {
			v.Bridges = []string{}
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *Server) getPolicies(r *http.Request) (any, error) {
	_, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	return listPolicies(ctx, c.API)
}

// policyForm is the policy form, shared by policy add and signing. VMs
// and CPU ids are int32, what the daemon API carries, so that decoding
// refuses larger numbers; sizes are text in the CLI's spellings.
type policyForm struct {
	Path    string   `json:"path"`
	VMs     int32    `json:"vms"`
	Memory  string   `json:"memory"`
	CPUs    []int32  `json:"cpus"`
	Block   string   `json:"block"`
	Images  string   `json:"images"`
	Bridges []string `json:"bridges"`
}

// policy checks the form as `petrel policy add` checks its flags and
// returns the policy it describes; an empty block or image size leaves
// that allowance unstated.
func (f *policyForm) policy() (policy.Policy, error) {
	if f.VMs < 0 {
		return policy.Policy{}, badRequest("VMs: must be 0 or more")
	}
	if strings.TrimSpace(f.Memory) == "" {
		return policy.Policy{}, badRequest("memory: required (0 allows none)")
	}
	mem, err := size.Parse(f.Memory, math.MaxInt64)
	if err != nil {
		return policy.Policy{}, badRequest("memory %q: %v", f.Memory, err)
	}
	p := policy.Policy{VMs: int(f.VMs), MemoryMB: int(mem), Bridges: slices.DeleteFunc(f.Bridges, func(b string) bool { return strings.TrimSpace(b) == "" })}
	for _, c := range f.CPUs {
		if c < 0 {
			return policy.Policy{}, badRequest("CPU %d: CPU ids are 0 or more", c)
		}
		p.CPUs = append(p.CPUs, int(c))
	}
	if strings.TrimSpace(f.Block) != "" {
		b, err := size.Parse(f.Block, math.MaxInt64)
		if err != nil {
			return policy.Policy{}, badRequest("block storage %q: %v", f.Block, err)
		}
		n := int(b)
		p.BlockMB = &n
	}
	if strings.TrimSpace(f.Images) != "" {
		i, err := size.Parse(f.Images, math.MaxInt64)
		if err != nil {
			return policy.Policy{}, badRequest("image storage %q: %v", f.Images, err)
		}
		n := int(i)
		p.ImagesMB = &n
	}
	return p, nil
}

func (s *Server) addPolicy(r *http.Request) (any, error) {
	h, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	var f policyForm
	if err := decode(r, &f); err != nil {
		return nil, err
	}
	path, err := targetName(h, "policy path", f.Path)
	if err != nil {
		return nil, err
	}
	p, err := f.policy()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	e, err := c.API.PolicyAdd(ctx, &daemonv1.PolicyAddRequest{Path: path, Policy: policy.ToProto(p)})
	if err != nil {
		return nil, err
	}
	return map[string]string{"path": e.GetPath()}, nil
}

func (s *Server) removePolicy(r *http.Request) (any, error) {
	c, _, path, err := s.named(r, "policy path")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	if _, err := c.API.PolicyRemove(ctx, &daemonv1.PolicyRemoveRequest{Path: path}); err != nil {
		return nil, err
	}
	return map[string]string{"removed": path}, nil
}
