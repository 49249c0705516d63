package solo5

import (
	"bytes"
	"debug/elf"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func readBytes(b []byte) (*Image, error) { return Read(bytes.NewReader(b)) }

// FuzzRead feeds arbitrary bytes to Read. It must never panic, must report
// every failure through one of the sentinels (a bytes.Reader cannot fail
// with an I/O error), and anything it accepts must satisfy the manifest
// rules and survive a Build round trip.
func FuzzRead(f *testing.F) {
	specs := []BuildSpec{
		{Target: TargetHVT, ABIVersion: 2, Devices: testDevices},
		{Target: TargetSPT, ABIVersion: 1},
		{Target: TargetHVT, Machine: elf.EM_AARCH64, Devices: []Device{{"n", DeviceNet}}},
		{NoABINote: true},
		{Target: TargetXen, NoManifest: true},
	}
	for _, s := range specs {
		b := mustBuild(f, s)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte("\x7fELF"))
	f.Add(segImage(noteSegment{".n", 8, append(abiNote(TargetHVT, 1), manifestNote(f, testDevices, 8)...)}))

	sentinels := []error{ErrNotELF, ErrNotSolo5, ErrUnsupported, ErrMalformed}
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := readBytes(data)
		if err != nil {
			matched := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					matched++
				}
			}
			if matched != 1 {
				t.Fatalf("error %q wraps %d sentinels, want exactly 1", err, matched)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if !im.Target.Known() {
			t.Fatalf("accepted unknown target %v", im.Target)
		}
		if len(im.Manifest) >= MaxManifestEntries {
			t.Fatalf("accepted %d devices", len(im.Manifest))
		}
		// Build validates as strictly as Read, so a rebuilt image must
		// read back identically.
		b, err := Build(BuildSpec{Target: im.Target, ABIVersion: im.ABIVersion, Devices: im.Manifest, Machine: im.Machine})
		if err != nil {
			t.Fatalf("Build rejects what Read accepted (%+v): %v", im, err)
		}
		again, err := readBytes(b)
		if err != nil || !reflect.DeepEqual(again, im) {
			t.Fatalf("round trip of %+v = %+v, %v", im, again, err)
		}
	})
}

// FuzzParseTenderArgs feeds arbitrary argument vectors (NUL-separated) to
// ParseTenderArgs. It must never panic, and whatever it accepts must render
// with Argv to a command line that parses back to the same TenderArgs.
func FuzzParseTenderArgs(f *testing.F) {
	seeds := [][]string{
		{"--mem=512", "--net:service0=tap0", "--net-mac:service0=02:00:00:00:00:01", "--block:disk=/d", "--block-sector-size:disk=4096", "--", "u.hvt", "a", "b"},
		{"--", "img"},
		{"--block-sector-size:d=512", "--block:d=x=y", "--", "img", "--"},
		{"--help"},
		{"--mem=0", "--", "img"},
		{"--net-mac:a=02:00:00:00:00:01", "--", "img"},
	}
	for _, s := range seeds {
		f.Add(strings.Join(s, "\x00"))
	}
	f.Fuzz(func(t *testing.T, joined string) {
		argv := strings.Split(joined, "\x00")
		ta, err := ParseTenderArgs(argv)
		if err != nil {
			return
		}
		if ta.Image == "" {
			t.Fatalf("accepted %q without an image", argv)
		}
		canon := ta.Argv()
		back, err := ParseTenderArgs(canon)
		if err != nil {
			t.Fatalf("Argv %q of accepted %q does not parse: %v", canon, argv, err)
		}
		if !reflect.DeepEqual(normalize(back), normalize(ta)) {
			t.Fatalf("round trip of %q: %+v != %+v", argv, back, ta)
		}
		if again := back.Argv(); !reflect.DeepEqual(again, canon) {
			t.Fatalf("Argv not canonical: %q != %q", again, canon)
		}
	})
}

// normalize makes empty and nil slices compare equal.
func normalize(t TenderArgs) TenderArgs {
	if len(t.Nets) == 0 {
		t.Nets = nil
	}
	if len(t.Blocks) == 0 {
		t.Blocks = nil
	}
	if len(t.Args) == 0 {
		t.Args = nil
	}
	return t
}
