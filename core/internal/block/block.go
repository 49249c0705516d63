// Package block manages petreld's block devices: one sparse file per
// device under the data directory, named by the device's path, created,
// uploaded, downloaded and destroyed in place, and handed to one running VM
// at a time.
//
// Layout: DIR (0700) holds <name>.img files (0600), where <name> is the
// device's name.Path file key ("a:b:disk.img"), and upload-*.tmp files
// while an upload is in progress. An upload writes a complete new image to
// a temporary file and renames it over the device only once its checksum
// is verified, so an interrupted upload leaves the old content. Files that
// are not devices are reported by Orphans, never deleted.
package block

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/sdk/transfer"
)

// MB is the unit of device sizes.
const MB = 1 << 20

// MaxSizeMB bounds a single device (16 TiB).
const MaxSizeMB = 16 << 20

const suffix = ".img"

// Error classes.
var (
	// ErrInvalid marks a request that can never work.
	ErrInvalid = errors.New("invalid block device request")
	// ErrNotFound marks a device that does not exist.
	ErrNotFound = errors.New("no such block device")
	// ErrExists marks a create of an existing device.
	ErrExists = errors.New("block device exists")
	// ErrBusy marks a device in use by a VM or by a transfer.
	ErrBusy = errors.New("block device in use")
)

// Device describes one block device.
type Device struct {
	Name   string
	SizeMB int64
	Path   string
	// InUseBy names the VM using the device, or says that a transfer is
	// in progress, or is empty.
	InUseBy string
}

// Manager owns the block device directory. It is safe for concurrent use.
type Manager struct {
	dir string

	mu    sync.Mutex
	users map[string]string // device → VM name or "transfer"
}

// Open prepares dir (creating it 0700).
func Open(dir string) (*Manager, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("block directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("block directory: %w", err)
	}
	return &Manager{dir: dir, users: map[string]string{}}, nil
}

// Dir is the device directory.
func (m *Manager) Dir() string { return m.dir }

// parse validates a device name.
func parse(n string) (name.Path, error) {
	p, err := name.ParseVM(n)
	if err != nil {
		return name.Path{}, fmt.Errorf("%w: block device %v", ErrInvalid, err)
	}
	if len(p.FileKey())+len(suffix) > 255 {
		return name.Path{}, fmt.Errorf("%w: block device name %q is too long", ErrInvalid, n)
	}
	return p, nil
}

func (m *Manager) path(p name.Path) string { return filepath.Join(m.dir, p.FileKey()+suffix) }

// Get describes a device.
func (m *Manager) Get(n string) (Device, error) {
	p, err := parse(n)
	if err != nil {
		return Device{}, err
	}
	fi, err := os.Stat(m.path(p))
	if errors.Is(err, os.ErrNotExist) {
		return Device{}, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	if err != nil {
		return Device{}, fmt.Errorf("block device %s: %w", p, err)
	}
	m.mu.Lock()
	user := m.users[p.String()]
	m.mu.Unlock()
	if strings.HasPrefix(user, transferPrefix) {
		user = "(transfer)"
	}
	return Device{Name: p.String(), SizeMB: fi.Size() / MB, Path: m.path(p), InUseBy: user}, nil
}

// List returns the devices under path (":" or "" for all), sorted.
func (m *Manager) List(under string) ([]Device, error) {
	root, err := name.Parse(under)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var out []Device
	for _, e := range entries {
		key, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		p, err := name.FromFileKey(key)
		if err != nil || p.IsRoot() || !root.IsPrefixOf(p) {
			continue
		}
		d, err := m.Get(p.String())
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Orphans lists files in the directory that are not devices (and not
// uploads in progress), for operators to inspect.
func (m *Manager) Orphans() ([]string, error) {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("list block directory: %w", err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		key, ok := strings.CutSuffix(e.Name(), suffix)
		if ok && e.Type().IsRegular() {
			if p, err := name.FromFileKey(key); err == nil && !p.IsRoot() {
				continue
			}
		}
		out = append(out, filepath.Join(m.dir, e.Name()))
	}
	return out, nil
}

// TotalMB sums the sizes of the devices under path, for quotas.
func (m *Manager) TotalMB(under string) (int64, error) {
	devs, err := m.List(under)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, d := range devs {
		total += d.SizeMB
	}
	return total, nil
}

// checkSpace refuses sizes the file system cannot hold.
func (m *Manager) checkSpace(sizeMB int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(m.dir, &st); err != nil {
		return fmt.Errorf("check free space: %w", err)
	}
	free := int64(st.Bavail) * int64(st.Bsize) / MB
	if sizeMB > free {
		return fmt.Errorf("%w: %d MB requested, %d MB free on the data file system", ErrInvalid, sizeMB, free)
	}
	return nil
}

// claim marks a device busy for user; it fails if it is busy already.
func (m *Manager) claim(dev, user string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, ok := m.users[dev]; ok {
		if u == user {
			return nil
		}
		return fmt.Errorf("%w: %s is used by %s", ErrBusy, dev, describe(u))
	}
	m.users[dev] = user
	return nil
}

func describe(user string) string {
	if strings.HasPrefix(user, transferPrefix) {
		return "an upload or download in progress"
	}
	return "VM " + user
}

func (m *Manager) release(dev, user string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.users[dev] == user {
		delete(m.users, dev)
	}
}

// transferPrefix marks users that are uploads, downloads or other
// operations on the file itself; each gets a unique token.
const transferPrefix = "\x00transfer-"

var transferSeq atomic.Uint64

func newTransfer() string { return transferPrefix + strconv.FormatUint(transferSeq.Add(1), 10) }

// Acquire gives a device to VM vm; it fails while another VM or a
// transfer uses it. The returned Device's Path is what the tender opens.
func (m *Manager) Acquire(dev, vm string) (Device, error) {
	d, err := m.Get(dev)
	if err != nil {
		return Device{}, err
	}
	if err := m.claim(d.Name, vm); err != nil {
		return Device{}, err
	}
	d.InUseBy = vm
	return d, nil
}

// Release returns a device VM vm used.
func (m *Manager) Release(dev, vm string) {
	if p, err := parse(dev); err == nil {
		m.release(p.String(), vm)
	}
}

// Create makes a sparse device of sizeMB.
func (m *Manager) Create(n string, sizeMB int64) (Device, error) {
	p, err := parse(n)
	if err != nil {
		return Device{}, err
	}
	if sizeMB <= 0 || sizeMB > MaxSizeMB {
		return Device{}, fmt.Errorf("%w: size %d MB is not between 1 and %d", ErrInvalid, sizeMB, MaxSizeMB)
	}
	if err := m.checkSpace(sizeMB); err != nil {
		return Device{}, err
	}
	tok := newTransfer()
	if err := m.claim(p.String(), tok); err != nil {
		return Device{}, err
	}
	defer m.release(p.String(), tok)
	f, err := os.OpenFile(m.path(p), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return Device{}, fmt.Errorf("%w: %s", ErrExists, p)
	}
	if err != nil {
		return Device{}, fmt.Errorf("create block device %s: %w", p, err)
	}
	if err := f.Truncate(sizeMB * MB); err != nil {
		f.Close()
		os.Remove(m.path(p))
		return Device{}, fmt.Errorf("size block device %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(m.path(p))
		return Device{}, fmt.Errorf("sync block device %s: %w", p, err)
	}
	f.Close()
	if err := syncDir(m.dir); err != nil {
		return Device{}, err
	}
	return m.Get(p.String())
}

// Destroy removes a device that no VM uses.
func (m *Manager) Destroy(n string) error {
	p, err := parse(n)
	if err != nil {
		return err
	}
	tok := newTransfer()
	if err := m.claim(p.String(), tok); err != nil {
		return err
	}
	defer m.release(p.String(), tok)
	if err := os.Remove(m.path(p)); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, p)
	} else if err != nil {
		return fmt.Errorf("destroy block device %s: %w", p, err)
	}
	return syncDir(m.dir)
}

// Upload is an upload in progress: Write the new content, then Commit
// with the checksum the sender computed, or Abort. Writing to the
// temporary file (with write-back to disk started as the content
// arrives) and hashing run on goroutines of the upload's own, so the
// caller receives the next chunk meanwhile; Commit and Abort stop them.
type Upload struct {
	m       *Manager
	dev     name.Path
	tok     string
	size    int64
	f       *os.File
	h       hash.Hash
	fan     *transfer.Fanout
	written int64
	done    bool
}

// BeginUpload starts replacing a device's content, hashing it with
// SHA-256 when digest is set (Commit checks and returns the digest) and
// not otherwise, for an upload checked another way or not at all, which
// spares the hashing's CPU. The device must exist and be idle; it stays
// reserved until Commit or Abort.
func (m *Manager) BeginUpload(n string, digest bool) (*Upload, error) {
	d, err := m.Get(n)
	if err != nil {
		return nil, err
	}
	tok := newTransfer()
	if err := m.claim(d.Name, tok); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(m.dir, "upload-*.tmp")
	if err != nil {
		m.release(d.Name, tok)
		return nil, fmt.Errorf("upload to %s: %w", d.Name, err)
	}
	p, _ := parse(d.Name)
	u := &Upload{m: m, dev: p, tok: tok, size: d.SizeMB * MB, f: f}
	sinks := []transfer.Sink{transfer.NewFileSink(f).Write}
	if digest {
		u.h = sha256.New()
		sinks = append(sinks, transfer.HashSink(u.h))
	}
	u.fan = transfer.NewFanout(sinks...)
	return u, nil
}

// tooLarge is the error of an upload that exceeds its device.
func (u *Upload) tooLarge() error {
	return fmt.Errorf("%w: upload is larger than the device %s (%d MB)", ErrInvalid, u.dev, u.size/MB)
}

// Write appends data; more than the device holds is refused.
func (u *Upload) Write(b []byte) (int, error) {
	if u.written+int64(len(b)) > u.size {
		return 0, u.tooLarge()
	}
	n, err := u.fan.Write(b)
	u.written += int64(n)
	if err != nil {
		return n, fmt.Errorf("upload to %s: %w", u.dev, err)
	}
	return n, nil
}

// ReadFrom appends r's content to its end (io.Copy uses it), reading it
// straight into the upload's buffers; more than the device holds is
// refused.
func (u *Upload) ReadFrom(r io.Reader) (int64, error) {
	n, err := u.fan.ReadFrom(io.LimitReader(r, u.size-u.written+1))
	u.written += n
	if err != nil {
		return n, err
	}
	if u.written > u.size {
		return n, u.tooLarge()
	}
	return n, nil
}

// Written is how many bytes arrived so far.
func (u *Upload) Written() int64 { return u.written }

// Commit checks the content's SHA-256 (hex) against want and, if it
// matches, makes it the device's content (padded to the device size),
// atomically. It returns the digest, or "" for an upload begun without
// one (which cannot check a want).
func (u *Upload) Commit(want string) (string, error) {
	if u.done {
		return "", errors.New("upload already finished")
	}
	if err := u.fan.Close(); err != nil {
		u.Abort()
		return "", fmt.Errorf("upload to %s: %w", u.dev, err)
	}
	got := ""
	if u.h != nil {
		got = hex.EncodeToString(u.h.Sum(nil))
	} else if want != "" {
		u.Abort()
		return "", fmt.Errorf("%w: upload to %s was not hashed, so its SHA-256 cannot be checked; the device is unchanged", ErrInvalid, u.dev)
	}
	if want != "" && !strings.EqualFold(want, got) {
		u.Abort()
		return "", fmt.Errorf("%w: checksum mismatch: sent %s, received %s; the device is unchanged", ErrInvalid, want, got)
	}
	defer u.Abort()
	if err := u.f.Truncate(u.size); err != nil {
		return "", fmt.Errorf("upload to %s: %w", u.dev, err)
	}
	if err := u.f.Sync(); err != nil {
		return "", fmt.Errorf("upload to %s: %w", u.dev, err)
	}
	if err := os.Rename(u.f.Name(), u.m.path(u.dev)); err != nil {
		return "", fmt.Errorf("upload to %s: %w", u.dev, err)
	}
	if err := syncDir(u.m.dir); err != nil {
		return "", err
	}
	return got, nil
}

// Abort discards the upload (after Commit it only releases the device).
func (u *Upload) Abort() {
	if u.done {
		return
	}
	u.done = true
	u.fan.Abort(errors.New("upload discarded"))
	u.f.Close()
	os.Remove(u.f.Name())
	u.m.release(u.dev.String(), u.tok)
}

// Download streams a device's content to w and returns its SHA-256 and
// size, as DownloadHashed does.
func (m *Manager) Download(n string, w io.Writer) (string, int64, error) {
	h := sha256.New()
	size, err := m.DownloadHashed(n, w, h)
	if err != nil {
		return "", size, err
	}
	return hex.EncodeToString(h.Sum(nil)), size, nil
}

// DownloadHashed streams a device's content to w and into h (the
// checksum that goes with it), and returns its size. The device is
// reserved while it is read. Reading the file, hashing it and writing to
// w run on goroutines of their own, chunk by chunk: w is written from
// another goroutine than the caller's (never two at once), and must not
// keep what it is given.
func (m *Manager) DownloadHashed(n string, w io.Writer, h hash.Hash) (int64, error) {
	d, err := m.Get(n)
	if err != nil {
		return 0, err
	}
	tok := newTransfer()
	if err := m.claim(d.Name, tok); err != nil {
		return 0, err
	}
	defer m.release(d.Name, tok)
	f, err := os.Open(d.Path)
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", d.Name, err)
	}
	defer f.Close()
	fan := transfer.NewFanout(transfer.HashSink(h), transfer.WriterSink(w))
	n64, err := fan.ReadFrom(f)
	if err != nil {
		fan.Abort(err)
		return n64, fmt.Errorf("download %s: %w", d.Name, err)
	}
	if err := fan.Close(); err != nil {
		return n64, fmt.Errorf("download %s: %w", d.Name, err)
	}
	return n64, nil
}

// copyRound is how much CopyTo copies between two looks at its context:
// a cancelled download stops within one round.
const copyRound = 32 << 20

// CopyTo writes a device's content into dst at dst's offset, and
// returns how many bytes it wrote. The device is reserved while it is
// read. Between two regular files the kernel copies the content itself
// (copy_file_range) without it passing through petreld's memory; the
// copy stops when ctx ends.
func (m *Manager) CopyTo(ctx context.Context, n string, dst *os.File) (int64, error) {
	d, err := m.Get(n)
	if err != nil {
		return 0, err
	}
	tok := newTransfer()
	if err := m.claim(d.Name, tok); err != nil {
		return 0, err
	}
	defer m.release(d.Name, tok)
	src, err := os.Open(d.Path)
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", d.Name, err)
	}
	defer src.Close()
	var done int64
	for {
		if err := ctx.Err(); err != nil {
			return done, fmt.Errorf("download %s: %w", d.Name, err)
		}
		n, err := io.CopyN(dst, src, copyRound)
		done += n
		if errors.Is(err, io.EOF) {
			return done, nil
		}
		if err != nil {
			return done, fmt.Errorf("download %s: %w", d.Name, err)
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
