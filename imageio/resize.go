package imageio

import (
	"fmt"
	"image"
	"math"

	"github.com/imagescope/imagescope/internal/parallel"
)

// Filter is a resampling filter, numbered as PIL's Image.Resampling (and as
// the `resample` field of HF preprocessor configs).
type Filter int

// PIL's resampling filters.
const (
	Nearest  Filter = 0
	Lanczos  Filter = 1
	Bilinear Filter = 2
	Bicubic  Filter = 3
	Box      Filter = 4
	Hamming  Filter = 5
)

// String names the filter.
func (f Filter) String() string {
	switch f {
	case Nearest:
		return "nearest"
	case Lanczos:
		return "lanczos"
	case Bilinear:
		return "bilinear"
	case Bicubic:
		return "bicubic"
	case Box:
		return "box"
	case Hamming:
		return "hamming"
	}
	return fmt.Sprintf("Filter(%d)", int(f))
}

// Valid reports whether f is one of PIL's filters.
func (f Filter) Valid() bool { return f >= Nearest && f <= Hamming }

// The filter kernels, written exactly as Pillow's Resample.c. Products are
// wrapped in float64() so the compiler cannot fuse them into FMAs, which
// would change the rounding.
func bicubicKernel(x float64) float64 {
	const a = -0.5
	if x < 0 {
		x = -x
	}
	if x < 1 {
		return float64(float64(float64((a+2)*x)-(a+3))*x*x) + 1
	}
	if x < 2 {
		return float64(float64(float64(float64(x-5)*x)+8)*x-4) * a
	}
	return 0
}

func bilinearKernel(x float64) float64 {
	if x < 0 {
		x = -x
	}
	if x < 1 {
		return 1 - x
	}
	return 0
}

func boxKernel(x float64) float64 {
	if x > -0.5 && x <= 0.5 {
		return 1
	}
	return 0
}

func hammingKernel(x float64) float64 {
	if x < 0 {
		x = -x
	}
	if x == 0 {
		return 1
	}
	if x >= 1 {
		return 0
	}
	x *= math.Pi
	return math.Sin(x) / x * float64(0.54+float64(0.46*math.Cos(x)))
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	x *= math.Pi
	return math.Sin(x) / x
}

func lanczosKernel(x float64) float64 {
	if x >= -3 && x < 3 {
		return sinc(x) * sinc(x/3)
	}
	return 0
}

func filterKernel(f Filter) (func(float64) float64, float64) {
	switch f {
	case Box:
		return boxKernel, 0.5
	case Bilinear:
		return bilinearKernel, 1
	case Hamming:
		return hammingKernel, 1
	case Lanczos:
		return lanczosKernel, 3
	default:
		return bicubicKernel, 2
	}
}

// precisionBits is Pillow's fixed-point precision for 8-bit images.
const precisionBits = 32 - 8 - 2

// coeffs are one pass's fixed-point weights: output i reads inputs
// [start[i], start[i]+count[i]) with weights k[i*ksize:].
type coeffs struct {
	ksize        int
	start, count []int
	k            []int32
}

// precomputeCoeffs follows Pillow's precompute_coeffs +
// normalize_coeffs_8bpc: support widened by the downscale factor, weights
// normalised in float64, then rounded to 22 fractional bits.
func precomputeCoeffs(in, out int, f Filter) coeffs {
	kernel, fsupport := filterKernel(f)
	scale := float64(in) / float64(out)
	filterscale := max(scale, 1)
	support := fsupport * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	c := coeffs{ksize: ksize, start: make([]int, out), count: make([]int, out), k: make([]int32, out*ksize)}
	w := make([]float64, ksize)
	ss := 1 / filterscale
	for xx := 0; xx < out; xx++ {
		center := float64(float64(xx)+0.5) * scale
		xmin := int(center - support + 0.5)
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > in {
			xmax = in
		}
		xmax -= xmin
		ww := 0.0
		for x := 0; x < xmax; x++ {
			v := kernel(float64(float64(x+xmin)-center+0.5) * ss)
			w[x] = v
			ww += v
		}
		for x := 0; x < xmax; x++ {
			if ww != 0 {
				w[x] /= ww
			}
		}
		k := c.k[xx*ksize : (xx+1)*ksize]
		for x := 0; x < xmax; x++ {
			if w[x] < 0 {
				k[x] = int32(-0.5 + w[x]*(1<<precisionBits))
			} else {
				k[x] = int32(0.5 + w[x]*(1<<precisionBits))
			}
		}
		c.start[xx] = xmin
		c.count[xx] = xmax
	}
	return c
}

func clipFixed(v int32) uint8 {
	if v <= 0 {
		return 0
	}
	if v >= 1<<precisionBits<<8 {
		return 255
	}
	return uint8(v >> precisionBits)
}

// ResizeRGB resizes src to w x h with PIL's algorithm for 8-bit images
// (Image.resize): a horizontal pass then a vertical pass, each skipped when
// its size is unchanged, with a uint8 intermediate, 22-bit fixed-point
// weights and the filter support scaled by the downscale factor
// (antialiasing). Nearest uses PIL's pixel-centre rule. The result is
// bit-identical to Pillow 9.4 for every filter but Lanczos and Hamming,
// whose float kernels may differ from C's sin/cos in the last bit.
// Large images are processed on up to GOMAXPROCS goroutines.
func ResizeRGB(src *RGB, w, h int, f Filter) *RGB {
	return ResizeRGBWindow(src, w, h, f, image.Rect(0, 0, w, h))
}

// ResizeRGBWindow returns the part win of ResizeRGB(src, w, h, f) (win is
// clipped to the w x h result) computing only those output pixels and the
// source rows they need: each output pixel of PIL's separable resize depends
// only on its own row and column weights, so the window is bit-identical to
// cropping the full result. CLIP preprocessing uses it to skip the columns
// or rows the center crop throws away.
func ResizeRGBWindow(src *RGB, w, h int, f Filter, win image.Rectangle) *RGB {
	win = win.Intersect(image.Rect(0, 0, max(w, 0), max(h, 0)))
	src = src.compact()
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	ww, wh := win.Dx(), win.Dy()
	if win.Empty() || sw <= 0 || sh <= 0 {
		return NewRGB(image.Rect(0, 0, ww, wh))
	}
	if w == sw && h == sh {
		return CropRGB(src, win.Min.X, win.Min.Y, ww, wh)
	}
	if f == Nearest {
		full := resizeNearest(src, w, h)
		if win == full.Rect {
			return full
		}
		return CropRGB(full, win.Min.X, win.Min.Y, ww, wh)
	}
	needH, needV := w != sw, h != sh
	var cv coeffs
	first, last := win.Min.Y, win.Max.Y
	if needV {
		cv = precomputeCoeffs(sh, h, f).window(win.Min.Y, win.Max.Y)
		first = cv.start[0]
		last = cv.start[wh-1] + cv.count[wh-1]
	}
	tmp := NewRGB(image.Rect(0, 0, ww, last-first))
	if needH {
		ch := precomputeCoeffs(sw, w, f).window(win.Min.X, win.Max.X)
		parallelRows(last-first, ww*ch.ksize*3, func(y0, y1 int) {
			resampleHorizontal(tmp, src, first, y0, y1, &ch)
		})
	} else {
		for y := first; y < last; y++ {
			copy(tmp.Pix[(y-first)*tmp.Stride:(y-first+1)*tmp.Stride], src.Pix[y*src.Stride+3*win.Min.X:])
		}
	}
	if !needV {
		return tmp
	}
	for i := range cv.start {
		cv.start[i] -= first
	}
	out := NewRGB(image.Rect(0, 0, ww, wh))
	parallelRows(wh, ww*cv.ksize*3, func(y0, y1 int) {
		resampleVertical(out, tmp, y0, y1, &cv)
	})
	return out
}

// window returns the coefficients of outputs [lo, hi), with their own copy
// of the start offsets.
func (c coeffs) window(lo, hi int) coeffs {
	return coeffs{
		ksize: c.ksize,
		start: append([]int(nil), c.start[lo:hi]...),
		count: c.count[lo:hi],
		k:     c.k[lo*c.ksize : hi*c.ksize],
	}
}

// resampleHorizontal fills tmp rows [y0,y1) from src rows offset by first.
func resampleHorizontal(tmp, src *RGB, first, y0, y1 int, c *coeffs) {
	w := tmp.Rect.Dx()
	for y := y0; y < y1; y++ {
		in := src.Pix[(y+first)*src.Stride : (y+first+1)*src.Stride]
		dst := tmp.Pix[y*tmp.Stride : (y+1)*tmp.Stride]
		for xx := 0; xx < w; xx++ {
			k := c.k[xx*c.ksize : xx*c.ksize+c.count[xx]]
			s := in[3*c.start[xx] : 3*(c.start[xx]+len(k))]
			r, g, b := int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1))
			for len(k) > 0 && len(s) >= 3 {
				kv := k[0]
				r += int32(s[0]) * kv
				g += int32(s[1]) * kv
				b += int32(s[2]) * kv
				k, s = k[1:], s[3:]
			}
			dst[3*xx], dst[3*xx+1], dst[3*xx+2] = clipFixed(r), clipFixed(g), clipFixed(b)
		}
	}
}

// resampleVertical fills out rows [y0,y1) from src.
func resampleVertical(out, src *RGB, y0, y1 int, c *coeffs) {
	n := out.Stride
	acc := make([]int32, n)
	for yy := y0; yy < y1; yy++ {
		for i := range acc {
			acc[i] = 1 << (precisionBits - 1)
		}
		k := c.k[yy*c.ksize : yy*c.ksize+c.count[yy]]
		for j, kv := range k {
			row := src.Pix[(c.start[yy]+j)*src.Stride:][:n]
			a := acc[:len(row)]
			for i, p := range row {
				a[i] += int32(p) * kv
			}
		}
		dst := out.Pix[yy*n : (yy+1)*n]
		for i, v := range acc {
			dst[i] = clipFixed(v)
		}
	}
}

// resizeNearest picks src = floor((i+0.5)*in/out) per axis, as PIL's
// nearest resize does.
func resizeNearest(src *RGB, w, h int) *RGB {
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	out := NewRGB(image.Rect(0, 0, w, h))
	xs := make([]int, w)
	for x := range xs {
		xs[x] = min(int(math.Floor((float64(x)+0.5)*float64(sw)/float64(w))), sw-1)
	}
	for y := 0; y < h; y++ {
		sy := min(int(math.Floor((float64(y)+0.5)*float64(sh)/float64(h))), sh-1)
		in := src.Pix[sy*src.Stride:]
		dst := out.Pix[y*out.Stride:]
		for x, sx := range xs {
			copy(dst[3*x:3*x+3], in[3*sx:3*sx+3])
		}
	}
	return out
}

// parallelRows splits [0,n) into contiguous chunks run on up to GOMAXPROCS
// goroutines when the work (n * perRow multiply-adds) is large enough.
func parallelRows(n, perRow int, fn func(y0, y1 int)) {
	parallel.Chunks(parallel.Workload(0, n, perRow, 1<<20), n, fn)
}

// Resize converts img to RGB (PIL convert("RGB") semantics) and resizes it
// to w x h with filter f (see ResizeRGB).
func Resize(img image.Image, w, h int, f Filter) *RGB {
	return ResizeRGB(asRGB(img), w, h, f)
}

// ResizeBicubic is Resize with PIL's bicubic filter, the CLIP default.
func ResizeBicubic(img image.Image, w, h int) *RGB {
	return Resize(img, w, h, Bicubic)
}

// FitSize returns the size that fits w x h within maxSide x maxSide keeping
// the aspect ratio (rounded, at least 1 pixel); sizes already within the
// bound are returned unchanged (no upscaling). maxSide <= 0 means no bound.
func FitSize(w, h, maxSide int) (int, int) {
	if maxSide <= 0 || (w <= maxSide && h <= maxSide) {
		return w, h
	}
	if w >= h {
		return maxSide, max(1, int(math.Round(float64(h)*float64(maxSide)/float64(w))))
	}
	return max(1, int(math.Round(float64(w)*float64(maxSide)/float64(h)))), maxSide
}

// ResizeToFit converts img to RGB and, when its longer side exceeds
// maxSide, shrinks it with PIL's bicubic filter so it fits (for thumbnails
// and for images sent to model servers).
func ResizeToFit(img image.Image, maxSide int) *RGB {
	src := asRGB(img)
	w, h := FitSize(src.Rect.Dx(), src.Rect.Dy(), maxSide)
	if w == src.Rect.Dx() && h == src.Rect.Dy() {
		return src.compact()
	}
	return ResizeRGB(src, w, h, Bicubic)
}

func asRGB(img image.Image) *RGB {
	if m, ok := img.(*RGB); ok {
		return m
	}
	return ToRGB(img)
}

// CenterCrop cuts a w x h window from the middle of img the way HF's
// CLIPImageProcessor does: left = floor((W-w)/2), top = floor((H-h)/2);
// where the window reaches outside a too-small image the pixels are black
// (HF's zero padding).
func CenterCrop(img image.Image, w, h int) *RGB {
	src := asRGB(img)
	return CropRGB(src, floorDiv(src.Rect.Dx()-w, 2), floorDiv(src.Rect.Dy()-h, 2), w, h)
}

// CropRGB converts img to RGB and cuts the w x h window whose top-left
// corner is (left, top), counted from the image's top-left pixel; pixels of
// the window outside the image are black.
func CropRGB(img image.Image, left, top, w, h int) *RGB {
	src := asRGB(img).compact()
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	out := NewRGB(image.Rect(0, 0, max(w, 0), max(h, 0)))
	if w <= 0 || h <= 0 {
		return out
	}
	// HF pads a too-small image with zeros at ceil(missing/2) and shifts
	// the window by the same amount, which is the same as reading the
	// window [left, left+w) x [top, top+h) with black outside the image.
	x0, x1 := max(left, 0), min(left+w, sw)
	if x0 >= x1 {
		return out
	}
	for y := 0; y < h; y++ {
		sy := top + y
		if sy < 0 || sy >= sh {
			continue
		}
		copy(out.Pix[y*out.Stride+3*(x0-left):], src.Pix[sy*src.Stride+3*x0:sy*src.Stride+3*x1])
	}
	return out
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// ResizePIL resizes img in the mode PIL would hold it in, as Image.resize
// does when no RGB conversion came first (open_clip's order):
//   - *image.NRGBA (PIL "RGBA"/"LA"): premultiplied with PIL's integer
//     rule, all four channels resampled, then un-premultiplied;
//     the result is an *image.NRGBA;
//   - *image.Paletted (PIL "P"): nearest on the palette indices whatever
//     the filter, the result keeps the palette;
//   - anything else: converted to RGB and resized with ResizeRGB.
func ResizePIL(img image.Image, w, h int, f Filter) image.Image {
	switch m := img.(type) {
	case *image.NRGBA:
		return resizeNRGBA(m, w, h, f)
	case *image.Paletted:
		return resizePaletted(m, w, h)
	}
	return ResizeRGB(asRGB(img), w, h, f)
}

func resizePaletted(m *image.Paletted, w, h int) *image.Paletted {
	b := m.Bounds()
	sw, sh := b.Dx(), b.Dy()
	out := image.NewPaletted(image.Rect(0, 0, max(w, 0), max(h, 0)), m.Palette)
	if w <= 0 || h <= 0 || sw <= 0 || sh <= 0 {
		return out
	}
	xs := make([]int, w)
	for x := range xs {
		xs[x] = b.Min.X + min(int(math.Floor((float64(x)+0.5)*float64(sw)/float64(w))), sw-1)
	}
	for y := 0; y < h; y++ {
		sy := b.Min.Y + min(int(math.Floor((float64(y)+0.5)*float64(sh)/float64(h))), sh-1)
		row := out.Pix[y*out.Stride:]
		for x, sx := range xs {
			row[x] = m.Pix[m.PixOffset(sx, sy)]
		}
	}
	return out
}

func resizeNRGBA(m *image.NRGBA, w, h int, f Filter) *image.NRGBA {
	b := m.Bounds()
	sw, sh := b.Dx(), b.Dy()
	out := image.NewNRGBA(image.Rect(0, 0, max(w, 0), max(h, 0)))
	if w <= 0 || h <= 0 || sw <= 0 || sh <= 0 {
		return out
	}
	// Premultiply (PIL RGBA -> RGBa) into a compact buffer.
	pre := make([]uint8, 4*sw*sh)
	for y := 0; y < sh; y++ {
		src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
		dst := pre[4*sw*y:]
		for x := 0; x < sw; x++ {
			a := int(src[4*x+3])
			for c := 0; c < 3; c++ {
				dst[4*x+c] = uint8(mulDiv255(int(src[4*x+c]), a))
			}
			dst[4*x+3] = uint8(a)
		}
	}
	var res []uint8
	switch {
	case w == sw && h == sh:
		res = pre
	case f == Nearest:
		res = make([]uint8, 4*w*h)
		for y := 0; y < h; y++ {
			sy := min(int(math.Floor((float64(y)+0.5)*float64(sh)/float64(h))), sh-1)
			for x := 0; x < w; x++ {
				sx := min(int(math.Floor((float64(x)+0.5)*float64(sw)/float64(w))), sw-1)
				copy(res[4*(y*w+x):4*(y*w+x)+4], pre[4*(sy*sw+sx):])
			}
		}
	default:
		res = resample4(pre, sw, sh, w, h, f)
	}
	// Un-premultiply (PIL RGBa -> RGBA).
	for i := 0; i < w*h; i++ {
		p := res[4*i : 4*i+4]
		a := int(p[3])
		q := out.Pix[4*i : 4*i+4]
		if a == 0 || a == 255 {
			copy(q, p)
			continue
		}
		for c := 0; c < 3; c++ {
			q[c] = clip8(255 * int(p[c]) / a)
		}
		q[3] = p[3]
	}
	return out
}

// resample4 is ResizeRGB's two passes on a compact 4-channel buffer.
func resample4(src []uint8, sw, sh, w, h int, f Filter) []uint8 {
	cur, cw := src, sw
	first, last := 0, sh
	var cv coeffs
	if h != sh {
		cv = precomputeCoeffs(sh, h, f)
		first, last = cv.start[0], cv.start[h-1]+cv.count[h-1]
	}
	if w != sw {
		ch := precomputeCoeffs(sw, w, f)
		tmp := make([]uint8, 4*w*(last-first))
		parallelRows(last-first, w*ch.ksize*4, func(y0, y1 int) {
			for y := y0; y < y1; y++ {
				in := src[4*sw*(y+first) : 4*sw*(y+first+1)]
				dst := tmp[4*w*y : 4*w*(y+1)]
				for xx := 0; xx < w; xx++ {
					k := ch.k[xx*ch.ksize : xx*ch.ksize+ch.count[xx]]
					s := in[4*ch.start[xx]:]
					var acc [4]int32
					for c := range acc {
						acc[c] = 1 << (precisionBits - 1)
					}
					for x, kv := range k {
						for c := range acc {
							acc[c] += int32(s[4*x+c]) * kv
						}
					}
					for c := range acc {
						dst[4*xx+c] = clipFixed(acc[c])
					}
				}
			}
		})
		cur, cw = tmp, w
		for i := range cv.start {
			cv.start[i] -= first
		}
	}
	if h == sh {
		return cur
	}
	curImg := &RGB{Pix: cur, Stride: 4 * cw, Rect: image.Rect(0, 0, cw, len(cur)/(4*cw))}
	outImg := &RGB{Pix: make([]uint8, 4*cw*h), Stride: 4 * cw, Rect: image.Rect(0, 0, cw, h)}
	parallelRows(h, cw*cv.ksize*4, func(y0, y1 int) {
		resampleVertical(outImg, curImg, y0, y1, &cv)
	})
	return outImg.Pix
}
