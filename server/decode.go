package server

import (
	"bufio"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // upload formats
	_ "image/jpeg"
	_ "image/png"
	"io"

	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/webp"
)

// errTooManyPixels marks an image whose header announces more pixels than
// allowed; nothing beyond the header was decoded.
var errTooManyPixels = errors.New("image has too many pixels")

// decodeFunc decodes an image, refusing before pixel decoding when the
// header announces more than maxPixels pixels.
type decodeFunc func(r io.ReadSeeker, maxPixels int64) (image.Image, error)

// decodeLimited reads the header first (image.DecodeConfig) and refuses
// images above maxPixels before any pixel buffer is allocated, then rewinds
// and decodes.
func decodeLimited(r io.ReadSeeker, maxPixels int64) (image.Image, error) {
	cfg, format, err := image.DecodeConfig(bufio.NewReader(r))
	if err != nil {
		return nil, fmt.Errorf("read image header: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("%s image has no pixels (%dx%d)", format, cfg.Width, cfg.Height)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > maxPixels {
		return nil, fmt.Errorf("%w: %s %dx%d is %d pixels, limit %d", errTooManyPixels, format, cfg.Width, cfg.Height, px, maxPixels)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind image: %w", err)
	}
	img, _, err := image.Decode(bufio.NewReader(r))
	if err != nil {
		return nil, fmt.Errorf("decode %s image: %w", format, err)
	}
	return img, nil
}
