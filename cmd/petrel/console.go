package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// sinceDays is a leading number of days in a --since duration ("2d",
// "1d12h"), which Go's durations lack and people type.
var sinceDays = regexp.MustCompile(`^([0-9]+)d(.*)$`)

// parseSince reads --since as docker and kubectl users type it: a
// duration back from now ("10m", "1h30m", "2d") or a point in time (RFC
// 3339, "2026-11-24T10:00:00Z"), and returns the point in time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseAgo(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %s: neither a duration back from now (10m, 1h30m, 2d) nor an RFC 3339 time (2026-11-24T10:00:00Z)", strconv.Quote(s))
	}
	return now.Add(-d), nil
}

// parseAgo parses a non-negative duration with an optional leading
// number of days.
func parseAgo(s string) (time.Duration, error) {
	var days time.Duration
	if m := sinceDays.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 32)
		if err != nil {
			return 0, err
		}
		days, s = time.Duration(n)*24*time.Hour, m[2]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, errors.New("negative duration")
	}
	return days + d, nil
}

// lineCount is the value of --count and its docker and kubectl spelling
// --tail: a number of lines, or "all" (0, every kept line). Both flags
// share one lineCount, so whichever is given sets the same count.
type lineCount struct {
	n     int32
	given string
}

// Set parses a count; it implements pflag.Value. Giving the two
// spellings different counts is refused rather than one silently
// winning.
func (c *lineCount) Set(s string) error {
	n := int64(0)
	if !strings.EqualFold(s, "all") {
		var err error
		if n, err = strconv.ParseInt(s, 10, 32); err != nil {
			return errors.New("not a number of lines (or all)")
		}
		if n < 0 {
			return errors.New("must not be negative (all, or no --count, shows every kept line)")
		}
	}
	if c.given != "" && int32(n) != c.n {
		return fmt.Errorf("--count and --tail are one setting, already given as %s", c.given)
	}
	c.n, c.given = int32(n), s
	return nil
}

// String returns the count, as help shows defaults.
func (c *lineCount) String() string {
	if c.n == 0 {
		return "all"
	}
	return strconv.Itoa(int(c.n))
}

// Type names the value in help ("--count N").
func (c *lineCount) Type() string { return "N" }
