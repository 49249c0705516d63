package main

import (
	"strings"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/petrel-vmm/petrel/sdk/metrics"
)

// encode renders points as line protocol, one line per point. A point the
// format cannot carry is left out and counted, so one odd VM name costs
// one line, not the whole batch.
func encode(points []metrics.Point, precision lineprotocol.Precision) (lines []byte, skipped int, firstErr error) {
	var enc lineprotocol.Encoder
	enc.SetPrecision(precision)
	// A VM's line is about 500 bytes; sizing the buffer once avoids
	// copying it over and over for large batches.
	enc.SetBuffer(make([]byte, 0, 512*len(points)))
	for _, p := range points {
		enc.StartLine(p.Measurement)
		for _, t := range p.Tags {
			if v := tagValue(t.Value); v != "" {
				enc.AddTag(t.Key, v)
			}
		}
		for _, f := range p.Fields {
			switch v := f.Value.(type) {
			case int64:
				enc.AddField(f.Key, lineprotocol.IntValue(v))
			case float64:
				if fv, ok := lineprotocol.FloatValue(v); ok {
					enc.AddField(f.Key, fv)
				}
			}
		}
		enc.EndLine(p.Time)
		if err := enc.Err(); err != nil {
			skipped++
			if firstErr == nil {
				firstErr = err
			}
			enc.ClearErr()
		}
	}
	return enc.Bytes(), skipped, firstErr
}

// tagValue makes a string acceptable as a tag value: line protocol has no
// escape for control characters or a trailing backslash, so control
// characters become spaces, trailing backslashes go, and invalid UTF-8 is
// replaced.
func tagValue(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return strings.TrimRight(s, `\`)
}
