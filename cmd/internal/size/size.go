// Package size is the one parser of sizes Petrel's user interfaces take:
// the petrel CLI's --mem, --block, --images and block sizes, and the same
// fields of the web console's forms, so that both accept the same
// spellings and refuse bad ones with the same sentences.
package size

import (
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
)

// Help is how every size field's help names its format, so the format
// reads the same wherever a size is given.
const Help = "MB, or a size with a unit: 512M, 2G, 1Gi"

// syntax is a number, possibly with a fraction, then an optional unit.
var syntax = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([a-zA-Z]*)$`)

// units maps the units a size may carry, lower-cased, to bytes. Every
// unit is binary, as docker's --memory takes them: 1G and 1Gi are both
// 1024 MB, and a plain number is MB (petreld's unit, and Albatross's),
// not bytes.
var units = map[string]int64{
	"b": 1,
	"k": 1 << 10, "kb": 1 << 10, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "ti": 1 << 40, "tib": 1 << 40,
}

// Parse reads s as whole megabytes (MiB), at most maxMB. Its errors say
// what is wrong without repeating s, to follow the name of the field or
// flag and its value.
func Parse(s string, maxMB int64) (int64, error) {
	m := syntax.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, errors.New("not a size: give megabytes (512) or a number with a unit (512M, 2G, 1Gi)")
	}
	unit := int64(1 << 20)
	if m[2] != "" {
		u, ok := units[strings.ToLower(m[2])]
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
