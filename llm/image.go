package llm

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"net/http"

	// Decoders for images handed over as bytes.
	_ "image/gif"

	_ "golang.org/x/image/bmp"
	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp"

	"github.com/imagescope/imagescope/config"
)

// imageOptions is how a role wants its images (a map key).
type imageOptions struct {
	maxSide, width, height int
	format                 string
	quality                int
}

func imageOptionsOf(c config.Image) imageOptions {
	o := imageOptions{maxSide: c.MaxSide, width: c.Width, height: c.Height, format: c.Format, quality: c.Quality}
	if o.format == "" {
		o.format = "jpeg"
	}
	if o.quality == 0 {
		o.quality = 95
	}
	return o
}

// encodedImage is an image ready for the wire.
type encodedImage struct {
	dataURL string
	// sum is the sha256 of the encoded bytes, used in cache keys instead
	// of the bytes themselves.
	sum string
}

// encode returns the data URL for the options, memoised per options.
func (d *ImageData) encode(o imageOptions) (encodedImage, error) {
	if d == nil {
		return encodedImage{}, errors.New("nil image")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.enc[o]; ok {
		return e, nil
	}
	b, mime, err := d.bytesFor(o)
	if err != nil {
		return encodedImage{}, err
	}
	h := sha256.Sum256(b)
	e := encodedImage{
		dataURL: "data:" + mime + ";base64," + base64.StdEncoding.EncodeToString(b),
		sum:     hex.EncodeToString(h[:]),
	}
	if d.enc == nil {
		d.enc = map[imageOptions]encodedImage{}
	}
	d.enc[o] = e
	return e, nil
}

func targetMIME(format string) string {
	if format == "png" {
		return "image/png"
	}
	return "image/jpeg"
}

func (d *ImageData) bytesFor(o imageOptions) ([]byte, string, error) {
	want := targetMIME(o.format)
	img := d.Image
	if img == nil {
		if len(d.Bytes) == 0 {
			return nil, "", errors.New("empty image")
		}
		mime := d.MIME
		if mime == "" {
			mime = http.DetectContentType(d.Bytes)
		}
		cfg, _, err := image.DecodeConfig(bytes.NewReader(d.Bytes))
		if err != nil {
			return nil, "", fmt.Errorf("read image header: %w", err)
		}
		if mime == want && targetSize(cfg.Width, cfg.Height, o) == [2]int{cfg.Width, cfg.Height} {
			return d.Bytes, mime, nil // already right: send unchanged
		}
		if int64(cfg.Width)*int64(cfg.Height) >= 400_000_000 {
			return nil, "", fmt.Errorf("image of %dx%d pixels is too large", cfg.Width, cfg.Height)
		}
		img, _, err = image.Decode(bytes.NewReader(d.Bytes))
		if err != nil {
			return nil, "", fmt.Errorf("decode image: %w", err)
		}
	}
	b := img.Bounds()
	sz := targetSize(b.Dx(), b.Dy(), o)
	if sz != [2]int{b.Dx(), b.Dy()} {
		dst := image.NewRGBA(image.Rect(0, 0, sz[0], sz[1]))
		draw.CatmullRom.Scale(dst, dst.Bounds(), img, b, draw.Src, nil)
		img = dst
	}
	var buf bytes.Buffer
	var err error
	if o.format == "png" {
		err = png.Encode(&buf, img)
	} else {
		err = jpeg.Encode(&buf, opaque(img), &jpeg.Options{Quality: o.quality})
	}
	if err != nil {
		return nil, "", fmt.Errorf("encode image: %w", err)
	}
	return buf.Bytes(), want, nil
}

// opaque flattens transparency onto white before JPEG encoding (JPEG has
// no alpha; the standard encoder would otherwise drop it as black).
func opaque(img image.Image) image.Image {
	if o, ok := img.(interface{ Opaque() bool }); ok && o.Opaque() {
		return img
	}
	b := img.Bounds()
	dst := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(dst, dst.Bounds(), image.White, image.Point{}, draw.Src)
	draw.Draw(dst, dst.Bounds(), img, b.Min, draw.Over)
	return dst
}

// targetSize is the size an image of w x h is sent at.
func targetSize(w, h int, o imageOptions) [2]int {
	if o.width > 0 && o.height > 0 {
		return [2]int{o.width, o.height}
	}
	if o.maxSide > 0 && (w > o.maxSide || h > o.maxSide) {
		if w >= h {
			nh := (h*o.maxSide + w/2) / w
			return [2]int{o.maxSide, max(nh, 1)}
		}
		nw := (w*o.maxSide + h/2) / h
		return [2]int{max(nw, 1), o.maxSide}
	}
	return [2]int{w, h}
}
