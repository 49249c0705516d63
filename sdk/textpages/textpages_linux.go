package textpages

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Release unmaps the resident pages of the executable's read-only,
// file-backed mappings (text, read-only data, pclntab) with
// madvise(MADV_DONTNEED), and returns how many bytes of mappings it
// covered. A read-only mapping that holds anonymous pages (a
// position-independent binary's relocated data, made read-only after
// relocation) is left alone: dropping it would lose the relocations.
func Release() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("release text pages: %w", err)
	}
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("release text pages: %w", err)
	}
	var released int64
	for _, m := range candidates(data, exe) {
		// The range is this process's own mapping, given by address: no
		// Go pointer is involved.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("release text pages %x-%x: %w", m.start, m.end, errno)
		}
		released += int64(m.end - m.start)
	}
	return released, nil
}

// span is an address range of a mapping.
type span struct{ start, end uintptr }

// candidates parses smaps content and returns the mappings of path that
// are neither writable nor hold anonymous (copied-on-write) pages.
func candidates(smaps []byte, path string) []span {
	var out []span
	var cur *span
	anon := false
	flush := func() {
		if cur != nil && !anon {
			out = append(out, *cur)
		}
		cur, anon = nil, false
	}
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			flush()
			if len(f) < 6 || f[5] != path || len(f[1]) < 2 || f[1][1] == 'w' {
				continue
			}
			lo, hi, ok := strings.Cut(f[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if !ok || err1 != nil || err2 != nil || end <= start {
				continue
			}
			cur = &span{uintptr(start), uintptr(end)}
			continue
		}
		if cur != nil && f[0] == "Anonymous:" && len(f) >= 2 && f[1] != "0" {
			anon = true
		}
	}
	flush()
	return out
}
