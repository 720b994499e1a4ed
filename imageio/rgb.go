// Package imageio decodes, converts, resizes and encodes images the way the
// CLIP references do: PIL-compatible RGB conversion and PIL-exact resampling
// on 8-bit RGB buffers, with limits checked before any pixel is decoded.
package imageio

import (
	"image"
	"image/color"
)

// RGB is an 8-bit RGB image, 3 bytes per pixel, rows Stride bytes apart.
// Pix holds the pixel at (x, y) at Pix[(y-Rect.Min.Y)*Stride+(x-Rect.Min.X)*3:].
type RGB struct {
	Pix    []uint8
	Stride int
	Rect   image.Rectangle
}

// NewRGB returns a black RGB image of the given bounds.
func NewRGB(r image.Rectangle) *RGB {
	w, h := r.Dx(), r.Dy()
	if w < 0 || h < 0 {
		w, h = 0, 0
	}
	return &RGB{Pix: make([]uint8, 3*w*h), Stride: 3 * w, Rect: r}
}

// ColorModel is color.RGBAModel (every pixel is opaque).
func (m *RGB) ColorModel() color.Model { return color.RGBAModel }

// Bounds returns the image's rectangle.
func (m *RGB) Bounds() image.Rectangle { return m.Rect }

// Opaque is always true.
func (m *RGB) Opaque() bool { return true }

// PixOffset is the index of the first byte of (x, y) in Pix.
func (m *RGB) PixOffset(x, y int) int {
	return (y-m.Rect.Min.Y)*m.Stride + (x-m.Rect.Min.X)*3
}

// At returns the pixel at (x, y) as an opaque color.RGBA.
func (m *RGB) At(x, y int) color.Color {
	if !(image.Point{x, y}.In(m.Rect)) {
		return color.RGBA{}
	}
	i := m.PixOffset(x, y)
	return color.RGBA{m.Pix[i], m.Pix[i+1], m.Pix[i+2], 0xff}
}

// RGBAAt returns the pixel at (x, y).
func (m *RGB) RGBAAt(x, y int) color.RGBA {
	if !(image.Point{x, y}.In(m.Rect)) {
		return color.RGBA{}
	}
	i := m.PixOffset(x, y)
	return color.RGBA{m.Pix[i], m.Pix[i+1], m.Pix[i+2], 0xff}
}

// RGBA64At implements image.RGBA64Image, which lets image/draw read the
// image without allocating per pixel.
func (m *RGB) RGBA64At(x, y int) color.RGBA64 {
	c := m.RGBAAt(x, y)
	return color.RGBA64{uint16(c.R) * 0x101, uint16(c.G) * 0x101, uint16(c.B) * 0x101, uint16(c.A) * 0x101}
}

// Set stores c's non-premultiplied R, G, B at (x, y).
func (m *RGB) Set(x, y int, c color.Color) {
	if !(image.Point{x, y}.In(m.Rect)) {
		return
	}
	n := color.NRGBAModel.Convert(c).(color.NRGBA)
	i := m.PixOffset(x, y)
	m.Pix[i], m.Pix[i+1], m.Pix[i+2] = n.R, n.G, n.B
}

// SubImage returns the part of m inside r, sharing pixels.
func (m *RGB) SubImage(r image.Rectangle) image.Image {
	r = r.Intersect(m.Rect)
	if r.Empty() {
		return &RGB{}
	}
	i := m.PixOffset(r.Min.X, r.Min.Y)
	return &RGB{Pix: m.Pix[i:], Stride: m.Stride, Rect: r}
}

// compact returns m with origin (0,0) and Stride == 3*width, copying only
// when needed.
func (m *RGB) compact() *RGB {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	if m.Rect.Min == (image.Point{}) && m.Stride == 3*w && len(m.Pix) >= 3*w*h {
		return m
	}
	out := NewRGB(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		copy(out.Pix[y*3*w:(y+1)*3*w], m.Pix[y*m.Stride:y*m.Stride+3*w])
	}
	return out
}

// ToRGBA copies m into an opaque *image.RGBA (for encoders and drawing).
func (m *RGB) ToRGBA() *image.RGBA {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		src := m.Pix[y*m.Stride : y*m.Stride+3*w]
		dst := out.Pix[y*out.Stride : y*out.Stride+4*w]
		for x := 0; x < w; x++ {
			dst[4*x], dst[4*x+1], dst[4*x+2], dst[4*x+3] = src[3*x], src[3*x+1], src[3*x+2], 0xff
		}
	}
	return out
}

// ToRGB converts any image to an RGB image with origin (0,0) the way PIL's
// Image.convert("RGB") does:
//   - alpha is dropped, not composited: the stored non-premultiplied R, G, B
//     are kept (for *image.NRGBA and NRGBA palettes they are read directly);
//   - grayscale and palette images are expanded;
//   - 16-bit RGB(A) keeps the high byte of each sample (PIL's "RGB;16B");
//   - 16-bit grayscale is clipped to 0..255, as PIL's mode "I" -> "RGB"
//     conversion does (PIL opens such PNGs as 32-bit integer images);
//   - CMYK uses PIL's integer cmyk2rgb formula;
//   - YCbCr uses Go's JPEG colour conversion.
//
// A nil image gives an empty RGB.
func ToRGB(img image.Image) *RGB {
	if img == nil {
		return &RGB{}
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := NewRGB(image.Rect(0, 0, w, h))
	if w <= 0 || h <= 0 {
		return out
	}
	row := func(y int) []uint8 { return out.Pix[y*out.Stride : y*out.Stride+3*w] }
	switch m := img.(type) {
	case *RGB:
		for y := 0; y < h; y++ {
			i := m.PixOffset(b.Min.X, b.Min.Y+y)
			copy(row(y), m.Pix[i:i+3*w])
		}
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := row(y)
			for x := 0; x < w; x++ {
				dst[3*x], dst[3*x+1], dst[3*x+2] = src[4*x], src[4*x+1], src[4*x+2]
			}
		}
	case *image.RGBA:
		// Premultiplied storage: un-premultiply to recover what a
		// non-premultiplied decoder would have stored (exact when opaque).
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := row(y)
			for x := 0; x < w; x++ {
				r, g, bl, a := src[4*x], src[4*x+1], src[4*x+2], src[4*x+3]
				if a == 0xff || a == 0 {
					dst[3*x], dst[3*x+1], dst[3*x+2] = r, g, bl
					continue
				}
				dst[3*x], dst[3*x+1], dst[3*x+2] = unpremul8(r, a), unpremul8(g, a), unpremul8(bl, a)
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := row(y)
			for x := 0; x < w; x++ {
				v := src[x]
				dst[3*x], dst[3*x+1], dst[3*x+2] = v, v, v
			}
		}
	case *image.Gray16:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := row(y)
			for x := 0; x < w; x++ {
				v := uint16(src[2*x])<<8 | uint16(src[2*x+1])
				c := uint8(min(v, 255))
				dst[3*x], dst[3*x+1], dst[3*x+2] = c, c, c
			}
		}
	case *image.NRGBA64:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := row(y)
			for x := 0; x < w; x++ {
				dst[3*x], dst[3*x+1], dst[3*x+2] = src[8*x], src[8*x+2], src[8*x+4]
			}
		}
	case *image.RGBA64:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := row(y)
			for x := 0; x < w; x++ {
				a := uint32(src[8*x+6])<<8 | uint32(src[8*x+7])
				for c := 0; c < 3; c++ {
					v := uint32(src[8*x+2*c])<<8 | uint32(src[8*x+2*c+1])
					if a != 0xffff && a != 0 {
						v = min(v*0xffff/a, 0xffff)
					}
					dst[3*x+c] = uint8(v >> 8)
				}
			}
		}
	case *image.Paletted:
		var lut [256][3]uint8
		for i, c := range m.Palette {
			if i >= 256 {
				break
			}
			lut[i] = paletteRGB(c)
		}
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := row(y)
			for x := 0; x < w; x++ {
				p := lut[src[x]]
				dst[3*x], dst[3*x+1], dst[3*x+2] = p[0], p[1], p[2]
			}
		}
	case *image.CMYK:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := row(y)
			for x := 0; x < w; x++ {
				nk := 255 - int(src[4*x+3])
				for c := 0; c < 3; c++ {
					dst[3*x+c] = clip8(nk - mulDiv255(int(src[4*x+c]), nk))
				}
			}
		}
	case *image.YCbCr:
		ycbcrToRGB(m, out)
	case *image.NYCbCrA:
		ycbcrToRGB(&m.YCbCr, out)
	default:
		for y := 0; y < h; y++ {
			dst := row(y)
			for x := 0; x < w; x++ {
				p := colorRGB(img.At(b.Min.X+x, b.Min.Y+y))
				dst[3*x], dst[3*x+1], dst[3*x+2] = p[0], p[1], p[2]
			}
		}
	}
	return out
}

func ycbcrToRGB(m *image.YCbCr, out *RGB) {
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	for y := 0; y < h; y++ {
		dst := out.Pix[y*out.Stride:]
		for x := 0; x < w; x++ {
			yi := m.YOffset(b.Min.X+x, b.Min.Y+y)
			ci := m.COffset(b.Min.X+x, b.Min.Y+y)
			r, g, bl := color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
			dst[3*x], dst[3*x+1], dst[3*x+2] = r, g, bl
		}
	}
}

// paletteRGB is a palette entry's stored R, G, B (alpha dropped).
func paletteRGB(c color.Color) [3]uint8 {
	if c == nil {
		return [3]uint8{}
	}
	return colorRGB(c)
}

// colorRGB returns a colour's non-premultiplied 8-bit R, G, B.
func colorRGB(c color.Color) [3]uint8 {
	switch v := c.(type) {
	case color.NRGBA:
		return [3]uint8{v.R, v.G, v.B}
	case color.RGBA:
		if v.A == 0xff || v.A == 0 {
			return [3]uint8{v.R, v.G, v.B}
		}
		return [3]uint8{unpremul8(v.R, v.A), unpremul8(v.G, v.A), unpremul8(v.B, v.A)}
	case color.Gray:
		return [3]uint8{v.Y, v.Y, v.Y}
	case color.NRGBA64:
		return [3]uint8{uint8(v.R >> 8), uint8(v.G >> 8), uint8(v.B >> 8)}
	}
	n := color.NRGBAModel.Convert(c).(color.NRGBA)
	return [3]uint8{n.R, n.G, n.B}
}

func unpremul8(c, a uint8) uint8 {
	return uint8(min(uint32(c)*255/uint32(a), 255))
}

func mulDiv255(a, b int) int {
	t := a*b + 128
	return ((t >> 8) + t) >> 8
}

func clip8(v int) uint8 {
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v)
}
