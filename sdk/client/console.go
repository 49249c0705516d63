package client

import (
	"github.com/petrel-vmm/petrel/sdk/consolepack"
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
	r := consolepack.Run{Count: p.GetCount(), Dropped: p.GetDropped(), StartNs: p.GetStartNs(), Deltas: p.GetDeltas(), Text: p.GetText(), Truncated: p.GetTruncated()}
	return consolepack.Unpack(buf, r,
		func(t int64, dropped uint64) ConsoleLine { return ConsoleLine{TimeNs: t, Dropped: dropped} },
		func(t int64, text string) ConsoleLine { return ConsoleLine{TimeNs: t, Text: text} },
		func(l *ConsoleLine) { l.Truncated = true })
}
