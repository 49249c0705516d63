package statedump

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/core/store"
	"github.com/petrel-vmm/petrel/core/vmrecord"
)

// Report is what a data directory or an export holds, read without
// changing anything.
type Report struct {
	// Source is the directory or archive inspected.
	Source string `json:"source"`
	// Schema is the state's schema version; CurrentSchema is the one
	// this petrel writes (petreld migrates older state when it opens it).
	Schema        int       `json:"schema"`
	CurrentSchema int       `json:"current_schema"`
	CreatedAt     time.Time `json:"created_at"`
	// InstanceID identifies the petreld instance the state belongs to
	// (store.Store.InstanceID); an import keeps it unless asked not to.
	InstanceID string `json:"instance_id,omitempty"`
	// InUse and HolderPID say whether a petreld has the directory open.
	InUse     bool `json:"in_use"`
	HolderPID int  `json:"holder_pid,omitempty"`
	// Export is the manifest, when an archive was inspected.
	Export *Manifest `json:"export,omitempty"`

	VMs []VM `json:"vms"`
	// Policies are those set with `petrel policy add`, and
	// CertificatePolicies those recorded from callers' certificate
	// chains; a path's effective policy is the meet of both.
	Policies            []policy.Entry `json:"policies"`
	CertificatePolicies []policy.Entry `json:"certificate_policies"`
	Images              []Image        `json:"images"`
	Blocks              []Block        `json:"blocks"`
	// Quarantined lists records petreld moved aside as unusable, as
	// collection/key.
	Quarantined []string `json:"quarantined"`
	// OtherCollections counts records in collections this petrel does
	// not know (written by a newer or a patched petreld).
	OtherCollections map[string]int `json:"other_collections,omitempty"`
	// Problems lists what would stop a VM from starting or was found
	// damaged, in plain words.
	Problems []string `json:"problems"`
}

// VM is a VM record with what inspect found about its image.
type VM struct {
	vmrecord.Record
	// ImagePresent says whether the record's image is in the directory.
	ImagePresent bool `json:"image_present"`
}

// Image is one stored unikernel image.
type Image struct {
	SHA256 string   `json:"sha256"`
	Size   int64    `json:"size"`
	UsedBy []string `json:"used_by"`
	// Damaged says that the content does not have the digest of the
	// name (checked only when InspectDir is asked to verify images).
	Damaged bool `json:"damaged,omitempty"`
}

// Block is one block device.
type Block struct {
	Name string `json:"name"`
	// SizeBytes is the device's size; AllocatedBytes what it takes on disk.
	SizeBytes      int64    `json:"size_bytes"`
	AllocatedBytes int64    `json:"allocated_bytes"`
	UsedBy         []string `json:"used_by"`
}

// stateCount is how many things the directory holds that an import must
// not overwrite.
func (r *Report) stateCount() int {
	n := len(r.VMs) + len(r.Policies) + len(r.CertificatePolicies) + len(r.Images) + len(r.Blocks) + len(r.Quarantined)
	for _, c := range r.OtherCollections {
		n += c
	}
	return n
}

// InspectDir reads the data directory dir, of any schema version,
// without taking its lock or changing anything: records are replaced
// atomically, so each one is read whole even while petreld runs. With
// verifyImages it also reads every image to check its digest, which
// costs as much I/O as the images' size.
func InspectDir(dir string, verifyImages bool) (*Report, error) {
	info, err := store.ReadInfo(dir)
	if err != nil {
		return nil, err
	}
	r := &Report{Source: dir, Schema: info.Schema, CurrentSchema: store.SchemaVersion, CreatedAt: info.CreatedAt, InstanceID: info.InstanceID,
		VMs: []VM{}, Policies: []policy.Entry{}, CertificatePolicies: []policy.Entry{}, Images: []Image{}, Blocks: []Block{}, Quarantined: []string{}, Problems: []string{}}
	if r.InUse, r.HolderPID, err = store.LockHolder(dir); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !store.IsCollection(name) {
			continue
		}
		var err error
		switch name {
		case vmrecord.Collection:
			err = walkRecords(dir, name, r, func(key string, raw []byte) error {
				var v vmrecord.Record
				if err := json.Unmarshal(raw, &v); err != nil {
					return err
				}
				r.VMs = append(r.VMs, VM{Record: v})
				return nil
			})
		case policy.Collection:
			err = walkRecords(dir, name, r, func(key string, raw []byte) error {
				var p policy.Entry
				if err := json.Unmarshal(raw, &p); err != nil {
					return err
				}
				r.Policies = append(r.Policies, p)
				return nil
			})
		case policy.CertCollection:
			err = walkRecords(dir, name, r, func(key string, raw []byte) error {
				var p policy.Entry
				if err := json.Unmarshal(raw, &p); err != nil {
					return err
				}
				r.CertificatePolicies = append(r.CertificatePolicies, p)
				return nil
			})
		default:
			err = walkRecords(dir, name, r, func(string, []byte) error {
				if r.OtherCollections == nil {
					r.OtherCollections = map[string]int{}
				}
				r.OtherCollections[name]++
				return nil
			})
		}
		if err != nil {
			return nil, err
		}
	}
	if err := r.readImages(store.ImagesDir(dir, info.Schema), verifyImages); err != nil {
		return nil, err
	}
	if err := r.readBlocks(filepath.Join(dir, store.BlockDir)); err != nil {
		return nil, err
	}
	if err := r.readQuarantine(filepath.Join(dir, store.QuarantineDir)); err != nil {
		return nil, err
	}
	r.crossCheck()
	return r, nil
}

// walkRecords calls fn for every record of a collection, noting records
// that cannot be read or decoded as problems.
func walkRecords(dir, collection string, r *Report, fn func(key string, raw []byte) error) error {
	entries, err := os.ReadDir(filepath.Join(dir, collection))
	if err != nil {
		return fmt.Errorf("inspect collection %s: %w", collection, err)
	}
	for _, e := range entries {
		key, ok := strings.CutSuffix(e.Name(), store.RecordSuffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, collection, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted while we looked
		}
		if err != nil {
			return fmt.Errorf("inspect %s/%s: %w", collection, key, err)
		}
		if err := fn(key, raw); err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("record %s/%s is damaged (%v); petreld will quarantine it", collection, key, err))
		}
	}
	return nil
}

func (r *Report) readImages(dir string, verify bool) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect images: %w", err)
	}
	for _, e := range entries {
		if !store.IsImageName(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		img := Image{SHA256: e.Name(), Size: fi.Size(), UsedBy: []string{}}
		if verify {
			got, err := fileDigest(filepath.Join(dir, e.Name()))
			switch {
			case err != nil:
				img.Damaged = true
				r.Problems = append(r.Problems, fmt.Sprintf("image %s cannot be read: %v", e.Name(), err))
			case got != e.Name():
				img.Damaged = true
				r.Problems = append(r.Problems, fmt.Sprintf("image %s is damaged: its content has digest %s", e.Name(), got))
			}
		}
		r.Images = append(r.Images, img)
	}
	return nil
}

func (r *Report) readBlocks(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect block devices: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".img")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		b := Block{Name: name, SizeBytes: fi.Size(), AllocatedBytes: allocated(fi), UsedBy: []string{}}
		r.Blocks = append(r.Blocks, b)
	}
	return nil
}

func (r *Report) readQuarantine(dir string) error {
	colls, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect quarantine: %w", err)
	}
	for _, c := range colls {
		if !c.IsDir() {
			continue
		}
		recs, err := os.ReadDir(filepath.Join(dir, c.Name()))
		if err != nil {
			return fmt.Errorf("inspect quarantine: %w", err)
		}
		for _, e := range recs {
			if key, ok := strings.CutSuffix(e.Name(), store.RecordSuffix); ok {
				r.Quarantined = append(r.Quarantined, c.Name()+"/"+key)
			}
		}
	}
	return nil
}

// crossCheck links VMs to their images and block devices, notes what is
// missing, and sorts everything for stable output.
func (r *Report) crossCheck() {
	sort.Slice(r.VMs, func(i, j int) bool { return r.VMs[i].Name < r.VMs[j].Name })
	for _, ps := range [][]policy.Entry{r.Policies, r.CertificatePolicies} {
		sort.Slice(ps, func(i, j int) bool { return ps[i].Path.String() < ps[j].Path.String() })
	}
	images := map[string]*Image{}
	for i := range r.Images {
		images[r.Images[i].SHA256] = &r.Images[i]
	}
	blocks := map[string]*Block{}
	for i := range r.Blocks {
		blocks[r.Blocks[i].Name] = &r.Blocks[i]
	}
	for i := range r.VMs {
		v := &r.VMs[i]
		for _, sha := range []string{v.ImageSHA256, v.InitrdSHA256} {
			if sha == "" {
				continue
			}
			if img, ok := images[sha]; ok {
				img.UsedBy = append(img.UsedBy, v.Name)
			} else {
				r.Problems = append(r.Problems, fmt.Sprintf("VM %s: image %s is missing; it cannot start until it is created again", v.Name, sha))
			}
		}
		v.ImagePresent = images[v.ImageSHA256] != nil
		for _, bp := range v.Blocks {
			if b, ok := blocks[bp.Device]; ok {
				b.UsedBy = append(b.UsedBy, v.Name)
			} else {
				r.Problems = append(r.Problems, fmt.Sprintf("VM %s: block device %s is missing", v.Name, bp.Device))
			}
		}
	}
}

// InspectArchive reads an export. It unpacks the archive into a
// temporary directory (removed before returning): an archive Import
// could not unpack is an error here too, and damaged images, which
// Import refuses, are listed among the problems.
func InspectArchive(rd io.Reader, name string) (*Report, error) {
	tmp, err := os.MkdirTemp("", "petrel-inspect-*")
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	m, _, err := extract(rd, tmp)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", name, err)
	}
	r, err := InspectDir(tmp, true)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", name, err)
	}
	r.Source = name
	r.Export = &m
	return r, nil
}

// allocated is the space a file takes on disk, which for a sparse block
// device is far less than its size.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}

// fileDigest is the SHA-256 of a file's content, in lowercase hex.
func fileDigest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
