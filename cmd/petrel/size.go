package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/petrel-vmm/petrel/cmd/internal/cmdline"
	"github.com/petrel-vmm/petrel/cmd/internal/size"
)

// sizeHelp is how every size flag's help names its format, so the
// format reads the same wherever a size is given.
const sizeHelp = size.Help

// parseSize is the one parser of sizes on petrel's command line (package
// size, which the web console's forms use too): memory of VMs and
// policies, block and image storage, block devices, in whole megabytes,
// at most maxMB.
func parseSize(s string, maxMB int64) (int64, error) { return size.Parse(s, maxMB) }

// sizeFlag is the one flag type of sizes (a pflag.Value over parseSize),
// so that every size flag accepts the same spellings and refuses bad ones
// with the same sentences.
type sizeFlag struct {
	// MB is the parsed size in megabytes.
	MB int64
	// Max is the largest size accepted, in MB: what the request's field
	// holds.
	Max int64
	// Positive refuses 0, for sizes that cannot be empty (a VM's memory,
	// a block device), unlike limits, where 0 allows nothing.
	Positive bool
	// ZeroHint is the refusal of 0, saying what to do instead.
	ZeroHint string
}

// Set parses s with parseSize; it implements pflag.Value.
func (f *sizeFlag) Set(s string) error {
	mb, err := parseSize(s, f.Max)
	if err != nil {
		return err
	}
	if mb == 0 && f.Positive {
		if f.ZeroHint != "" {
			return errors.New(f.ZeroHint)
		}
		return errors.New("must be more than 0")
	}
	f.MB = mb
	return nil
}

// String returns the size in MB, as help texts show defaults.
func (f *sizeFlag) String() string {
	if f.MB == 0 {
		return "0"
	}
	return strconv.FormatInt(f.MB, 10) + "M"
}

// Type names the value in help ("--mem size").
func (f *sizeFlag) Type() string { return "size" }

// valueError says what is wrong with a value given on the command line,
// after what it was given for: "--mem 64X: not a size: ...".
func valueError(what, value string, err error) error {
	if value == "" || strings.ContainsAny(value, " \t\"'") {
		value = strconv.Quote(value)
	}
	return fmt.Errorf("%s %s: %w", what, value, err)
}

// flagError rewrites pflag's complaints about a flag's value as a
// sentence naming the flag, its value and what is wrong with it, instead
// of Go's parser errors (`strconv.ParseUint: parsing "64G": invalid
// syntax`), and points from an unknown flag to the help of cmd, which
// lists the known ones. Other errors pass unchanged.
func flagError(cmd *cobra.Command, err error) error {
	var ne *pflag.NotExistError
	if errors.As(err, &ne) {
		return cmdline.UnknownFlag(cmd, err)
	}
	var iv *pflag.InvalidValueError
	if !errors.As(err, &iv) {
		return err
	}
	name := "--" + iv.GetFlag().Name
	cause := errors.Unwrap(iv)
	var num *strconv.NumError
	switch {
	case cause == nil:
		return err
	case errors.As(cause, &num) && errors.Is(num.Err, strconv.ErrRange):
		return valueError(name, iv.GetValue(), errors.New("out of range"))
	case errors.As(cause, &num):
		return valueError(name, iv.GetValue(), errors.New("not a number"))
	}
	return valueError(name, iv.GetValue(), cause)
}
