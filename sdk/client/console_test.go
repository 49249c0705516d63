package client

import (
	"fmt"
	"testing"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// TestAppendConsoleLines: every form of a Console message gives its
// lines in order, appended to what the buffer holds; a packed message
// whose parts disagree is refused.
func TestAppendConsoleLines(t *testing.T) {
	buf := []ConsoleLine{{Text: "kept"}}
	var err error
	for _, m := range []*daemonv1.ConsoleLine{
		{TimeNs: 1, Text: "alone"},
		{TimeNs: 2, Text: "head", More: []*daemonv1.ConsoleLine{{TimeNs: 3, Dropped: 2}, {TimeNs: 3, Text: "more", Truncated: true}}},
		{Packed: &daemonv1.PackedConsoleLines{Count: 3, Dropped: 1, StartNs: 10, Deltas: []int64{2, 3}, Text: "p\n\nq", Truncated: []uint32{2}}},
		{Packed: &daemonv1.PackedConsoleLines{Dropped: 4, StartNs: 20}},
	} {
		if buf, err = AppendConsoleLines(buf, m); err != nil {
			t.Fatalf("%v: %v", m, err)
		}
	}
	want := "[{0 kept false 0} {1 alone false 0} {2 head false 0} {3  false 2} {3 more true 0} {10  false 1} {10 p false 0} {12  false 0} {15 q true 0} {20  false 4}]"
	if got := fmt.Sprint(buf); got != want {
		t.Errorf("lines\n%s\nwant\n%s", got, want)
	}
	for _, p := range []*daemonv1.PackedConsoleLines{
		{Count: 2, Deltas: []int64{1}, Text: "one line"},
		{Count: 2, Text: "a\nb"},
		{Count: 1, Text: "a", Truncated: []uint32{1}},
		{Dropped: 1, Deltas: []int64{1}},
	} {
		if _, err := AppendConsoleLines(nil, &daemonv1.ConsoleLine{Packed: p}); err == nil {
			t.Errorf("%v accepted", p)
		}
	}
}
