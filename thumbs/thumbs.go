// Package thumbs makes the JPEG thumbnails of gallery images and keeps them
// on disk beside the image DB, so each is made once: when the gallery is
// indexed (or, for an image added later, when it is first seen) rather than
// when a results page first asks for it. A thumbnail is keyed by the image's
// name, file size and modification time, so a changed file gets a new one.
package thumbs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/jpeg"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"golang.org/x/image/draw"

	"github.com/imagescope/imagescope/imageio"
	"github.com/imagescope/imagescope/internal/atomicfile"
	"github.com/imagescope/imagescope/internal/parallel"
)

// Sizes are the thumbnail sizes served (longest side, pixels).
var Sizes = []int{128, 256, 512}

// Prepared are the sizes made ahead of time: the results grid (256) and
// the small previews of the picker and the chat (128). 512 is made on
// first request and kept.
var Prepared = []int{128, 256}

// Make scales img to fit size x size (never enlarging) over white and
// encodes it as JPEG.
func Make(img image.Image, size int) ([]byte, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w > size || h > size {
		if w >= h {
			h = max(1, h*size/w)
			w = size
		} else {
			w = max(1, w*size/h)
			h = size
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	// White under transparent pixels, as the UI's background.
	draw.Draw(dst, dst.Bounds(), image.White, image.Point{}, draw.Src)
	draw.BiLinear.Scale(dst, dst.Bounds(), img, b, draw.Over, nil)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 82}); err != nil {
		return nil, fmt.Errorf("encode thumbnail: %w", err)
	}
	return buf.Bytes(), nil
}

// Store keeps thumbnails in a folder.
type Store struct {
	dir string
	lim imageio.Limits
}

// DirFor is the thumbnail folder of an image DB.
func DirFor(dbPath string) string { return dbPath + ".thumbs" }

// Open returns the store in dir (created if needed). maxPixels bounds the
// images it decodes (0: imageio's default).
func Open(dir string, maxPixels int64) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("thumbnail folder: %w", err)
	}
	return &Store{dir: dir, lim: imageio.Limits{MaxPixels: maxPixels, MaxBytes: 1 << 30}}, nil
}

// Dir returns the store's folder.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(name string, fi fs.FileInfo, size int) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00%d", name, fi.Size(), fi.ModTime().UnixNano(), size)
	k := hex.EncodeToString(h.Sum(nil)[:16])
	return filepath.Join(s.dir, k[:2], k+"-"+strconv.Itoa(size)+".jpg")
}

// Get returns the stored thumbnail of one version of an image.
func (s *Store) Get(name string, fi fs.FileInfo, size int) ([]byte, bool) {
	b, err := os.ReadFile(s.path(name, fi, size))
	if err != nil || len(b) == 0 {
		return nil, false
	}
	return b, true
}

// Put stores a thumbnail (written to a temporary file and renamed, so a
// reader never sees half of one).
func (s *Store) Put(name string, fi fs.FileInfo, size int, data []byte) error {
	if err := atomicfile.Write(s.path(name, fi, size), data); err != nil {
		return fmt.Errorf("store thumbnail of %s: %w", name, err)
	}
	return nil
}

// Prepare makes the Prepared sizes of one image that are missing,
// decoding the file once. It reports whether anything was made.
func (s *Store) Prepare(name, path string) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("thumbnail of %s: %w", name, err)
	}
	var missing []int
	for _, size := range Prepared {
		if _, err := os.Stat(s.path(name, fi, size)); err != nil {
			missing = append(missing, size)
		}
	}
	if len(missing) == 0 {
		return false, nil
	}
	img, _, err := imageio.DecodeFile(path, s.lim)
	if err != nil {
		return false, fmt.Errorf("thumbnail of %s: %w", name, err)
	}
	for _, size := range missing {
		data, err := Make(img, size)
		if err != nil {
			return false, fmt.Errorf("thumbnail of %s: %w", name, err)
		}
		if err := s.Put(name, fi, size, data); err != nil {
			return false, err
		}
	}
	return true, nil
}

// Summary counts what PrepareAll did.
type Summary struct {
	Made, UpToDate, Failed int
	// Errors holds the first few failures.
	Errors []error
}

// PrepareAll makes the missing thumbnails of images (name -> file) on up
// to workers goroutines (<= 0: all cores). A failing image is counted and
// skipped (it is served as an error later, as before); progress, when not
// nil, is called after each image. It stops early when ctx ends.
func (s *Store) PrepareAll(ctx context.Context, images map[string]string, workers int, progress func()) (Summary, error) {
	names := make([]string, 0, len(images))
	for n := range images {
		names = append(names, n)
	}
	var made, failed atomic.Int64
	errs := make([]error, len(names))
	cerr := parallel.ForCtx(ctx, workers, len(names), func(_, i int) {
		if ctx.Err() != nil {
			return
		}
		ok, err := s.Prepare(names[i], images[names[i]])
		switch {
		case err != nil:
			failed.Add(1)
			errs[i] = err
		case ok:
			made.Add(1)
		}
		if progress != nil {
			progress()
		}
	})
	sum := Summary{Made: int(made.Load()), Failed: int(failed.Load())}
	sum.UpToDate = len(names) - sum.Made - sum.Failed
	for _, err := range errs {
		if err != nil && len(sum.Errors) < 5 {
			sum.Errors = append(sum.Errors, err)
		}
	}
	return sum, cerr
}
