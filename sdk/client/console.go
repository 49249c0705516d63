package client

import (
	"errors"
	"fmt"
	"strings"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// ConsoleLine is one line of a VM's console as a Console stream brings
// it, or a marker (Dropped set, no text) counting the lines a follower
// lost at that point because it read too slowly.
type ConsoleLine struct {
	// TimeNs is when petreld received the line, in unix ns.
	TimeNs int64
	// Text is the line without its newline.
	Text string
	// Truncated says the line was cut at the length limit.
	Truncated bool
	// Dropped, on a marker, is how many lines were lost here.
	Dropped uint64
}

// AppendConsoleLines appends the lines one message of a Console stream
// carries to buf, in order, whichever form petreld sent them in: packed
// (when the request set packed), a line with more after it (batch), or a
// line alone (a daemon that predates both). Passing the previous result
// back as buf, a busy console costs no allocation per line. A packed
// message whose parts do not agree is an error.
func AppendConsoleLines(buf []ConsoleLine, m *daemonv1.ConsoleLine) ([]ConsoleLine, error) {
	if p := m.GetPacked(); p != nil {
		return appendPacked(buf, p)
	}
	buf = append(buf, ConsoleLine{TimeNs: m.GetTimeNs(), Text: m.GetText(), Truncated: m.GetTruncated(), Dropped: m.GetDropped()})
	for _, l := range m.GetMore() {
		buf = append(buf, ConsoleLine{TimeNs: l.GetTimeNs(), Text: l.GetText(), Truncated: l.GetTruncated(), Dropped: l.GetDropped()})
	}
	return buf, nil
}

// appendPacked appends the lines of p, after a marker when lines were
// lost before them.
func appendPacked(buf []ConsoleLine, p *daemonv1.PackedConsoleLines) ([]ConsoleLine, error) {
	n := int(p.GetCount())
	text, deltas := p.GetText(), p.GetDeltas()
	if n == 0 {
		if len(deltas) != 0 || text != "" || len(p.GetTruncated()) != 0 {
			return buf, errors.New("malformed console message: content without lines")
		}
	} else if len(deltas) != n-1 || strings.Count(text, "\n") != n-1 {
		return buf, fmt.Errorf("malformed console message: %d lines, %d time deltas, %d texts", n, len(deltas), strings.Count(text, "\n")+1)
	}
	t := p.GetStartNs()
	if p.GetDropped() > 0 {
		buf = append(buf, ConsoleLine{TimeNs: t, Dropped: p.GetDropped()})
	}
	first := len(buf)
	for i := 0; i < n; i++ {
		if i > 0 {
			t += deltas[i-1]
		}
		line, rest, _ := strings.Cut(text, "\n")
		buf = append(buf, ConsoleLine{TimeNs: t, Text: line})
		text = rest
	}
	for _, i := range p.GetTruncated() {
		if int(i) >= n {
			return buf[:first], fmt.Errorf("malformed console message: truncated line %d of %d", i, n)
		}
		buf[first+int(i)].Truncated = true
	}
	return buf, nil
}
