package testguest

import (
	"bytes"
	"fmt"
	"io/fs"
	"strings"
)

// cpioArchive builds a cpio archive in the "newc" format, the only format
// the Linux kernel unpacks as an initramfs. Building it in Go keeps the
// tests independent of the cpio tool.
type cpioArchive struct {
	buf bytes.Buffer
	ino uint32
}

// File mode type bits as cpio stores them (from <sys/stat.h>).
const (
	cpioDir     = 0o040000
	cpioFile    = 0o100000
	cpioSymlink = 0o120000
	cpioChar    = 0o020000
)

// add appends one entry. rdev is the (major, minor) pair of a device node.
func (a *cpioArchive) add(name string, mode uint32, data []byte, rdevMajor, rdevMinor uint32) error {
	name = strings.TrimPrefix(name, "/")
	if name == "" || strings.Contains(name, "\x00") {
		return fmt.Errorf("cpio entry name %q is invalid", name)
	}
	a.ino++
	nlink := uint32(1)
	if mode&cpioDir != 0 {
		nlink = 2
	}
	fields := []uint32{a.ino, mode, 0, 0, nlink, 0, uint32(len(data)), 0, 0, rdevMajor, rdevMinor, uint32(len(name) + 1), 0}
	a.buf.WriteString("070701")
	for _, f := range fields {
		fmt.Fprintf(&a.buf, "%08x", f)
	}
	a.buf.WriteString(name)
	a.buf.WriteByte(0)
	a.pad()
	a.buf.Write(data)
	a.pad()
	return nil
}

// pad aligns the archive to 4 bytes, as newc requires after names and data.
func (a *cpioArchive) pad() {
	for a.buf.Len()%4 != 0 {
		a.buf.WriteByte(0)
	}
}

// Dir adds a directory with permissions perm.
func (a *cpioArchive) Dir(name string, perm fs.FileMode) error {
	return a.add(name, cpioDir|uint32(perm.Perm()), nil, 0, 0)
}

// File adds a regular file.
func (a *cpioArchive) File(name string, perm fs.FileMode, data []byte) error {
	return a.add(name, cpioFile|uint32(perm.Perm()), data, 0, 0)
}

// Symlink adds a symbolic link to target.
func (a *cpioArchive) Symlink(name, target string) error {
	return a.add(name, cpioSymlink|0o777, []byte(target), 0, 0)
}

// CharDev adds a character device node.
func (a *cpioArchive) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return a.add(name, cpioChar|uint32(perm.Perm()), nil, major, minor)
}

// Bytes ends the archive with its trailer and returns it.
func (a *cpioArchive) Bytes() []byte {
	_ = a.add("TRAILER!!!", 0, nil, 0, 0)
	return a.buf.Bytes()
}
