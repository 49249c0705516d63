package main

import (
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/petrel-vmm/petrel/cmd/internal/cmdline"
)

// sizeHelp is how every size flag's help names its format, so the
// format reads the same wherever a size is given.
const sizeHelp = "MB, or a size with a unit: 512M, 2G, 1Gi"

// sizeSyntax is a number, possibly with a fraction, then an optional unit.
var sizeSyntax = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([a-zA-Z]*)$`)

// sizeUnits maps the units a size may carry, lower-cased, to bytes.
// Every unit is binary, as docker's --memory takes them: 1G and 1Gi
// are both 1024 MB, and a plain number is MB (petreld's unit, and
// Albatross's), not bytes.
var sizeUnits = map[string]int64{
	"b": 1,
	"k": 1 << 10, "kb": 1 << 10, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "ti": 1 << 40, "tib": 1 << 40,
}

// parseSize is the one parser of sizes on petrel's command line: memory
// of VMs and policies, block and image storage, block devices. It returns
// whole megabytes (MiB), at most maxMB. Its errors say what is wrong
// without repeating s, to follow the flag or argument and its value
// (see flagError).
func parseSize(s string, maxMB int64) (int64, error) {
	m := sizeSyntax.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, errors.New("not a size: give megabytes (512) or a number with a unit (512M, 2G, 1Gi)")
	}
	unit := int64(1 << 20)
	if m[2] != "" {
		u, ok := sizeUnits[strings.ToLower(m[2])]
		if !ok {
			return 0, fmt.Errorf("unknown unit %q: use M, G or T (also written MB, Mi or MiB; all are binary, 1G = 1024M)", m[2])
		}
		unit = u
	}
	n, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return 0, errors.New("not a size: give megabytes (512) or a number with a unit (512M, 2G, 1Gi)")
	}
	n.Mul(n, new(big.Rat).SetInt64(unit))
	n.Quo(n, new(big.Rat).SetInt64(1<<20))
	if !n.IsInt() {
		return 0, errors.New("not a whole number of megabytes")
	}
	if !n.Num().IsInt64() || n.Num().Int64() > maxMB {
		return 0, fmt.Errorf("more than the largest size here, %d MB", maxMB)
	}
	return n.Num().Int64(), nil
}

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
