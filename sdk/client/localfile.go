package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/petrel-vmm/petrel/sdk/fdpass"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// progressEvery is how often a transfer of a passed file reports its
// progress.
const progressEvery = 100 * time.Millisecond

// passFile passes f to petreld for one transfer when the client talks to
// a local petreld that takes files (package fdpass), and returns the
// token naming it. ok is false when it cannot be passed, and the caller
// sends the content through the daemon API instead; err is set only when
// petreld took the connection and refused the file.
func (c *Client) passFile(ctx context.Context, f *os.File) (tok string, ok bool, err error) {
	if c.files == "" {
		return "", false, nil
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", false, nil
	}
	tok, err = fdpass.Send(ctx, c.files, f)
	if errors.Is(err, fdpass.ErrUnavailable) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return tok, true, nil
}

// followOffset reports the progress of a transfer of the passed file f,
// whose offset petreld moves as it reads or writes it: progress is
// called with the bytes done beyond start, every progressEvery and once
// more when the returned stop is called. stop ends the goroutine and
// waits for it.
func followOffset(f *os.File, start, total int64, progress Progress) (stop func()) {
	if progress == nil {
		return func() {}
	}
	report := func() {
		if off, err := fdpass.Offset(f); err == nil {
			progress(off-start, total)
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				report()
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		report()
	}
}

// uploadPassed sends first, which names a file passed to petreld, as
// the one message of an upload stream opened with open, and returns
// petreld's answer; progress follows the file f, total bytes from its
// offset, as petreld reads it.
func uploadPassed[Req, Resp any](ctx context.Context, f *os.File, total int64, progress Progress,
	open func(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error), first *Req) (*Resp, error) {
	start, err := fdpass.Offset(f)
	if err != nil {
		return nil, err
	}
	stop := followOffset(f, start, total, progress)
	defer stop()
	stream, err := open(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(first); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return stream.CloseAndRecv()
}

// downloadBlockLocal has petreld write block device name's content into
// tmp, passed under tok, and returns its size.
func (c *Client) downloadBlockLocal(ctx context.Context, name string, tmp *os.File, tok string, progress Progress) (int64, error) {
	stream, err := c.API.BlockDownload(ctx, &daemonv1.BlockDownloadRequest{Name: name, LocalFile: tok})
	if err != nil {
		return 0, err
	}
	head, err := stream.Recv()
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", name, err)
	}
	stop := followOffset(tmp, 0, head.GetTotal(), progress)
	_, err = stream.Recv()
	stop()
	if err == nil {
		return 0, fmt.Errorf("download %s: petreld sent content for a passed file", name)
	}
	if !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("download %s: %w", name, err)
	}
	n, err := fdpass.Offset(tmp)
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", name, err)
	}
	if n != head.GetTotal() {
		return n, fmt.Errorf("download %s: petreld wrote %d bytes, not the device's %d", name, n, head.GetTotal())
	}
	return n, nil
}
