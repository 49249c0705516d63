package shim

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// responseLines are response lines whose reading by decodeResponse must
// match encoding/json's: the shim's own batches (escapes, runes, HTML
// characters the encoder escapes) and lines the one-pass reader leaves
// to encoding/json.
var responseLines = []string{
	`{"batch":{"n":3,"t":1700000000000000000,"d":[1000,-5],"x":"a\n\u003cb\u003e \"q\" \\ \t é\u2028\nccc","tr":[2]}}`,
	`{"batch":{"dropped":3,"n":0}}`,
	`{"batch":{"n":1,"t":-1,"x":""}}`,
	`{"batch":{"n":1,"x":"\ud83d\ude00"}}`,
	`{"batch":{"n":1,"x":"\/"}}`,
	`{"batch":{"n":1,"d":[],"x":"x"}}`,
	`{"batch":{"n":1,"t":01}}`,
	`{"batch":{"n":1,"t":1.5}}`,
	`{"batch":{"n":1,"t":99999999999999999999}}`,
	`{"batch":{"n":1,"x":"a` + "\x01" + `"}}`,
	`{"batch":{"n":1,"x":"` + "\xff" + `"}}`,
	`{"batch":{"n":1,"x":"\q"}}`,
	`{"batch":{"n":1,"x":"\u12"}}`,
	`{"batch":{"n":1,"y":2}}`,
	`{"batch":{"n":1,}}`,
	`{"batch":{"n":1} }`,
	`{"batch":{"n":1}}x`,
	`{"batch":{}}`,
	`{"end":true}`,
	`{"batch":null}`,
	`{"batch":{"n":1,"d":[1,2}}`,
}

// TestDecodeResponseAsJSON: decodeResponse reads every line as
// encoding/json does, and refuses what it refuses.
func TestDecodeResponseAsJSON(t *testing.T) {
	fast := 0
	for _, line := range responseLines {
		if _, ok := parseBatchResponse([]byte(line)); ok {
			fast++
		}
		checkAsJSON(t, []byte(line))
	}
	if fast < 6 {
		t.Errorf("only %d of the shim's batches were read in one pass", fast)
	}
}

// TestDecodeResponseOfEncodedBatch: a batch as the shim encodes it is
// read in one pass and gives back its lines.
func TestDecodeResponseOfEncodedBatch(t *testing.T) {
	t0 := time.Unix(1700000000, 5).UTC()
	lines := []Line{{Time: t0, Text: "plain"}, {Time: t0.Add(3), Text: "<html> & \"quotes\" \\ tab\t", Truncated: true}, {Time: t0.Add(9), Text: "日本 \u2028 \x7f"}}
	data, err := json.Marshal(response{Batch: encodeBatch(lines, 4)})
	if err != nil {
		t.Fatal(err)
	}
	b, ok := parseBatchResponse(data)
	if !ok {
		t.Fatalf("%s not read in one pass", data)
	}
	got, err := b.decode()
	if err != nil || got.Dropped != 4 || !reflect.DeepEqual(got.Lines, lines) {
		t.Errorf("decoded %+v, %v; want %+v", got, err, lines)
	}
}

// FuzzDecodeResponse: whatever the line, decodeResponse agrees with
// encoding/json.
func FuzzDecodeResponse(f *testing.F) {
	for _, l := range responseLines {
		f.Add([]byte(l))
	}
	f.Fuzz(func(t *testing.T, line []byte) { checkAsJSON(t, line) })
}

func checkAsJSON(t *testing.T, line []byte) {
	t.Helper()
	var got, want response
	gotErr, wantErr := decodeResponse(line, &got), json.Unmarshal(line, &want)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%q: error %v, encoding/json's %v", line, gotErr, wantErr)
	}
	if gotErr == nil && !reflect.DeepEqual(normal(got), normal(want)) {
		t.Fatalf("%q: read as %+v, encoding/json reads %+v", line, got.Batch, want.Batch)
	}
}

// normal makes empty and absent lists alike, which no reader tells apart.
func normal(r response) response {
	if r.Batch != nil {
		b := *r.Batch
		if len(b.Deltas) == 0 {
			b.Deltas = nil
		}
		if len(b.Truncated) == 0 {
			b.Truncated = nil
		}
		r.Batch = &b
	}
	return r
}
