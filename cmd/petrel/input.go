package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// invalidInput marks a command line that names something that can never
// work, such as a missing file or a directory given as an image: exit
// code 6, like the requests petreld refuses as invalid.
type invalidInput struct{ error }

// inputFile checks that path, given on the command line as what ("image",
// "--data"...), is something to read: it exists, and is not a directory.
// A mistake is then reported by the name the user gave, and as invalid
// input, before anything is sent: "--data /tmp/disk.img: no such file"
// rather than the failing system call. Pipes and devices pass: block
// uploads stream from them.
func inputFile(what, path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return invalidInput{fmt.Errorf("%s %s: no such file", what, path)}
	case errors.Is(err, fs.ErrPermission):
		return invalidInput{fmt.Errorf("%s %s: permission denied", what, path)}
	case err != nil:
		return invalidInput{fmt.Errorf("%s %s: %w", what, path, errors.Unwrap(err))}
	case fi.IsDir():
		return invalidInput{fmt.Errorf("%s %s is a directory, not a file", what, path)}
	}
	return nil
}

// regularFile is inputFile for what must be a regular file: images,
// which are hashed before they are sent and so read twice.
func regularFile(what, path string) error {
	if err := inputFile(what, path); err != nil {
		return err
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return invalidInput{fmt.Errorf("%s %s is not a regular file", what, path)}
	}
	return nil
}

// outputFile checks that path, given on the command line as what, can be
// created: its directory exists. A download then fails with the name the
// user gave, not with the temporary file it writes first.
func outputFile(what, path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return invalidInput{fmt.Errorf("%s %s: directory %s does not exist", what, path, dir)}
	case err != nil:
		return invalidInput{fmt.Errorf("%s %s: %w", what, path, errors.Unwrap(err))}
	case !fi.IsDir():
		return invalidInput{fmt.Errorf("%s %s: %s is not a directory", what, path, dir)}
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return invalidInput{fmt.Errorf("%s %s is a directory, not a file", what, path)}
	}
	return nil
}
