package imageio

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
)

// DefaultJPEGQuality is the quality EncodeJPEG uses for quality <= 0.
const DefaultJPEGQuality = 90

// encodable returns a form the standard encoders handle on their fast paths.
func encodable(img image.Image) image.Image {
	if m, ok := img.(*RGB); ok {
		return m.ToRGBA()
	}
	return img
}

// EncodeJPEG encodes img as a baseline JPEG (quality 1..100; <= 0 means
// DefaultJPEGQuality). Alpha is dropped the way ToRGB drops it.
func EncodeJPEG(img image.Image, quality int) ([]byte, error) {
	if img == nil || img.Bounds().Empty() {
		return nil, fmt.Errorf("encode jpeg: empty image")
	}
	if quality <= 0 {
		quality = DefaultJPEGQuality
	}
	quality = min(quality, 100)
	var src image.Image
	switch img.(type) {
	case *image.YCbCr, *image.Gray, *image.RGBA:
		src = img
	default:
		src = ToRGB(img).ToRGBA()
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, src, &jpeg.Options{Quality: quality}); err != nil {
		return nil, fmt.Errorf("encode jpeg: %w", err)
	}
	return buf.Bytes(), nil
}

// EncodePNG encodes img losslessly as PNG (an *RGB as 8-bit truecolour).
func EncodePNG(img image.Image) ([]byte, error) {
	if img == nil || img.Bounds().Empty() {
		return nil, fmt.Errorf("encode png: empty image")
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.DefaultCompression}
	if err := enc.Encode(&buf, encodable(img)); err != nil {
		return nil, fmt.Errorf("encode png: %w", err)
	}
	return buf.Bytes(), nil
}
