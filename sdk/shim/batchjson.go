package shim

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// decodeResponse parses one response line into r. A console batch as the
// shim writes it (one object whose only member is the batch) is read in one pass without reflection, which makes
// a busy console several times cheaper for the client; anything else,
// malformed lines included, goes through encoding/json.
func decodeResponse(line []byte, r *response) error {
	if b, ok := parseBatchResponse(line); ok {
		*r = response{Batch: b}
		return nil
	}
	return json.Unmarshal(line, r)
}

// parseBatchResponse reads `{"batch":{...}}` with the members batch
// has; ok is false for any other line, and for one it cannot be sure to
// read as encoding/json would (escapes, numbers not plain integers, other
// members, space between tokens).
func parseBatchResponse(line []byte) (b *batch, ok bool) {
	const prefix, suffix = `{"batch":{`, `}}`
	if !bytes.HasPrefix(line, []byte(prefix)) || !bytes.HasSuffix(line, []byte(suffix)) || len(line) < len(prefix)+len(suffix) {
		return nil, false
	}
	p := line[len(prefix) : len(line)-len(suffix)]
	b = &batch{}
	for len(p) > 0 {
		if p[0] != '"' {
			return nil, false
		}
		end := bytes.IndexByte(p[1:], '"')
		if end < 0 {
			return nil, false
		}
		key := p[1 : 1+end]
		p = p[2+end:]
		if len(p) == 0 || p[0] != ':' {
			return nil, false
		}
		p = p[1:]
		var good bool
		switch string(key) {
		case "dropped":
			var v int64
			if v, p, good = parseInt(p); good && v >= 0 {
				b.Dropped = uint64(v)
			} else {
				good = false
			}
		case "n":
			var v int64
			v, p, good = parseInt(p)
			b.N = int(v)
		case "t":
			b.Start, p, good = parseInt(p)
		case "d":
			b.Deltas, p, good = parseInts(p, b.Deltas[:0])
		case "x":
			b.Text, p, good = parseString(p)
		case "tr":
			var vs []int64
			if vs, p, good = parseInts(p, nil); good {
				b.Truncated = make([]int, len(vs))
				for i, v := range vs {
					b.Truncated[i] = int(v)
				}
			}
		}
		if !good {
			return nil, false
		}
		if len(p) > 0 {
			if p[0] != ',' || len(p) == 1 {
				return nil, false
			}
			p = p[1:]
		}
	}
	return b, true
}

// parseInt reads a JSON integer (no fraction, exponent or leading zero)
// that fits an int64 at the start of p.
func parseInt(p []byte) (int64, []byte, bool) {
	i, neg := 0, false
	if len(p) > 0 && p[0] == '-' {
		i, neg = 1, true
	}
	start := i
	var v uint64
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		if v > (1<<63)/10 {
			return 0, p, false
		}
		v = v*10 + uint64(p[i]-'0')
		i++
	}
	switch {
	case i == start, p[start] == '0' && i > start+1, i < len(p) && (p[i] == '.' || p[i] == 'e' || p[i] == 'E'):
		return 0, p, false
	case neg && v <= 1<<63:
		return -int64(v), p[i:], true
	case !neg && v < 1<<63:
		return int64(v), p[i:], true
	}
	return 0, p, false
}

// parseInts reads a JSON array of integers at the start of p, appending
// them to buf.
func parseInts(p []byte, buf []int64) ([]int64, []byte, bool) {
	if len(p) < 2 || p[0] != '[' {
		return nil, p, false
	}
	p = p[1:]
	if p[0] == ']' {
		return buf, p[1:], true
	}
	for {
		v, rest, ok := parseInt(p)
		if !ok || len(rest) == 0 {
			return nil, p, false
		}
		buf = append(buf, v)
		switch rest[0] {
		case ',':
			p = rest[1:]
		case ']':
			return buf, rest[1:], true
		default:
			return nil, p, false
		}
	}
}

// parseString reads a JSON string at the start of p, unescaping it in
// the same pass; an escape it does not read as encoding/json would (a
// surrogate) sends the string through encoding/json.
func parseString(p []byte) (string, []byte, bool) {
	if len(p) == 0 || p[0] != '"' {
		return "", p, false
	}
	end := bytes.IndexByte(p[1:], '"') + 1
	if end == 0 {
		return "", p, false
	}
	if bytes.IndexByte(p[1:end], '\\') < 0 {
		s := p[1:end]
		if !plainText(s) {
			return "", p, false
		}
		return string(s), p[end+1:], true
	}
	var out strings.Builder
	out.Grow(end)
	i := 1
	for {
		j := i
		for j < len(p) && p[j] != '\\' && p[j] != '"' {
			j++
		}
		if j == len(p) || !plainText(p[i:j]) {
			return "", p, false
		}
		out.Write(p[i:j])
		if p[j] == '"' {
			return out.String(), p[j+1:], true
		}
		if j+1 == len(p) {
			return "", p, false
		}
		i = j + 2
		switch p[j+1] {
		case '"', '\\', '/':
			out.WriteByte(p[j+1])
		case 'n':
			out.WriteByte('\n')
		case 't':
			out.WriteByte('\t')
		case 'r':
			out.WriteByte('\r')
		case 'b':
			out.WriteByte('\b')
		case 'f':
			out.WriteByte('\f')
		case 'u':
			if j+6 > len(p) {
				return "", p, false
			}
			r, err := strconv.ParseUint(string(p[j+2:j+6]), 16, 32)
			if err != nil || utf16.IsSurrogate(rune(r)) {
				return parseStringSlow(p)
			}
			out.WriteRune(rune(r))
			i = j + 6
		default:
			return "", p, false
		}
	}
}

// plainText reports whether s may stand unescaped in a JSON string as
// encoding/json reads it: valid UTF-8 without control characters.
func plainText(s []byte) bool {
	for _, c := range s {
		if c < 0x20 {
			return false
		}
	}
	return utf8.Valid(s)
}

// parseStringSlow reads a JSON string at the start of p through
// encoding/json.
func parseStringSlow(p []byte) (string, []byte, bool) {
	end := 1
	for end < len(p) && p[end] != '"' {
		if p[end] == '\\' {
			end++
		}
		end++
	}
	if end >= len(p) {
		return "", p, false
	}
	var s string
	if err := json.Unmarshal(p[:end+1], &s); err != nil {
		return "", p, false
	}
	return s, p[end+1:], true
}
