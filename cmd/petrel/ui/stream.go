package ui

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-vmm/petrel/cmd/internal/size"
	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// uploadImage stores the request body in the host's image store; the
// page then creates a VM by the digest it gets back.
func (s *Server) uploadImage(r *http.Request) (any, error) {
	_, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	if r.ContentLength == 0 {
		return nil, badRequest("the image file is empty")
	}
	total := r.ContentLength
	if total < 0 {
		total = -1
	}
	ref, err := c.UploadImage(r.Context(), r.Body, total, nil)
	if err != nil {
		return nil, err
	}
	return map[string]any{"sha256": ref.GetSha256(), "size": ref.GetSize(), "name": filepath.Base(r.URL.Query().Get("name"))}, nil
}

// sse starts a server-sent event stream.
func sse(w http.ResponseWriter) (func(id, event string, v any) error, bool) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return nil, false
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "retry: 2000\n\n")
	fl.Flush()
	return func(id, event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var sb strings.Builder
		if id != "" {
			fmt.Fprintf(&sb, "id: %s\n", id)
		}
		if event != "" {
			fmt.Fprintf(&sb, "event: %s\n", event)
		}
		fmt.Fprintf(&sb, "data: %s\n\n", b)
		if _, err := io.WriteString(w, sb.String()); err != nil {
			return err
		}
		fl.Flush()
		return nil
	}, true
}

// console streams a VM's console: the history, then live lines while the
// VM runs, as server-sent events whose ids are the lines' times, so a
// page that reconnects (after the VM restarted, or a network hiccup)
// continues where it was. With download=1 it sends the history as a text
// file instead.
func (s *Server) console(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	h, c, err := s.hostAndClient(r)
	if err == nil {
		var n string
		if n, err = targetName(h, "VM", q.Get("name")); err == nil {
			if q.Get("download") == "1" {
				err = s.consoleFile(w, r, c, n)
			} else {
				err = s.consoleStream(w, r, c, n)
			}
		}
	}
	if err != nil {
		msg := err.Error()
		if h != nil {
			msg = describe(err, h.cfg)
		}
		writeJSON(w, statusOf(err), map[string]string{"error": msg})
	}
}

func (s *Server) consoleFile(w http.ResponseWriter, r *http.Request, c *client.Client, n string) error {
	stream, err := c.API.Console(r.Context(), &daemonv1.ConsoleRequest{Name: n})
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", strings.ReplaceAll(n, ":", "_")+"-console.txt"))
	for l := first; l != nil; {
		if l.GetDropped() == 0 {
			fmt.Fprintf(w, "%s %s\n", time.Unix(0, l.GetTimeNs()).UTC().Format("2006-01-02T15:04:05.000Z"), l.GetText())
		}
		if l, err = stream.Recv(); err != nil {
			break
		}
	}
	return nil
}

func (s *Server) consoleStream(w http.ResponseWriter, r *http.Request, c *client.Client, n string) error {
	req := &daemonv1.ConsoleRequest{Name: n, Follow: true}
	if id, err := strconv.ParseInt(r.Header.Get("Last-Event-ID"), 10, 64); err == nil && id > 0 {
		req.SinceNs = id + 1
	}
	stream, err := c.API.Console(r.Context(), req)
	if err != nil {
		return err
	}
	// The first line (or the end) says whether the stream works, before
	// the answer becomes a stream that can only end.
	first, ferr := stream.Recv()
	if ferr != nil && !errors.Is(ferr, io.EOF) {
		return ferr
	}
	send, ok := sse(w)
	if !ok {
		return nil
	}
	for l := first; l != nil; {
		id := strconv.FormatInt(l.GetTimeNs(), 10)
		if err := send(id, "", map[string]any{"t": l.GetTimeNs(), "text": l.GetText(), "dropped": l.GetDropped()}); err != nil {
			return nil
		}
		var err error
		if l, err = stream.Recv(); err != nil {
			if !errors.Is(err, io.EOF) && r.Context().Err() == nil {
				send("", "problem", map[string]string{"error": err.Error()})
			}
			break
		}
	}
	send("", "end", map[string]string{})
	return nil
}

// events streams a host's events as server-sent events, from the
// watcher that follows them.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	h, err := s.host(r.URL.Query().Get("host"))
	if err != nil {
		writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
		return
	}
	wt := s.watcherOf(h)
	if wt == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the console is shutting down"})
		return
	}
	ch, unsubscribe := wt.subscribe()
	defer unsubscribe()
	send, ok := sse(w)
	if !ok {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case e, open := <-ch:
			if !open {
				return
			}
			if send("", "", e) != nil {
				return
			}
		}
	}
}

// blockView is a block device as the page shows it.
type blockView struct {
	Name    string `json:"name"`
	SizeMB  int64  `json:"size_mb"`
	InUseBy string `json:"in_use_by,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
}

func listBlocks(ctx context.Context, c clientAPI) ([]blockView, error) {
	res, err := c.BlockList(ctx, &daemonv1.BlockListRequest{})
	if err != nil {
		return nil, err
	}
	out := []blockView{}
	for _, b := range res.GetDevices() {
		out = append(out, blockView{Name: b.GetName(), SizeMB: b.GetSizeMb(), InUseBy: b.GetInUseBy(), SHA256: b.GetSha256()})
	}
	return out, nil
}

func (s *Server) getBlocks(r *http.Request) (any, error) {
	_, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	return listBlocks(ctx, c.API)
}

func (s *Server) createBlock(r *http.Request) (any, error) {
	h, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Name string `json:"name"`
		Size string `json:"size"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	n, err := targetName(h, "block device", req.Name)
	if err != nil {
		return nil, err
	}
	mb, err := size.Parse(req.Size, math.MaxInt64>>20)
	if err != nil {
		return nil, badRequest("size %q: %v", req.Size, err)
	}
	if mb == 0 {
		return nil, badRequest("size 0: a block device needs a size")
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	b, err := c.API.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: n, SizeMb: mb})
	if err != nil {
		return nil, err
	}
	return blockView{Name: b.GetName(), SizeMB: b.GetSizeMb()}, nil
}

// uploadBlock replaces a device's content with the request body, which
// petreld accepts only once its checksum matches.
func (s *Server) uploadBlock(r *http.Request) (any, error) {
	h, c, err := s.hostAndClient(r)
	if err != nil {
		return nil, err
	}
	n, err := targetName(h, "block device", r.URL.Query().Get("name"))
	if err != nil {
		return nil, err
	}
	total := max(r.ContentLength, 0)
	b, err := c.UploadBlock(r.Context(), n, r.Body, total, false, nil)
	if err != nil {
		return nil, err
	}
	return blockView{Name: b.GetName(), SizeMB: b.GetSizeMb(), SHA256: b.GetSha256()}, nil
}

// downloadBlock sends a device's content as a file. Its length is
// announced, and a content that does not match petreld's checksum ends
// the connection before its last byte, so the browser never keeps a
// wrong file as complete.
func (s *Server) downloadBlock(w http.ResponseWriter, r *http.Request) {
	h, c, err := s.hostAndClient(r)
	var n string
	if err == nil {
		n, err = targetName(h, "block device", r.URL.Query().Get("name"))
	}
	var stream daemonv1.Daemon_BlockDownloadClient
	var head *daemonv1.BlockChunk
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel() // ends the stream, and frees the device, on every path
	if err == nil {
		stream, err = c.API.BlockDownload(ctx, &daemonv1.BlockDownloadRequest{Name: n})
	}
	if err == nil {
		head, err = stream.Recv()
	}
	if err != nil {
		msg := err.Error()
		if h != nil {
			msg = describe(err, h.cfg)
		}
		writeJSON(w, statusOf(err), map[string]string{"error": msg})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", strings.ReplaceAll(n, ":", "_")+".img"))
	if head.GetTotal() > 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(head.GetTotal(), 10))
	}
	// The last chunk is held back until the checksum that follows it
	// matches what was sent.
	hash := sha256.New()
	sum := ""
	var pending []byte
	for msg := head; ; {
		if v := msg.GetSha256(); v != "" {
			sum = v
		}
		if d := msg.GetData(); len(d) > 0 {
			if _, err := w.Write(pending); err != nil {
				return
			}
			hash.Write(d)
			pending = d
		}
		var err error
		if msg, err = stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) && sum != "" && sum == hex.EncodeToString(hash.Sum(nil)) {
				w.Write(pending)
				return
			}
			if s.opts.Logf != nil {
				s.opts.Logf("download of %s ended without a matching checksum: %v", n, err)
			}
			panic(http.ErrAbortHandler)
		}
	}
}

func (s *Server) destroyBlock(r *http.Request) (any, error) {
	c, _, n, err := s.named(r, "block device")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	if _, err := c.API.BlockDestroy(ctx, &daemonv1.BlockDestroyRequest{Name: n}); err != nil {
		return nil, err
	}
	return map[string]string{"destroyed": n}, nil
}
