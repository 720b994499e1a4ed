package server

import (
	"image"
	"io"

	"github.com/imagescope/imagescope/imageio"
)

// errTooManyPixels marks an image refused from its header (too many
// pixels or too many bytes); no pixel was decoded.
var errTooManyPixels = imageio.ErrTooLarge

// decodeFunc decodes an image, refusing before pixel decoding when the
// header announces more than maxPixels pixels.
type decodeFunc func(r io.ReadSeeker, maxPixels int64) (image.Image, error)

// decodeLimited decodes JPEG, PNG, GIF, BMP or WebP with imageio: the
// pixel count is checked from the header before any pixel buffer is
// allocated, and the EXIF orientation is applied.
func decodeLimited(r io.ReadSeeker, maxPixels int64) (image.Image, error) {
	img, _, err := imageio.Decode(r, imageio.Limits{MaxPixels: maxPixels, MaxBytes: 1 << 30})
	if err != nil {
		return nil, err
	}
	return img, nil
}
