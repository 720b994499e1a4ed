package run

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// checkpoint is an append-only JSON-lines file holding one finished stage
// of one unit per line; every line is fsync'd before the stage counts as
// done, so a killed run loses at most the lines being written.
type checkpoint struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

type ckLine struct {
	Key  string          `json:"key"`
	Data json.RawMessage `json:"data"`
}

// openCheckpoint opens (creating) a checkpoint file and returns the
// records already in it. A torn last line (the process died while writing
// it) is dropped and truncated away; damage anywhere else is an error.
func openCheckpoint(path string) (*checkpoint, map[string]json.RawMessage, error) {
	recs := map[string]json.RawMessage{}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("read checkpoint: %w", err)
	}
	good := 0
	if len(b) > 0 {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 1<<20), 1<<30)
		off, line := 0, 0
		for sc.Scan() {
			line++
			raw := sc.Bytes()
			end := off + len(raw) + 1
			var l ckLine
			if err := json.Unmarshal(raw, &l); err != nil || l.Key == "" {
				if end >= len(b) { // last line, possibly without newline: torn write
					break
				}
				return nil, nil, fmt.Errorf("checkpoint %s line %d: damaged record", path, line)
			}
			if end > len(b) { // complete JSON but no newline: keep it, fix the newline
				end = len(b)
			}
			recs[l.Key] = append(json.RawMessage(nil), l.Data...)
			off = end
			good = off
		}
		if err := sc.Err(); err != nil {
			return nil, nil, fmt.Errorf("read checkpoint %s: %w", path, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, nil, fmt.Errorf("create checkpoint folder: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open checkpoint: %w", err)
	}
	if good < len(b) || (good > 0 && b[good-1] != '\n') {
		// Drop the torn tail; make sure the last kept record ends a line.
		if err := f.Truncate(int64(good)); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("repair checkpoint %s: %w", path, err)
		}
		if good > 0 && b[good-1] != '\n' {
			if _, err := f.WriteAt([]byte{'\n'}, int64(good)); err != nil {
				f.Close()
				return nil, nil, fmt.Errorf("repair checkpoint %s: %w", path, err)
			}
		}
	}
	if _, err := f.Seek(0, 2); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open checkpoint: %w", err)
	}
	return &checkpoint{path: path, f: f}, recs, nil
}

// append writes one record and syncs it to disk.
func (c *checkpoint) append(key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("checkpoint %s: encode: %w", key, err)
	}
	line, err := json.Marshal(ckLine{Key: key, Data: data})
	if err != nil {
		return err
	}
	line = append(line, '\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.f.Write(line); err != nil {
		return fmt.Errorf("write checkpoint %s: %w", c.path, err)
	}
	if err := c.f.Sync(); err != nil {
		return fmt.Errorf("sync checkpoint %s: %w", c.path, err)
	}
	return nil
}

func (c *checkpoint) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f.Close()
}
