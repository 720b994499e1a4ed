// Package atomicfile writes files so that a reader (or a process started
// after a crash) sees either the old content or the new, never a part:
// the data goes to a temporary file in the same folder, is synced, and is
// renamed over the target.
package atomicfile

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write replaces path's content with data, creating missing folders.
func Write(path string, data []byte) error {
	return WriteFunc(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFunc replaces path's content with what fill writes, creating
// missing folders. When fill fails the target is left untouched and no
// temporary file remains. Errors name the path.
func WriteFunc(path string, fill func(w io.Writer) error) error {
	tmp, err := writeTemp(path, fill)
	if err != nil {
		return err
	}
	return commit(tmp, path)
}

// File is one file for WriteAll: its path and what Fill writes into it.
type File struct {
	Path string
	Fill func(w io.Writer) error
}

// WriteAll replaces several files as a set: each is written and synced
// under a temporary name first, and only when all are written are they
// renamed over their targets, in order. A failure while writing leaves
// every target untouched and no temporary file behind.
func WriteAll(files []File) error {
	tmps := make([]string, 0, len(files))
	for _, f := range files {
		tmp, err := writeTemp(f.Path, f.Fill)
		if err != nil {
			for _, t := range tmps {
				os.Remove(t)
			}
			return err
		}
		tmps = append(tmps, tmp)
	}
	for i, f := range files {
		if err := commit(tmps[i], f.Path); err != nil {
			for _, t := range tmps[i+1:] {
				os.Remove(t)
			}
			return err
		}
	}
	return nil
}

// writeTemp writes what fill writes to a synced temporary file beside
// path, creating missing folders, and returns its name.
func writeTemp(path string, fill func(w io.Writer) error) (string, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	fail := func(err error) (string, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	bw := bufio.NewWriterSize(tmp, 1<<16)
	if err := fill(bw); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return tmp.Name(), nil
}

// commit renames the written temporary tmp over path.
func commit(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
