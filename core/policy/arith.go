package policy

import "math"

// addInt returns a+b and whether it is exact. Numbers from callers (a
// requested memory size, a block device's size) meet sums of usage and
// the limits of policies; a sum that wrapped around would compare as
// small and admit anything, so every such sum is checked.
func addInt(a, b int) (int, bool) {
	if (b > 0 && a > math.MaxInt-b) || (b < 0 && a < math.MinInt-b) {
		return 0, false
	}
	return a + b, true
}

// addSat returns a+b, saturated at the bounds of int, for usage sums that
// are only compared with limits: a saturated sum exceeds every limit a
// Policy can hold, so the comparison stays right without an error path.
func addSat(a, b int) int {
	if s, ok := addInt(a, b); ok {
		return s
	}
	if b > 0 {
		return math.MaxInt
	}
	return math.MinInt
}

// AddMB returns a+b for sizes in MiB and whether the sum is exact, for
// callers outside this package that check a request against a limit.
func AddMB(a, b int64) (int64, bool) {
	if (b > 0 && a > math.MaxInt64-b) || (b < 0 && a < math.MinInt64-b) {
		return 0, false
	}
	return a + b, true
}
