package integration

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// transferBench is one petreld with its endpoint, the two clients of a
// transfer benchmark and the incompressible file they move.
type transferBench struct {
	r        *remoteEnv
	endpoint int // petrel-endpoint's process
	local    *client.Client
	stream   *client.Client // local, with the content streamed
	remote   *client.Client
	src      string
	size     int64
}

// endpointPID finds the petrel-endpoint listening on addr.
func endpointPID(b *testing.B, addr string) int {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if strings.HasSuffix(args[0], "petrel-endpoint") && slices.Contains(args, addr) {
			return pid
		}
	}
	b.Fatalf("no petrel-endpoint process listens on %s", addr)
	return 0
}

// cpuUsed is the CPU time the benchmark, petreld and petrel-endpoint
// have used so far together: a transfer's cost in CPU, which a loaded
// host's noise distorts far less than its wall-clock time.
func (t *transferBench) cpuUsed(b *testing.B) time.Duration {
	return cpuTime([]int{os.Getpid(), t.r.cmd.Process.Pid, t.endpoint})
}

// transferMB is the size of the transfers: PETREL_BENCH_TRANSFER_MB, 200
// by default.
func transferMB(b *testing.B) int64 {
	if s := os.Getenv("PETREL_BENCH_TRANSFER_MB"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			b.Fatalf("PETREL_BENCH_TRANSFER_MB=%q: want a positive number of MB", s)
		}
		return n
	}
	return 200
}

// newTransferBench starts petreld and petrel-endpoint, writes a file of
// random (incompressible) bytes and connects a local client and a remote
// one (a root-signed leaf without a command restriction, over mutual TLS).
func newTransferBench(b *testing.B) *transferBench {
	r := newRemoteEnv(b)
	mb := transferMB(b)
	t := &transferBench{r: r, size: mb << 20, src: filepath.Join(r.dir, "src.img"), endpoint: endpointPID(b, r.addr)}
	f, err := os.Create(t.src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, t.size); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if t.local, err = client.Dial(r.socket); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { t.local.Close() })
	if t.stream, err = client.Dial(r.socket); err != nil {
		b.Fatal(err)
	}
	t.stream.StreamContent()
	b.Cleanup(func() { t.stream.Close() })
	t.remote = remoteClient(b, r)
	ctx := context.Background()
	for _, dev := range []string{"bench:local", "bench:local-stream", "bench:remote"} {
		if _, err := t.local.API.BlockCreate(ctx, &daemonv1.BlockCreateRequest{Name: dev, SizeMb: mb}); err != nil {
			b.Fatal(err)
		}
	}
	return t
}

// copyBaseline copies the source file to the data directory's file
// system and fsyncs it: the baseline every transfer figure is divided by.
func (t *transferBench) copyBaseline(b *testing.B) time.Duration {
	start := time.Now()
	if err := copyFileSync(t.src, filepath.Join(t.r.dataDir, "copy.tmp.img")); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// measure runs transfer and the fsynced copy alternately b.N times and
// reports both rates and their ratio, and the CPU time each used (of
// the client, petreld and petrel-endpoint together) per GB.
func (t *transferBench) measure(b *testing.B, transfer func() error) {
	var via, plain, viaCPU, plainCPU time.Duration
	b.SetBytes(t.size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cpu, start := t.cpuUsed(b), time.Now()
		if err := transfer(); err != nil {
			b.Fatal(err)
		}
		via += time.Since(start)
		viaCPU += t.cpuUsed(b) - cpu
		cpu = t.cpuUsed(b)
		plain += t.copyBaseline(b)
		plainCPU += t.cpuUsed(b) - cpu
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(t.size) * float64(b.N) / d.Seconds() / (1 << 20) }
	perGB := func(d time.Duration) float64 { return d.Seconds() / (float64(t.size) * float64(b.N) / (1 << 30)) }
	b.ReportMetric(mbps(via), "petrel-MB/s")
	b.ReportMetric(mbps(plain), "copy-MB/s")
	b.ReportMetric(mbps(via)/mbps(plain), "ratio")
	b.ReportMetric(perGB(viaCPU), "petrel-cpu-s/GB")
	b.ReportMetric(perGB(plainCPU), "copy-cpu-s/GB")
}

// BenchmarkTransfer moves a file of random bytes (PETREL_BENCH_TRANSFER_MB,
// 200 MB by default) into and out of petreld — block device upload and
// download, image upload — on petreld's host (local: the file is passed
// to petreld; local-stream: its content is streamed over the local
// socket) and through petrel-endpoint (mutual TLS on loopback), and
// reports each rate with
// the rate of an fsynced copy of the same file on the same file system,
// measured alternately in the same run, and their ratio.
func BenchmarkTransfer(b *testing.B) {
	t := newTransferBench(b)
	ctx := context.Background()
	clients := []struct {
		where string
		c     *client.Client
	}{{"local", t.local}, {"local-stream", t.stream}, {"remote", t.remote}}
	for _, cl := range clients {
		dev := "bench:" + cl.where
		b.Run("block-upload/"+cl.where, func(b *testing.B) {
			t.measure(b, func() error {
				_, err := cl.c.UploadBlockFile(ctx, dev, t.src, false, nil)
				return err
			})
		})
		b.Run("block-download/"+cl.where, func(b *testing.B) {
			out := filepath.Join(t.r.dir, "download.img")
			defer os.Remove(out)
			t.measure(b, func() error {
				_, err := cl.c.DownloadBlockFile(ctx, dev, out, false, nil)
				return err
			})
		})
		b.Run("image-upload/"+cl.where, func(b *testing.B) {
			t.measure(b, func() error {
				f, err := os.Open(t.src)
				if err != nil {
					return err
				}
				defer f.Close()
				// Without the digest first: the daemon receives the
				// content every time, as it does for a new image.
				_, err = cl.c.UploadImage(ctx, f, t.size, nil)
				return err
			})
		})
	}
}

// BenchmarkTransferGzip compares a block upload and download with --gzip
// to the same transfer without it, on incompressible (random) data,
// streamed over the local socket (upload, download: a local client
// that passes its file has nothing to compress) and through
// petrel-endpoint
// (upload-remote, download-remote), and reports the rates and
// gzip/plain: compression must never make such a transfer slower (a
// ratio of at least 1, within the noise of the host).
func BenchmarkTransferGzip(b *testing.B) {
	t := newTransferBench(b)
	ctx := context.Background()
	out := filepath.Join(t.r.dir, "download.img")
	defer os.Remove(out)
	for _, name := range []string{"upload", "download", "upload-remote", "download-remote"} {
		c, dev := t.stream, "bench:local-stream"
		if strings.HasSuffix(name, "-remote") {
			c, dev = t.remote, "bench:remote"
		}
		b.Run(name, func(b *testing.B) {
			run := func(gz bool) error {
				if strings.HasPrefix(name, "upload") {
					_, err := c.UploadBlockFile(ctx, dev, t.src, gz, nil)
					return err
				}
				_, err := c.DownloadBlockFile(ctx, dev, out, gz, nil)
				return err
			}
			var plain, gz, plainCPU, gzCPU time.Duration
			b.SetBytes(t.size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// Each goes first every other time: the second
				// transfer of a pair may meet the first one's
				// write-back still in progress.
				for _, compress := range []bool{i%2 == 1, i%2 == 0} {
					cpu, start := t.cpuUsed(b), time.Now()
					if err := run(compress); err != nil {
						b.Fatal(err)
					}
					if compress {
						gz += time.Since(start)
						gzCPU += t.cpuUsed(b) - cpu
					} else {
						plain += time.Since(start)
						plainCPU += t.cpuUsed(b) - cpu
					}
				}
			}
			b.StopTimer()
			mbps := func(d time.Duration) float64 { return float64(t.size) * float64(b.N) / d.Seconds() / (1 << 20) }
			b.ReportMetric(mbps(gz), "gzip-MB/s")
			b.ReportMetric(mbps(plain), "plain-MB/s")
			b.ReportMetric(mbps(gz)/mbps(plain), "gzip/plain")
			b.ReportMetric(gzCPU.Seconds()/plainCPU.Seconds(), "cpu-gzip/plain")
		})
	}
}

// BenchmarkTLSLoopback is the bound of remote transfers on this host:
// the rate at which one TLS 1.3 connection on loopback, with the
// endpoint's own cipher choice, carries bytes from a writer to a reader
// that discards them (no gRPC, no disk), in the same units as
// BenchmarkTransfer.
func BenchmarkTLSLoopback(b *testing.B) {
	r := newRemoteEnv(b)
	root, err := pki.ReadCertsFile(r.file("ca.pem"))
	if err != nil {
		b.Fatal(err)
	}
	rootKey, err := pki.ReadKeyFile(r.file("ca.key"))
	if err != nil {
		b.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(r.file("server.pem"), r.file("server.key"))
	if err != nil {
		b.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	mb := transferMB(b)
	size := mb << 20
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		done <- err
	}()
	chain, key, err := pki.NewLeafChain(root, rootKey, "bench", nil, "")
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := client.TLSConfig(chain, key, root, "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	b.SetBytes(size)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for n := int64(0); n < size; n += int64(len(buf)) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	d := time.Since(start)
	b.StopTimer()
	c.Close()
	if err := <-done; err != nil {
		b.Fatal(fmt.Errorf("TLS reader: %w", err))
	}
	b.ReportMetric(float64(size)*float64(b.N)/d.Seconds()/(1<<20), "tls-MB/s")
}
