package dataset

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// imageExtensions are the file extensions LoadFolder takes as images
// (compared case-insensitively).
var imageExtensions = []string{".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"}

// IsImageFile reports whether a file name has an image extension.
func IsImageFile(name string) bool {
	return slices.Contains(imageExtensions, strings.ToLower(filepath.Ext(name)))
}

// ErrNoImages is returned (wrapped) by LoadFolder for a folder that holds no
// image files.
var ErrNoImages = errors.New("no images")

type noImagesError struct{ dir string }

func (e noImagesError) Error() string {
	return fmt.Sprintf("folder %s holds no images (looked for %s files, sub-folders included)", e.dir, strings.Join(imageExtensions, " "))
}

func (e noImagesError) Is(target error) bool { return target == ErrNoImages }

// quietError reads as msg alone and still matches its cause with errors.Is.
type quietError struct {
	msg   string
	cause error
}

func (e quietError) Error() string { return e.msg }
func (e quietError) Unwrap() error { return e.cause }

// LoadFolder reads a plain image folder as a gallery (no queries): every
// image file under dir, recursively, named by its path relative to dir with
// forward slashes, sorted by name. Hidden files and folders (names starting
// with '.', which covers macOS "._*" resource forks) are skipped; symbolic
// links to image files are followed, linked folders are not; a link that
// cannot be followed (dangling, or a loop) is kept, so that indexing reports
// it as an unreadable file. A folder without images is an error wrapping
// ErrNoImages.
func LoadFolder(ctx context.Context, dir string) (*Dataset, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, quietError{fmt.Sprintf("image folder %s does not exist", dir), err}
	}
	if err != nil {
		return nil, fmt.Errorf("image folder %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("image folder %s: not a directory", dir)
	}
	if _, err := os.ReadDir(dir); err != nil {
		return nil, fmt.Errorf("image folder %s cannot be read: %w", dir, err)
	}
	ds := &Dataset{Name: Folder, Task: TextToImage, Domain: "general", Root: dir, Gallery: []Image{}, Queries: []Query{}}
	n := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk %s: %w", p, err)
		}
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if p != dir && hiddenName(d.Name()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !IsImageFile(d.Name()) {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if st, err := os.Stat(p); err == nil && !st.Mode().IsRegular() {
				return nil
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		ds.Gallery = append(ds.Gallery, Image{Name: filepath.ToSlash(rel), Path: p})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load folder %s: %w", dir, err)
	}
	if len(ds.Gallery) == 0 {
		return nil, noImagesError{dir}
	}
	slices.SortFunc(ds.Gallery, func(a, b Image) int { return strings.Compare(a.Name, b.Name) })
	return ds, nil
}
