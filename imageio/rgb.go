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
//   - YCbCr (JPEG) is converted as libjpeg does for PIL: fancy chroma
//     upsampling and libjpeg's fixed-point JFIF conversion.
//
// A nil image gives an empty RGB.
func ToRGB(img image.Image) *RGB {
	if img == nil {
		return &RGB{}
	}
	b := img.Bounds()
	out := NewRGB(image.Rect(0, 0, b.Dx(), b.Dy()))
	if b.Dx() <= 0 || b.Dy() <= 0 {
		return out
	}
	switch m := img.(type) {
	case *RGB:
		out.eachRow(func(y int, dst []uint8) {
			copy(dst, m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):])
		})
	case *image.NRGBA:
		fromNRGBA(out, m, b)
	case *image.RGBA:
		fromRGBA(out, m, b)
	case *image.Gray:
		fromGray(out, m, b)
	case *image.Gray16:
		fromGray16(out, m, b)
	case *image.NRGBA64:
		fromNRGBA64(out, m, b)
	case *image.RGBA64:
		fromRGBA64(out, m, b)
	case *image.Paletted:
		fromPaletted(out, m, b)
	case *image.CMYK:
		fromCMYK(out, m, b)
	case *image.YCbCr:
		ycbcrToRGB(m, out)
	case *image.NYCbCrA:
		ycbcrToRGB(&m.YCbCr, out)
	default:
		out.eachRow(func(y int, dst []uint8) {
			for x := range len(dst) / 3 {
				p := colorRGB(img.At(b.Min.X+x, b.Min.Y+y))
				dst[3*x], dst[3*x+1], dst[3*x+2] = p[0], p[1], p[2]
			}
		})
	}
	return out
}

// eachRow calls fn with each row of out: its index y and its 3*width bytes.
func (m *RGB) eachRow(fn func(y int, dst []uint8)) {
	w := m.Rect.Dx()
	for y := range m.Rect.Dy() {
		fn(y, m.Pix[y*m.Stride:y*m.Stride+3*w])
	}
}

// fromNRGBA keeps the stored non-premultiplied R, G, B.
func fromNRGBA(out *RGB, m *image.NRGBA, b image.Rectangle) {
	out.eachRow(func(y int, dst []uint8) {
		src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
		for x := range len(dst) / 3 {
			dst[3*x], dst[3*x+1], dst[3*x+2] = src[4*x], src[4*x+1], src[4*x+2]
		}
	})
}

// fromRGBA un-premultiplies the premultiplied storage to recover what a
// non-premultiplied decoder would have stored (exact when opaque).
func fromRGBA(out *RGB, m *image.RGBA, b image.Rectangle) {
	out.eachRow(func(y int, dst []uint8) {
		src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
		for x := range len(dst) / 3 {
			r, g, bl, a := src[4*x], src[4*x+1], src[4*x+2], src[4*x+3]
			if a == 0xff || a == 0 {
				dst[3*x], dst[3*x+1], dst[3*x+2] = r, g, bl
				continue
			}
			dst[3*x], dst[3*x+1], dst[3*x+2] = unpremul8(r, a), unpremul8(g, a), unpremul8(bl, a)
		}
	})
}

// fromGray repeats the gray level in R, G and B.
func fromGray(out *RGB, m *image.Gray, b image.Rectangle) {
	out.eachRow(func(y int, dst []uint8) {
		src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
		for x := range len(dst) / 3 {
			v := src[x]
			dst[3*x], dst[3*x+1], dst[3*x+2] = v, v, v
		}
	})
}

// fromGray16 clips each 16-bit level to 0..255 (PIL's "I" -> "RGB").
func fromGray16(out *RGB, m *image.Gray16, b image.Rectangle) {
	out.eachRow(func(y int, dst []uint8) {
		src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
		for x := range len(dst) / 3 {
			v := uint16(src[2*x])<<8 | uint16(src[2*x+1])
			c := uint8(min(v, 255))
			dst[3*x], dst[3*x+1], dst[3*x+2] = c, c, c
		}
	})
}

// fromNRGBA64 keeps the high byte of each stored sample.
func fromNRGBA64(out *RGB, m *image.NRGBA64, b image.Rectangle) {
	out.eachRow(func(y int, dst []uint8) {
		src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
		for x := range len(dst) / 3 {
			dst[3*x], dst[3*x+1], dst[3*x+2] = src[8*x], src[8*x+2], src[8*x+4]
		}
	})
}

// fromRGBA64 un-premultiplies at 16 bits, then keeps the high byte.
func fromRGBA64(out *RGB, m *image.RGBA64, b image.Rectangle) {
	out.eachRow(func(y int, dst []uint8) {
		src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
		for x := range len(dst) / 3 {
			a := uint32(src[8*x+6])<<8 | uint32(src[8*x+7])
			for c := 0; c < 3; c++ {
				v := uint32(src[8*x+2*c])<<8 | uint32(src[8*x+2*c+1])
				if a != 0xffff && a != 0 {
					v = min(v*0xffff/a, 0xffff)
				}
				dst[3*x+c] = uint8(v >> 8)
			}
		}
	})
}

// fromPaletted expands each index through the palette's stored R, G, B
// (indices past the palette are black).
func fromPaletted(out *RGB, m *image.Paletted, b image.Rectangle) {
	var lut [256][3]uint8
	for i, c := range m.Palette {
		if i >= 256 {
			break
		}
		lut[i] = paletteRGB(c)
	}
	out.eachRow(func(y int, dst []uint8) {
		src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
		for x := range len(dst) / 3 {
			p := lut[src[x]]
			dst[3*x], dst[3*x+1], dst[3*x+2] = p[0], p[1], p[2]
		}
	})
}

// fromCMYK applies PIL's integer cmyk2rgb formula.
func fromCMYK(out *RGB, m *image.CMYK, b image.Rectangle) {
	out.eachRow(func(y int, dst []uint8) {
		src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
		for x := range len(dst) / 3 {
			nk := 255 - int(src[4*x+3])
			for c := 0; c < 3; c++ {
				dst[3*x+c] = clip8(nk - mulDiv255(int(src[4*x+c]), nk))
			}
		}
	})
}

// ycbcrToRGB converts a (JPEG) YCbCr image the way libjpeg(-turbo) does
// when PIL decodes: chroma is "fancy" upsampled (triangle filter: 3/4 of
// the nearer and 1/4 of the farther sample per direction, with libjpeg's
// rounding, edges replicated) for 4:2:0, 4:2:2 and 4:4:0, then converted
// with libjpeg's 16-bit fixed-point JFIF tables. Other subsampling ratios
// use the nearest chroma sample.
func ycbcrToRGB(m *image.YCbCr, out *RGB) {
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return
	}
	fancy := b.Min == (image.Point{}) &&
		(m.SubsampleRatio == image.YCbCrSubsampleRatio420 || m.SubsampleRatio == image.YCbCrSubsampleRatio422 ||
			m.SubsampleRatio == image.YCbCrSubsampleRatio440 || m.SubsampleRatio == image.YCbCrSubsampleRatio444)
	parallelRows(h, 4*w, func(y0, y1 int) {
		cb := make([]uint8, w)
		cr := make([]uint8, w)
		sums := make([]int32, w)
		for y := y0; y < y1; y++ {
			if fancy {
				upsampleChromaRow(m, m.Cb, y, cb, sums)
				upsampleChromaRow(m, m.Cr, y, cr, sums)
			} else {
				for x := 0; x < w; x++ {
					ci := m.COffset(b.Min.X+x, b.Min.Y+y)
					cb[x], cr[x] = m.Cb[ci], m.Cr[ci]
				}
			}
			yrow := m.Y[m.YOffset(b.Min.X, b.Min.Y+y):]
			dst := out.Pix[y*out.Stride:]
			for x := 0; x < w; x++ {
				yy := int32(yrow[x])
				xb, xr := int32(cb[x])-128, int32(cr[x])-128
				dst[3*x] = clip8(int(yy + (91881*xr+32768)>>16))
				dst[3*x+1] = clip8(int(yy + (-22554*xb+32768-46802*xr)>>16))
				dst[3*x+2] = clip8(int(yy + (116130*xb+32768)>>16))
			}
		}
	})
}

// upsampleChromaRow writes the full-resolution chroma of image row y into
// dst (len = image width), following libjpeg's fancy upsamplers
// (h2v2_fancy_upsample, h2v1_fancy_upsample, h1v2_fancy_upsample).
// sums is scratch space of at least the chroma width.
func upsampleChromaRow(m *image.YCbCr, plane []uint8, y int, dst []uint8, sums []int32) {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	hs, vs := 1, 1
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio420:
		hs, vs = 2, 2
	case image.YCbCrSubsampleRatio422:
		hs = 2
	case image.YCbCrSubsampleRatio440:
		vs = 2
	}
	cw, ch := (w+hs-1)/hs, (h+vs-1)/vs
	row := func(cy int) []uint8 {
		cy = min(max(cy, 0), ch-1)
		return plane[cy*m.CStride : cy*m.CStride+cw]
	}
	// Vertical step: column sums 3*nearer + farther (or 4*row when not
	// subsampled vertically), kept at 4x scale.
	sums = sums[:cw]
	if vs == 2 {
		near := row(y / 2)
		var far []uint8
		if y%2 == 0 {
			far = row(y/2 - 1)
		} else {
			far = row(y/2 + 1)
		}
		for i := range sums {
			sums[i] = 3*int32(near[i]) + int32(far[i])
		}
	} else {
		r := row(y)
		for i := range sums {
			sums[i] = 4 * int32(r[i])
		}
	}
	switch {
	case hs == 1 && vs == 1:
		copy(dst, row(y))
	case hs == 1: // h1v2: (sum + bias) >> 2, bias 1 for the upper row, 2 for the lower
		bias := int32(1)
		if y%2 == 1 {
			bias = 2
		}
		for i := 0; i < w; i++ {
			dst[i] = uint8((sums[i] + bias) >> 2)
		}
	case vs == 1: // h2v1 on the raw samples
		in := row(y)
		put := func(i int, v int32) {
			if i < w {
				dst[i] = uint8(v)
			}
		}
		if cw == 1 {
			put(0, int32(in[0]))
			put(1, int32(in[0]))
			return
		}
		put(0, int32(in[0]))
		put(1, (3*int32(in[0])+int32(in[1])+2)>>2)
		for i := 1; i < cw-1; i++ {
			v := 3 * int32(in[i])
			put(2*i, (v+int32(in[i-1])+1)>>2)
			put(2*i+1, (v+int32(in[i+1])+2)>>2)
		}
		last := cw - 1
		put(2*last, (3*int32(in[last])+int32(in[last-1])+1)>>2)
		put(2*last+1, int32(in[last]))
	default: // h2v2 on the column sums
		put := func(i int, v int32) {
			if i < w {
				dst[i] = uint8(v)
			}
		}
		if cw == 1 {
			put(0, (sums[0]*4+8)>>4)
			put(1, (sums[0]*4+7)>>4)
			return
		}
		put(0, (sums[0]*4+8)>>4)
		put(1, (sums[0]*3+sums[1]+7)>>4)
		for i := 1; i < cw-1; i++ {
			put(2*i, (sums[i]*3+sums[i-1]+8)>>4)
			put(2*i+1, (sums[i]*3+sums[i+1]+7)>>4)
		}
		last := cw - 1
		put(2*last, (sums[last]*3+sums[last-1]+8)>>4)
		put(2*last+1, (sums[last]*4+7)>>4)
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
