package imageio

import (
	"fmt"
	"image"
	"math"
	"runtime"
	"sync"
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
	src = src.compact()
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	if w <= 0 || h <= 0 || sw <= 0 || sh <= 0 {
		return NewRGB(image.Rect(0, 0, max(w, 0), max(h, 0)))
	}
	if w == sw && h == sh {
		out := NewRGB(image.Rect(0, 0, w, h))
		copy(out.Pix, src.Pix)
		return out
	}
	if f == Nearest {
		return resizeNearest(src, w, h)
	}
	needH, needV := w != sw, h != sh
	var cv coeffs
	first, last := 0, sh
	if needV {
		cv = precomputeCoeffs(sh, h, f)
		first = cv.start[0]
		last = cv.start[h-1] + cv.count[h-1]
	}
	cur := src
	if needH {
		ch := precomputeCoeffs(sw, w, f)
		tmp := NewRGB(image.Rect(0, 0, w, last-first))
		parallelRows(last-first, w*ch.ksize*3, func(y0, y1 int) {
			resampleHorizontal(tmp, src, first, y0, y1, &ch)
		})
		cur = tmp
		if needV {
			for i := range cv.start {
				cv.start[i] -= first
			}
		}
	}
	if !needV {
		return cur
	}
	out := NewRGB(image.Rect(0, 0, cur.Rect.Dx(), h))
	parallelRows(h, cur.Rect.Dx()*cv.ksize*3, func(y0, y1 int) {
		resampleVertical(out, cur, y0, y1, &cv)
	})
	return out
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
			for i, p := range row {
				acc[i] += int32(p) * kv
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
	workers := runtime.GOMAXPROCS(0)
	if work := n * perRow; work < 1<<20 || workers < 2 || n < 2*workers {
		fn(0, n)
		return
	}
	chunk := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for y0 := 0; y0 < n; y0 += chunk {
		y1 := min(y0+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(y0, y1)
		}()
	}
	wg.Wait()
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
	src := asRGB(img).compact()
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	out := NewRGB(image.Rect(0, 0, max(w, 0), max(h, 0)))
	if w <= 0 || h <= 0 || sw <= 0 || sh <= 0 {
		return out
	}
	top := floorDiv(sh-h, 2)
	left := floorDiv(sw-w, 2)
	// HF pads a too-small image with zeros at ceil(missing/2) and shifts
	// the window by the same amount, which is the same as reading the
	// window [left, left+w) x [top, top+h) with black outside the image.
	for y := 0; y < h; y++ {
		sy := top + y
		if sy < 0 || sy >= sh {
			continue
		}
		for x := 0; x < w; x++ {
			sx := left + x
			if sx < 0 || sx >= sw {
				continue
			}
			copy(out.Pix[y*out.Stride+3*x:y*out.Stride+3*x+3], src.Pix[sy*src.Stride+3*sx:])
		}
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
