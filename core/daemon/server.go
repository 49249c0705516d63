package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/config"
	"github.com/petrel-vmm/petrel/core/internal/block"
	"github.com/petrel-vmm/petrel/core/internal/console"
	"github.com/petrel-vmm/petrel/core/internal/events"
	"github.com/petrel-vmm/petrel/core/internal/pluginhost"
	"github.com/petrel-vmm/petrel/core/internal/supervisor"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/sdk/consolepack"
	"github.com/petrel-vmm/petrel/sdk/fdpass"
	"github.com/petrel-vmm/petrel/sdk/hypervisor"
	"github.com/petrel-vmm/petrel/sdk/network"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
	pluginv1 "github.com/petrel-vmm/petrel/sdk/proto/plugin/v1"
	"github.com/petrel-vmm/petrel/sdk/protocodec"
)

// APIVersion is the daemon API version served.
const APIVersion = 1

// server implements the daemon API on top of the supervisor. It embeds
// UnsafeDaemonServer rather than UnimplementedDaemonServer so that a
// method added to the daemon API and not served here fails to compile
// instead of answering "unimplemented".
type server struct {
	daemonv1.UnsafeDaemonServer
	d *Daemon
	// files holds the files passed for transfers on this socket's files
	// socket: local clients' regular files on the administrators'
	// socket, or, where pipes is set, petrel-endpoint's pipes, through
	// which its callers' content streams.
	files *fdpass.Registry
	pipes bool
}

// grpcError maps internal error classes to status codes; the CLI maps
// codes to its exit codes.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, block.ErrBusy):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, block.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, block.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, block.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, network.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, network.ErrUnavailable):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, policy.ErrExceeded):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, policy.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, supervisor.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, supervisor.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, hypervisor.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, hypervisor.ErrUnavailable):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func (s *server) Version(context.Context, *daemonv1.VersionRequest) (*daemonv1.VersionResponse, error) {
	return &daemonv1.VersionResponse{Version: Version, ApiVersion: APIVersion, MarkedBlockChunks: true}, nil
}

// UploadImage stores an image for the caller's domain, within the image
// storage its policies and the host allow (images.go). An image the store
// has already is not received again when the first chunk names its
// digest.
func (s *server) UploadImage(stream daemonv1.Daemon_UploadImageServer) error {
	first, err := stream.Recv()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "upload: %v", err)
	}
	domain := callerDomain(authz.IdentityFrom(stream.Context()))
	declared, wantSHA := first.GetSize(), first.GetSha256()
	// A local client may pass the image's file instead of sending it,
	// and petrel-endpoint a pipe; it is taken at once, so that no
	// refusal leaves it waiting.
	local, pipe, err := s.passedSource(first.GetLocalFile(), declared)
	if err != nil {
		return err
	}
	if local != nil {
		defer local.Close()
	}
	if declared > MaxImageBytes {
		return status.Errorf(codes.InvalidArgument, "image of %d bytes exceeds the limit of %d bytes", declared, MaxImageBytes)
	}
	if declared < 0 {
		return status.Errorf(codes.InvalidArgument, "image size %d is negative", declared)
	}
	if wantSHA != "" && !store.IsImageName(wantSHA) {
		return status.Errorf(codes.InvalidArgument, "image digest %.80q is not a lowercase hex SHA-256", wantSHA)
	}
	// Expired claims no longer count, and their images go.
	s.d.collectImages()
	if wantSHA != "" {
		ref, ok, err := s.d.claimKnown(domain, wantSHA)
		if err != nil {
			return err
		}
		if ok {
			return stream.SendAndClose(ref)
		}
	}
	id, limit, err := s.d.admitUpload(domain, declared)
	if err != nil {
		return err
	}
	defer s.d.release(id)
	r := &chunkReader{stream: stream, buf: first.GetData(), held: first.GetData()}
	var src io.Reader = r
	if local != nil {
		var stop func()
		src, stop = passedReader(stream.Context(), local, pipe)
		defer stop()
	}
	st, err := s.d.store.StageImage(src, limit)
	if err != nil {
		switch {
		case r.err != nil:
			return status.Errorf(codes.Canceled, "upload interrupted: %v", r.err)
		case stream.Context().Err() != nil:
			return status.Errorf(codes.Canceled, "upload interrupted: %v", stream.Context().Err())
		case errors.Is(err, store.ErrTooLarge):
			return s.d.uploadTooLarge(domain, declared, limit)
		}
		return status.Errorf(codes.Internal, "store image: %v", err)
	}
	defer st.Discard()
	if local != nil {
		sum := ""
		if err := uploadEnd(stream.Recv, func(m *daemonv1.ImageChunk) {
			if v := m.GetSha256(); v != "" {
				sum = v
			}
		}); err != nil {
			return err
		}
		if sum != "" {
			wantSHA = sum
		}
	}
	if declared > 0 && st.Size != declared {
		// The stream ended early: a client that stopped reading its
		// source half-way must not leave a truncated image.
		return status.Errorf(codes.InvalidArgument, "the image is %d bytes, not the %d its upload declared", st.Size, declared)
	}
	if wantSHA != "" && st.SHA256 != wantSHA {
		return status.Errorf(codes.InvalidArgument, "the image's SHA-256 is %s, not the %s its upload declared", st.SHA256, wantSHA)
	}
	ref, err := s.d.commitUpload(domain, st, id)
	if err != nil {
		return err
	}
	return stream.SendAndClose(ref)
}

// passedFile returns the file passed on this socket's files socket
// under tok; the caller closes it.
func (s *server) passedFile(tok string) (*os.File, error) {
	if s.files == nil {
		return nil, status.Error(codes.InvalidArgument, "this socket takes no passed files; send the content instead")
	}
	f, err := s.files.Take(tok)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "passed file: %v", err)
	}
	return f, nil
}

// passedSource is passedFile for the file an upload's content is read
// from, named by tok (nil when tok is empty: the content is sent). On
// the administrators' socket it must be a regular file open for
// reading, holding declared bytes from its offset; on the endpoint's, a
// pipe open for reading (pipe is then true), whose content ends where
// the endpoint closes it.
func (s *server) passedSource(tok string, declared int64) (f *os.File, pipe bool, err error) {
	if tok == "" {
		return nil, false, nil
	}
	if f, err = s.passedFile(tok); err != nil {
		return nil, false, err
	}
	if s.pipes {
		if err := fdpass.ReadablePipe(f); err != nil {
			f.Close()
			return nil, false, status.Errorf(codes.InvalidArgument, "passed file: %v", err)
		}
		return f, true, nil
	}
	size, err := fdpass.Readable(f)
	switch {
	case err != nil:
		err = status.Errorf(codes.InvalidArgument, "local file: %v", err)
	case size != declared:
		err = status.Errorf(codes.InvalidArgument, "the passed file holds %d bytes from its offset, not the %d the upload declared", size, declared)
	}
	if err != nil {
		f.Close()
		return nil, false, err
	}
	return f, false, nil
}

// passedReader reads f, a passed file, for a transfer that ends with
// ctx: a pipe's read waiting for the endpoint fails at once when ctx
// ends, and a regular file is read no further. stop ends the watch on
// ctx.
func passedReader(ctx context.Context, f *os.File, pipe bool) (r io.Reader, stop func()) {
	if !pipe {
		return ctxReader{ctx: ctx, r: f}, func() {}
	}
	unwatch := context.AfterFunc(ctx, func() { f.SetDeadline(time.Now()) })
	return f, func() { unwatch() }
}

// uploadEnd reads what follows the content of an upload from a passed
// file: from the endpoint, the checksum its caller sent, then the
// stream's end, handing each message to note. Only the end (io.EOF) says
// the content is whole: a pipe also ends when the endpoint gives up on
// its caller, whose stream is then cancelled.
func uploadEnd[M interface{ GetData() []byte }](recv func() (M, error), note func(M)) error {
	for {
		msg, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Canceled, "upload interrupted: %v", err)
		}
		if len(msg.GetData()) > 0 {
			return status.Error(codes.InvalidArgument, "an upload from a passed file carries no data in its messages")
		}
		note(msg)
	}
}

// ctxReader reads r until ctx ends: a passed file's content is read in
// a loop that the caller's cancellation must stop.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// chunkReader turns an upload stream into an io.Reader. Each message's
// data, once read, goes back to the codec's pool (protocodec.Release)
// for the next message to be decoded into.
type chunkReader struct {
	stream daemonv1.Daemon_UploadImageServer
	buf    []byte
	held   []byte // the data buf is the rest of
	err    error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		protocodec.Release(c.held)
		c.held = nil
		msg, err := c.stream.Recv()
		if err == io.EOF {
			return 0, io.EOF
		}
		if err != nil {
			c.err = err
			return 0, err
		}
		c.buf, c.held = msg.GetData(), msg.GetData()
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func restartPolicy(p *daemonv1.RestartPolicy) supervisor.RestartPolicy {
	return supervisor.RestartPolicy{OnFailure: p.GetOnFailure(), ExitCodes: p.GetExitCodes()}
}

func toVM(r supervisor.Record) *daemonv1.VM {
	vm := &daemonv1.VM{
		Name: r.Name, State: r.State, Backend: r.Backend, ImageSha256: r.ImageSHA256, ImageName: r.ImageName,
		MemoryMb: r.MemoryMB, Cpus: r.CPUs, Args: r.Args,
		Restart: &daemonv1.RestartPolicy{OnFailure: r.Restart.OnFailure, ExitCodes: r.Restart.ExitCodes},
		Startup: r.Startup, Pid: r.Pid, ShimPid: r.ShimPid, HasExit: r.HasExit, ExitCode: r.ExitCode,
		ExitSignal: r.ExitSignal, Restarts: r.Restarts, Message: r.Message, Argv: r.Argv,
		CreatedAtNs: r.CreatedAt.UnixNano(),
	}
	for _, b := range r.Blocks {
		vm.Blocks = append(vm.Blocks, &daemonv1.BlockAttachment{Name: b.Name, Device: b.Device, SectorSize: b.SectorSize})
	}
	for _, n := range r.Nets {
		vm.Nets = append(vm.Nets, &daemonv1.NetAttachment{Name: n.Name, Bridge: n.Bridge, Mac: n.MAC, HostIf: n.HostIf})
	}
	vm.InitrdSha256, vm.KernelCmdline = r.InitrdSHA256, r.KernelCmdline
	vm.ImageRef, vm.ImageDigest = r.ImageRef, r.ImageDigest
	if !r.StartedAt.IsZero() {
		vm.StartedAtNs = r.StartedAt.UnixNano()
	}
	if !r.ExitedAt.IsZero() {
		vm.ExitedAtNs = r.ExitedAt.UnixNano()
	}
	return vm
}

// Create deploys a VM. Its images count against the image storage of
// every ancestor (images.go) before the supervisor admits the rest; when
// the create fails, images that nothing else holds are removed at once.
func (s *server) Create(ctx context.Context, req *daemonv1.CreateRequest) (*daemonv1.VM, error) {
	caller := callerDomain(authz.IdentityFrom(ctx))
	var pulled *daemonv1.PulledImage
	if req.GetImageRef() != "" {
		// What the name alone refuses is refused before the pull.
		if err := s.nameFree(req.GetName(), req.GetForce()); err != nil {
			return nil, err
		}
		var err error
		if pulled, err = s.pullForCreate(ctx, caller, req); err != nil {
			return nil, err
		}
	}
	if req.GetImageName() == "" {
		req.ImageName = req.GetImageRef()
	}
	// Digests petreld lacks are named before anything else, and without
	// dropping the caller's claims, so that a client uploads them and
	// creates again. (A bad name is reported before any upload.)
	if _, err := name.ParseVM(req.GetName()); err == nil {
		if err := s.d.unknownImages(caller, []string{req.GetImageSha256(), req.GetInitrdSha256()}); err != nil {
			return nil, err
		}
	}
	rec, err := s.d.createVM(ctx, caller, supervisor.CreateParams{
		Name: req.GetName(), Backend: req.GetBackend(), ImageSHA256: req.GetImageSha256(), ImageName: req.GetImageName(),
		MemoryMB: req.GetMemoryMb(), CPUs: req.GetCpus(), Args: req.GetArgs(), Restart: restartPolicy(req.GetRestart()),
		Startup: req.GetStartup(), Force: req.GetForce(), Blocks: blockParams(req.GetBlocks()),
		Nets: netParams(req.GetNets()), InitrdSHA256: req.GetInitrdSha256(), KernelCmdline: req.GetKernelCmdline(),
		ImageRef: req.GetImageRef(), ImageDigest: pulled.GetManifestDigest(),
	})
	if err != nil {
		return nil, err
	}
	return toVM(rec), nil
}

// nameFree refuses a create whose name is not a VM name, or names a VM
// that exists when the create may not replace it: a check the create
// makes again, made first when what precedes it (a pull) is costly.
func (s *server) nameFree(vm string, force bool) error {
	p, err := name.ParseVM(vm)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if force {
		return nil
	}
	recs, err := s.d.sup.Info(p.String())
	if errors.Is(err, supervisor.ErrNotFound) {
		return nil
	}
	if err != nil {
		return grpcError(err)
	}
	for _, r := range recs {
		if r.Name == p.String() {
			return grpcError(fmt.Errorf("%w: %s (use --force to replace it)", supervisor.ErrExists, p))
		}
	}
	return nil
}

func blockParams(in []*daemonv1.BlockAttachment) []supervisor.BlockParam {
	var out []supervisor.BlockParam
	for _, b := range in {
		out = append(out, supervisor.BlockParam{Name: b.GetName(), Device: b.GetDevice(), SectorSize: b.GetSectorSize()})
	}
	return out
}

func netParams(in []*daemonv1.NetAttachment) []supervisor.NetParam {
	var out []supervisor.NetParam
	for _, n := range in {
		out = append(out, supervisor.NetParam{Name: n.GetName(), Bridge: n.GetBridge(), MAC: n.GetMac()})
	}
	return out
}

func (s *server) Bridges(ctx context.Context, _ *daemonv1.BridgesRequest) (*daemonv1.BridgesResponse, error) {
	if s.d.network == nil {
		return nil, status.Error(codes.FailedPrecondition, "no network plugin is configured on this host")
	}
	bridges, err := s.d.network.Bridges(ctx)
	if err != nil {
		return nil, grpcError(err)
	}
	out := &daemonv1.BridgesResponse{}
	for _, b := range bridges {
		out.Bridges = append(out.Bridges, &daemonv1.HostBridge{Name: b.GetName(), Mtu: b.GetMtu(), Mac: b.GetMac(), Up: b.GetUp(), Members: b.GetMembers()})
	}
	return out, nil
}

func (s *server) Destroy(ctx context.Context, req *daemonv1.DestroyRequest) (*daemonv1.DestroyResponse, error) {
	if err := s.d.sup.Destroy(ctx, req.GetName()); err != nil {
		return nil, grpcError(err)
	}
	// Statistics stop listing it now, not at the next collection.
	if p, err := name.ParseVM(req.GetName()); err == nil {
		s.d.stats.Forget(p.String())
	}
	s.d.collectImages()
	return &daemonv1.DestroyResponse{}, nil
}

func (s *server) Restart(ctx context.Context, req *daemonv1.RestartRequest) (*daemonv1.VM, error) {
	var args []string
	if req.GetReplaceArgs() {
		args = append([]string{}, req.GetArgs()...)
	}
	rec, err := s.d.sup.Restart(ctx, req.GetName(), args)
	if err != nil {
		return nil, grpcError(err)
	}
	return toVM(rec), nil
}

func (s *server) Info(_ context.Context, req *daemonv1.InfoRequest) (*daemonv1.InfoResponse, error) {
	recs, err := s.d.sup.Info(req.GetName())
	if err != nil {
		return nil, grpcError(err)
	}
	out := &daemonv1.InfoResponse{}
	for _, r := range recs {
		out.Vms = append(out.Vms, toVM(r))
	}
	return out, nil
}

// Bounds of one console message to a client that accepts batches: enough
// lines that a busy console costs few messages, few enough bytes to stay
// well below the 4 MB a gRPC client accepts by default (a line is at most
// 1 MB).
const (
	consoleBatchLines = 4096
	consoleBatchBytes = 512 << 10
)

// toConsoleLine fills m from l.
func toConsoleLine(l *console.Line, m *daemonv1.ConsoleLine) {
	if !l.Time.IsZero() {
		m.TimeNs = l.Time.UnixNano()
	}
	m.Text, m.Truncated, m.Dropped = l.Text, l.Truncated, l.Dropped
}

// sendLines sends lines, one per message or, when batch, as few messages
// as the bounds allow (the first line of each with the rest in More).
func sendLines(stream daemonv1.Daemon_ConsoleServer, lines []console.Line, batch bool) error {
	if !batch {
		for i := range lines {
			var m daemonv1.ConsoleLine
			toConsoleLine(&lines[i], &m)
			if err := stream.Send(&m); err != nil {
				return err
			}
		}
		return nil
	}
	for len(lines) > 0 {
		n, size := 0, 0
		for n < len(lines) && n < consoleBatchLines && (n == 0 || size+len(lines[n].Text) <= consoleBatchBytes) {
			size += len(lines[n].Text)
			n++
		}
		msgs := make([]daemonv1.ConsoleLine, n)
		more := make([]*daemonv1.ConsoleLine, n-1)
		for i := range msgs {
			toConsoleLine(&lines[i], &msgs[i])
			if i > 0 {
				more[i-1] = &msgs[i]
			}
		}
		msgs[0].More = more
		if err := stream.Send(&msgs[0]); err != nil {
			return err
		}
		lines = lines[n:]
	}
	return nil
}

// sendPacked sends lines packed (PackedConsoleLines), in as few messages
// as the bounds of a batch allow: a marker ends a message and its count
// goes with the lines after it. A line with a newline in its text, which
// packing cannot carry, goes alone as a plain line, which clients that
// ask for packed lines accept too.
func sendPacked(stream daemonv1.Daemon_ConsoleServer, lines []console.Line) error {
	for len(lines) > 0 {
		p := &daemonv1.PackedConsoleLines{}
		if lines[0].Dropped > 0 {
			p.Dropped, p.StartNs = lines[0].Dropped, timeNs(lines[0].Time)
			lines = lines[1:]
		}
		n, size := 0, 0
		for n < len(lines) && n < consoleBatchLines && lines[n].Dropped == 0 && (n == 0 || size+len(lines[n].Text) <= consoleBatchBytes) &&
			strings.IndexByte(lines[n].Text, '\n') < 0 {
			size += len(lines[n].Text)
			n++
		}
		if n > 0 {
			r := consolepack.Pack(lines[:n], func(l *console.Line) (int64, string, bool) { return timeNs(l.Time), l.Text, l.Truncated })
			p.Count, p.StartNs, p.Deltas, p.Text, p.Truncated = r.Count, r.StartNs, r.Deltas, r.Text, r.Truncated
		}
		if n > 0 || p.Dropped > 0 {
			if err := stream.Send(&daemonv1.ConsoleLine{Packed: p}); err != nil {
				return err
			}
		}
		lines = lines[n:]
		if n == 0 && len(lines) > 0 && lines[0].Dropped == 0 {
			// A text with a newline.
			var m daemonv1.ConsoleLine
			toConsoleLine(&lines[0], &m)
			if err := stream.Send(&m); err != nil {
				return err
			}
			lines = lines[1:]
		}
	}
	return nil
}

// timeNs is t in unix ns, 0 for the zero time.
func timeNs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// Console sends the selected history of a VM's console and, with follow,
// its live lines until the VM's output ends or the client goes away. A
// follower that reads too slowly loses lines (never slowing the VM) and
// gets a marker counting them in their place.
func (s *server) Console(req *daemonv1.ConsoleRequest, stream daemonv1.Daemon_ConsoleServer) error {
	if req.GetCount() < 0 {
		return status.Errorf(codes.InvalidArgument, "console line count must not be negative, got %d", req.GetCount())
	}
	ring, err := s.d.sup.Console(req.GetName())
	if err != nil {
		return grpcError(err)
	}
	count := int(req.GetCount())
	if count > ring.Capacity() {
		return status.Errorf(codes.InvalidArgument, "console line count %d exceeds the %d lines kept per VM", count, ring.Capacity())
	}
	var since time.Time
	if req.GetSinceNs() != 0 {
		since = time.Unix(0, req.GetSinceNs())
	}
	batch := req.GetBatch()
	send := func(lines []console.Line) error { return sendLines(stream, lines, batch) }
	if req.GetPacked() {
		send = func(lines []console.Line) error { return sendPacked(stream, lines) }
	}
	if !req.GetFollow() {
		lines, err := ring.History(since, count)
		if err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		return send(lines)
	}
	hist, f, err := ring.Follow(since, count)
	if err != nil {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	defer f.Close()
	if err := send(hist); err != nil {
		return err
	}
	var buf []console.Line
	for {
		select {
		case <-f.Ready():
			buf = f.Take(buf)
			if err := send(buf); err != nil {
				return err
			}
		case <-f.Done():
			return send(f.Take(buf))
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (s *server) Events(req *daemonv1.EventsRequest, stream daemonv1.Daemon_EventsServer) error {
	sub := s.d.events.Subscribe(req.GetPath())
	defer sub.Close()
	for {
		select {
		case e := <-sub.C():
			if err := stream.Send(toEvent(e)); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

func toEvent(e events.Event) *daemonv1.Event {
	return &daemonv1.Event{TimeNs: e.Time.UnixNano(), Type: e.Type, Name: e.Name, ExitCode: e.ExitCode, ExitSignal: e.ExitSignal, Message: e.Message}
}

// capabilitiesTimeout bounds the Capabilities call Plugins makes of each
// backend, so that a hung plugin does not hang the listing.
const capabilitiesTimeout = 2 * time.Second

// Plugins lists the plugins petreld runs, with their versions (from each
// plugin's Info), health, what each misses and how to fix it (from its
// fingerprint) and, for backends, what they run; then the plugin binaries
// no configuration block enables.
func (s *server) Plugins(ctx context.Context, _ *daemonv1.PluginsRequest) (*daemonv1.PluginsResponse, error) {
	out := &daemonv1.PluginsResponse{}
	for _, st := range s.d.plugins.Status() {
		p := &daemonv1.Plugin{Name: st.Name, Path: st.Path, Restarts: uint32(st.Restarts), Kind: kindName(st.Kind)}
		if st.Info != nil {
			p.Version = st.Info.GetVersion()
		}
		p.Health = pluginHealth(st)
		switch {
		case !st.Running:
			p.Description = st.LastError
		case st.Fingerprint != nil:
			p.Description = st.Fingerprint.GetDescription()
			p.Attributes = st.Fingerprint.GetAttributes()
			p.Problems = st.Fingerprint.GetProblems()
		}
		if st.Running && st.Kind == pluginv1.Kind_KIND_HYPERVISOR {
			p.Targets = s.targets(ctx, st.Name)
		}
		out.Plugins = append(out.Plugins, p)
	}
	// Binaries in the plugin directory that no configuration block enables.
	known := map[string]bool{}
	for _, p := range out.Plugins {
		known[p.GetName()] = true
	}
	found, _ := filepath.Glob(filepath.Join(s.d.pluginDir, pluginhost.BinaryPrefix+"*"))
	for _, path := range found {
		n := strings.TrimPrefix(filepath.Base(path), pluginhost.BinaryPrefix)
		if known[n] {
			continue
		}
		out.Plugins = append(out.Plugins, &daemonv1.Plugin{Name: n, Path: path, Health: "not enabled",
			Description: fmt.Sprintf("found in %s; enable it with a backend, network or metrics block named %q", s.d.pluginDir, n)})
	}
	return out, nil
}

// PluginHealth is the part of Plugins every authenticated caller may
// read: each enabled plugin's name, kind, health and, for a running
// backend, targets. Paths, versions, descriptions, attributes and the
// binaries no block enables stay with Plugins, which is the host owner's.
func (s *server) PluginHealth(ctx context.Context, _ *daemonv1.PluginHealthRequest) (*daemonv1.PluginHealthResponse, error) {
	out := &daemonv1.PluginHealthResponse{}
	for _, st := range s.d.plugins.Status() {
		p := &daemonv1.PluginHealthEntry{Name: st.Name, Kind: kindName(st.Kind), Health: pluginHealth(st)}
		if st.Running && st.Kind == pluginv1.Kind_KIND_HYPERVISOR {
			p.Targets = s.targets(ctx, st.Name)
		}
		out.Plugins = append(out.Plugins, p)
	}
	return out, nil
}

// pluginHealth is a plugin's health as Plugins and PluginHealth report
// it: "down" when it is not running, else its fingerprint's health ("" before
// its first fingerprint).
func pluginHealth(st pluginhost.Status) string {
	switch {
	case !st.Running:
		return "down"
	case st.Fingerprint != nil:
		return healthName(st.Fingerprint.GetHealth().String())
	}
	return ""
}

// targets asks backend name what it runs; nil when it does not answer.
func (s *server) targets(ctx context.Context, name string) []string {
	hv, err := s.d.plugins.Hypervisor(name)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, capabilitiesTimeout)
	defer cancel()
	caps, err := hv.Capabilities(ctx)
	if err != nil {
		return nil
	}
	return caps.GetTargets()
}

// Host reports petreld's configuration as it runs, for `petrel doctor`.
func (s *server) Host(context.Context, *daemonv1.HostRequest) (*daemonv1.HostResponse, error) {
	cfg := s.d.cfg
	// Directories are absolute, so that tools reading the state directly
	// (petrel state inspect, doctor) find it whatever petreld's working
	// directory was.
	out := &daemonv1.HostResponse{
		DataDir: absDir(cfg.DataDir), RunDir: absDir(cfg.RunDir), PluginDir: s.d.pluginDir, Socket: s.d.admin.path,
		RemoteSocket: s.d.remote.path, DefaultBackend: cfg.DefaultBackend, Os: runtime.GOOS, Arch: runtime.GOARCH,
		ConfigFile: cfg.File,
	}
	for _, set := range []struct {
		blocks []config.PluginBlock
		names  *[]string
	}{{cfg.Backends, &out.Backends}, {cfg.Networks, &out.Networks}, {cfg.Metrics, &out.Metrics}} {
		for _, b := range set.blocks {
			if b.IsEnabled() {
				*set.names = append(*set.names, b.Name)
			}
		}
	}
	return out, nil
}

func kindName(k pluginv1.Kind) string {
	switch k {
	case pluginv1.Kind_KIND_HYPERVISOR:
		return "hypervisor"
	case pluginv1.Kind_KIND_NETWORK:
		return "network"
	case pluginv1.Kind_KIND_METRICS:
		return "metrics"
	}
	return "unknown"
}

func healthName(s string) string {
	switch s {
	case "HEALTH_HEALTHY":
		return "healthy"
	case "HEALTH_DEGRADED":
		return "degraded"
	case "HEALTH_UNHEALTHY":
		return "unhealthy"
	}
	return fmt.Sprintf("unknown (%s)", s)
}

// absDir is dir made absolute, or dir itself when that fails.
func absDir(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}
