package tender

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// mapping is one line of /proc/PID/maps.
type mapping struct {
	start, end uint64
	offset     uint64
	path       string
}

// parseMaps parses the contents of /proc/PID/maps.
func parseMaps(b []byte) ([]mapping, error) {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			return nil, fmt.Errorf("malformed memory map line %q", sc.Text())
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end < start {
			return nil, fmt.Errorf("malformed memory map line %q", sc.Text())
		}
		offset, err := strconv.ParseUint(fields[2], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("malformed memory map line %q", sc.Text())
		}
		m := mapping{start: start, end: end, offset: offset}
		if len(fields) > 5 {
			m.path = strings.Join(fields[5:], " ")
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// pieBase is the lowest address where Linux places a position-independent
// executable (ELF_ET_DYN_BASE is two thirds of the 47-bit address space, and
// even without address space randomization no less than 4 GiB on x86-64):
// a mapping of the tender's own below it means the tender was not built as
// one.
const pieBase = 1 << 32

// checkAddressSpace checks that guest memory [hostMemBase, memSize) is free
// in the tender's address space, given its mappings: the guest's addresses
// are the tender's own. It says what to do when it is not: rebuild the
// tender as a position-independent executable when something is mapped in
// the low 4 GiB, or lower --mem to what fits below the lowest mapping.
func checkAddressSpace(maps []mapping, memSize uint64) error {
	var lowest *mapping
	for i := range maps {
		m := &maps[i]
		if m.end > hostMemBase && (lowest == nil || m.start < lowest.start) {
			lowest = m
		}
	}
	if lowest == nil || lowest.start >= memSize {
		return nil
	}
	what := lowest.path
	if what == "" {
		what = "anonymous memory"
	}
	if lowest.start < pieBase {
		return fmt.Errorf("the tender must be built with -buildmode=pie: %s is mapped at %#x, inside guest memory [%#x, %#x)", what, lowest.start, hostMemBase, memSize)
	}
	return fmt.Errorf("guest memory of %d MB reaches the tender's own mapping of %s at %#x; at most %d MB fit below it", memSize>>20, what, lowest.start, lowest.start>>20)
}

// systemMappings returns the mappings the kernel itself installs in every
// process: the vDSO, its data pages and the uprobes area. The guest
// process unmaps them like everything else of the tender's, but a kernel
// may seal them (CONFIG_MSEAL_SYSTEM_MAPPINGS), and then they stay: they
// are the kernel's, the same in every process, and hold nothing of the
// tender's. They are therefore unmapped one by one, apart from the rest,
// whose unmapping must not fail.
func systemMappings(maps []mapping) []addrRange {
	var out []addrRange
	for _, m := range maps {
		switch m.path {
		case "[vdso]", "[vvar]", "[vvar_vclock]", "[uprobes]":
			out = append(out, addrRange{m.start, m.end})
		}
	}
	return out
}
