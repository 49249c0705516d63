package shim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// maxRecordLine bounds one line of console.jsonl when reading it back: a
// line of line-max bytes can grow up to six times when JSON escapes it.
const maxRecordLine = 8 << 20

// ReadExit returns the exit record a shim left in dir. When there is none
// (the tender still runs, or the shim was lost) it returns a nil Exit and
// an error for which errors.Is(err, fs.ErrNotExist) holds.
func ReadExit(dir string) (*Exit, error) {
	path := filepath.Join(dir, ExitFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read exit record: %w", err)
	}
	var e Exit
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return &e, nil
}

// ReadConsole returns the console lines a shim saved in dir when its tender
// exited, oldest first. The file is complete only once ReadExit succeeds;
// a missing file yields an error for which errors.Is(err, fs.ErrNotExist)
// holds.
func ReadConsole(dir string) ([]Line, error) {
	path := filepath.Join(dir, ConsoleFile)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read console record: %w", err)
	}
	defer f.Close()
	var lines []Line
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), maxRecordLine)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("parse %s line %d: %w", path, n, err)
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return lines, nil
}

// readShimRecord returns the content of shim.json in dir.
func readShimRecord(dir string) (*shimRecord, error) {
	path := filepath.Join(dir, ShimFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read shim record: %w", err)
	}
	var rec shimRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return &rec, nil
}

// encodeConsole renders lines as console.jsonl content.
func encodeConsole(lines []Line) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i := range lines {
		if err := enc.Encode(&lines[i]); err != nil {
			return nil, fmt.Errorf("encode console line: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// writeJSONFile atomically replaces dir/name with v encoded as JSON.
func writeJSONFile(dir, name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	return writeFileAtomic(dir, name, append(data, '\n'))
}

// writeFileAtomic replaces dir/name with data so that readers see either
// the old file or the complete new one, even across a power failure: it
// writes a temporary file, syncs it, renames it into place and syncs dir.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	path := filepath.Join(dir, name)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// removeIfExists removes path, treating a missing file as success.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
