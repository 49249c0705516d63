package endpoint

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// benchChunk is the size of a transfer message, as the client library
// sends them, and benchSize that of a transfer.
const (
	benchChunk = 1 << 20
	benchSize  = 256 << 20
)

// benchDaemon is a daemon whose transfers keep nothing and read no disk:
// uploads are read to their end, a download sends the same chunk until
// it has sent benchSize bytes.
type benchDaemon struct {
	daemonv1.UnimplementedDaemonServer
	chunk []byte
}

func (benchDaemon) BlockUpload(stream daemonv1.Daemon_BlockUploadServer) error {
	var n int64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&daemonv1.BlockInfo{SizeMb: n >> 20})
		}
		if err != nil {
			return err
		}
		n += int64(len(m.GetData()))
	}
}

func (benchDaemon) UploadImage(stream daemonv1.Daemon_UploadImageServer) error {
	var n int64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&daemonv1.ImageRef{Size: n})
		}
		if err != nil {
			return err
		}
		n += int64(len(m.GetData()))
	}
}

func (d benchDaemon) BlockDownload(req *daemonv1.BlockDownloadRequest, stream daemonv1.Daemon_BlockDownloadServer) error {
	if err := stream.Send(&daemonv1.BlockChunk{Name: req.GetName(), Total: benchSize}); err != nil {
		return err
	}
	for n := int64(0); n < benchSize; n += int64(len(d.chunk)) {
		if err := stream.Send(&daemonv1.BlockChunk{Data: d.chunk}); err != nil {
			return err
		}
	}
	return nil
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelay is the cost of the endpoint's hop in a transfer: 1 MB
// messages of a block upload, a block download and an image upload,
// from a client over mutual TLS on loopback, through the endpoint, to a
// daemon on a unix socket that keeps nothing (no file, hash or disk),
// all in this process; and, for comparison, the same messages straight
// over the daemon's unix socket. It reports the rate and the CPU time
// of the whole process per GB: the relayed figure less the direct one
// is what TLS and the endpoint add to a remote transfer.
func BenchmarkRelay(b *testing.B) {
	chunk := make([]byte, benchChunk)
	rand.Read(chunk)
	e := startEndpoint(b, benchDaemon{chunk: chunk})
	local, err := client.Dial(e.sock)
	if err != nil {
		b.Fatal(err)
	}
	defer local.Close()
	ctx := context.Background()
	for _, via := range []struct {
		name string
		c    *client.Client
	}{{"endpoint", e.remote}, {"direct", local}} {
		api := via.c.API
		transfers := []struct {
			name string
			run  func() error
		}{
			{"block-upload", func() error {
				stream, err := api.BlockUpload(ctx)
				if err != nil {
					return err
				}
				if err := stream.Send(&daemonv1.BlockChunk{Name: "alice:disk", Total: benchSize}); err != nil {
					return err
				}
				for n := 0; n < benchSize; n += len(chunk) {
					if err := stream.Send(&daemonv1.BlockChunk{Data: chunk}); err != nil {
						return err
					}
				}
				_, err = stream.CloseAndRecv()
				return err
			}},
			{"block-download", func() error {
				stream, err := api.BlockDownload(ctx, &daemonv1.BlockDownloadRequest{Name: "alice:disk"})
				if err != nil {
					return err
				}
				for {
					if _, err := stream.Recv(); errors.Is(err, io.EOF) {
						return nil
					} else if err != nil {
						return err
					}
				}
			}},
			{"image-upload", func() error {
				stream, err := api.UploadImage(ctx)
				if err != nil {
					return err
				}
				for n := 0; n < benchSize; n += len(chunk) {
					if err := stream.Send(&daemonv1.ImageChunk{Data: chunk}); err != nil {
						return err
					}
				}
				_, err = stream.CloseAndRecv()
				return err
			}},
		}
		for _, tr := range transfers {
			b.Run(tr.name+"/"+via.name, func(b *testing.B) {
				b.SetBytes(benchSize)
				b.ResetTimer()
				cpu, start := cpuTime(b), time.Now()
				for i := 0; i < b.N; i++ {
					if err := tr.run(); err != nil {
						b.Fatal(err)
					}
				}
				used, d := cpuTime(b)-cpu, time.Since(start)
				b.StopTimer()
				gb := float64(benchSize) * float64(b.N) / (1 << 30)
				b.ReportMetric(used.Seconds()/gb, "cpu-s/GB")
				b.ReportMetric(gb*1024/d.Seconds(), "MiB/s")
			})
		}
	}
}
