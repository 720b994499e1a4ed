package imageio

import (
	"encoding/json"
	"image"
	"math"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/image/draw"

	"github.com/imagescope/imagescope/internal/testutil"
)

type fixtureImage struct {
	File         string `json:"file"`
	Mode         string `json:"mode"`
	ResizedWH    [2]int `json:"resized_wh"`
	LeftTopOC    [2]int `json:"crop_left_top_open_clip"`
	LeftTopHF    [2]int `json:"crop_left_top_hf"`
	CropOpenCLIP string `json:"crop_open_clip"`
	CropHF       string `json:"crop_hf"`
	Decoded      string `json:"decoded_rgb_pil"`
}

func fixtureImages(t *testing.T, root string) []fixtureImage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "reference", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Images []fixtureImage `json:"images"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return idx.Images
}

func mustDecode(t *testing.T, path string) image.Image {
	t.Helper()
	img, _, err := DecodeFile(path, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func cropAt(src *RGB, left, top, w, h int) *RGB {
	return ToRGB(src.SubImage(image.Rect(left, top, left+w, top+h)))
}

// TestResizeMatchesPillow checks the resampler against Pillow's output: each
// fixture resized to its reference size and cut at both references' crop
// offsets must equal the reference crops byte for byte.
//
// It runs on the repository's testdata/clip (crops made by an independent
// integer re-implementation of Pillow's resampler, scripts/gen-testdata),
// then on ../shared/fixtures/clip (crops made by Pillow itself).
func TestResizeMatchesPillow(t *testing.T) {
	t.Run("testdata", func(t *testing.T) { checkResizeMatchesPillow(t, testutil.CLIP(t)) })
	t.Run("shared", func(t *testing.T) { checkResizeMatchesPillow(t, testutil.Fixtures(t, "clip")) })
}

func checkResizeMatchesPillow(t *testing.T, root string) {
	for _, im := range fixtureImages(t, root) {
		srcPath := filepath.Join(root, im.File)
		if im.Decoded != "" {
			srcPath = filepath.Join(root, "reference", im.Decoded)
		}
		rgb := ToRGB(mustDecode(t, srcPath))
		resized := ResizeRGB(rgb, im.ResizedWH[0], im.ResizedWH[1], Bicubic)
		type check struct {
			crop    string
			leftTop [2]int
		}
		checks := []check{}
		if im.CropHF != "" {
			checks = append(checks, check{im.CropHF, im.LeftTopHF})
		}
		// open_clip resizes RGBA premultiplied and P with nearest; only
		// RGB and L sources share its crop.
		if im.Mode == "RGB" || im.Mode == "L" {
			checks = append(checks, check{im.CropOpenCLIP, im.LeftTopOC})
		}
		// open_clip's order: resize in the source's own mode, then convert.
		ocCrop := CropRGB(ResizePIL(mustDecode(t, srcPath), im.ResizedWH[0], im.ResizedWH[1], Bicubic),
			im.LeftTopOC[0], im.LeftTopOC[1], 224, 224)
		ocWant := ToRGB(mustDecode(t, filepath.Join(root, "reference", im.CropOpenCLIP)))
		if string(ocCrop.Pix) != string(ocWant.Pix) {
			t.Errorf("%s: ResizePIL + crop differs from %s", im.File, im.CropOpenCLIP)
		}
		for _, c := range checks {
			want := ToRGB(mustDecode(t, filepath.Join(root, "reference", c.crop)))
			got := cropAt(resized, c.leftTop[0], c.leftTop[1], 224, 224)
			if got.Rect != want.Rect {
				t.Fatalf("%s: %v vs %v", c.crop, got.Rect, want.Rect)
			}
			n := 0
			for i := range got.Pix {
				if got.Pix[i] != want.Pix[i] {
					n++
				}
			}
			if n != 0 {
				t.Errorf("%s: %d of %d bytes differ", c.crop, n, len(got.Pix))
			}
		}
	}
}

func TestResizeFilters(t *testing.T) {
	// A flat image stays flat (within PIL's fixed-point rounding) for
	// every filter, both directions, and odd sizes.
	src := NewRGB(image.Rect(0, 0, 37, 23))
	for i := range src.Pix {
		src.Pix[i] = [3]uint8{10, 128, 250}[i%3]
	}
	for f := Nearest; f <= Hamming; f++ {
		for _, sz := range [][2]int{{5, 3}, {37, 7}, {100, 23}, {111, 69}, {1, 1}} {
			out := ResizeRGB(src, sz[0], sz[1], f)
			if out.Rect != image.Rect(0, 0, sz[0], sz[1]) {
				t.Fatalf("%v %v: rect %v", f, sz, out.Rect)
			}
			for i, v := range out.Pix {
				want := [3]int{10, 128, 250}[i%3]
				if d := int(v) - want; d > 1 || d < -1 {
					t.Fatalf("%v %v: byte %d = %d, want %d", f, sz, i, v, want)
				}
			}
		}
	}
	// Box 2x downscale averages pairs exactly.
	g := NewRGB(image.Rect(0, 0, 4, 1))
	copy(g.Pix, []uint8{0, 0, 0, 100, 100, 100, 10, 20, 30, 30, 40, 50})
	if out := ResizeRGB(g, 2, 1, Box); string(out.Pix) != string([]uint8{50, 50, 50, 20, 30, 40}) {
		t.Errorf("box: %v", out.Pix)
	}
	// Nearest picks floor((i+0.5)*in/out).
	if out := ResizeRGB(g, 2, 1, Nearest); string(out.Pix) != string([]uint8{100, 100, 100, 30, 40, 50}) {
		t.Errorf("nearest: %v", out.Pix)
	}
	// Same size is a copy; empty sizes are empty.
	if out := ResizeRGB(g, 4, 1, Bicubic); string(out.Pix) != string(g.Pix) || &out.Pix[0] == &g.Pix[0] {
		t.Error("same-size resize is not a copy")
	}
	if out := ResizeRGB(g, 0, 5, Bicubic); len(out.Pix) != 0 {
		t.Error("zero width")
	}
}

func TestResizeParallelMatchesSerial(t *testing.T) {
	// Large enough to take the parallel path; compare with row-by-row
	// serial passes.
	src := ToRGB(noiseImage(900, 700))
	got := ResizeRGB(src, 301, 233, Bicubic)
	ch, cv := precomputeCoeffs(900, 301, Bicubic), precomputeCoeffs(700, 233, Bicubic)
	first, last := cv.start[0], cv.start[232]+cv.count[232]
	tmp := NewRGB(image.Rect(0, 0, 301, last-first))
	resampleHorizontal(tmp, src, first, 0, last-first, &ch)
	for i := range cv.start {
		cv.start[i] -= first
	}
	want := NewRGB(image.Rect(0, 0, 301, 233))
	resampleVertical(want, tmp, 0, 233, &cv)
	if string(got.Pix) != string(want.Pix) {
		t.Error("parallel resize differs from the serial passes")
	}
}

func TestFitAndCrop(t *testing.T) {
	for _, c := range []struct{ w, h, max, ww, wh int }{
		{4000, 3000, 1024, 1024, 768}, {3000, 4000, 1024, 768, 1024}, {500, 300, 1024, 500, 300},
		{10000, 1, 100, 100, 1}, {100, 100, 0, 100, 100},
	} {
		if w, h := FitSize(c.w, c.h, c.max); w != c.ww || h != c.wh {
			t.Errorf("FitSize(%d,%d,%d) = %d,%d", c.w, c.h, c.max, w, h)
		}
	}
	img := ResizeToFit(noiseImage(300, 200), 150)
	if img.Rect != image.Rect(0, 0, 150, 100) {
		t.Errorf("ResizeToFit: %v", img.Rect)
	}
	// HF center crop: floor offsets; black outside a too-small image.
	src := NewRGB(image.Rect(0, 0, 5, 3))
	for i := range src.Pix {
		src.Pix[i] = uint8(i)
	}
	c := CenterCrop(src, 2, 2) // left floor(3/2)=1, top floor(1/2)=0
	if c.Pix[0] != src.Pix[src.PixOffset(1, 0)] || c.Pix[3*2] != src.Pix[src.PixOffset(1, 1)] {
		t.Errorf("crop offsets: %v", c.Pix)
	}
	p := CenterCrop(src, 7, 4) // left floor(-2/2)=-1, top floor(-1/2)=-1
	if p.Rect.Dx() != 7 || p.Pix[0] != 0 || p.Pix[p.PixOffset(1, 1)] != src.Pix[0] || p.Pix[p.PixOffset(6, 3)] != 0 {
		t.Errorf("padded crop: %v", p.Pix)
	}
}

func TestEncode(t *testing.T) {
	src := ToRGB(noiseImage(40, 30))
	pb, err := EncodePNG(src)
	if err != nil {
		t.Fatal(err)
	}
	back, info, err := DecodeBytes(pb, Limits{})
	if err != nil || info.Format != "png" {
		t.Fatal(info, err)
	}
	if string(ToRGB(back).Pix) != string(src.Pix) {
		t.Error("PNG round trip changed pixels")
	}
	jb, err := EncodeJPEG(src, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, info, err := DecodeBytes(jb, Limits{}); err != nil || info.Format != "jpeg" || info.Width != 40 {
		t.Error(info, err)
	}
	if _, err := EncodeJPEG(NewRGB(image.Rectangle{}), 90); err == nil {
		t.Error("empty image encoded")
	}
	if _, err := EncodePNG(nil); err == nil {
		t.Error("nil image encoded")
	}
}

// benchSource is a photo-like test image.
func benchSource(w, h int) *RGB {
	m := NewRGB(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := m.PixOffset(x, y)
			m.Pix[i] = uint8(x * 255 / w)
			m.Pix[i+1] = uint8(y * 255 / h)
			m.Pix[i+2] = uint8(128 + 127*math.Sin(float64(x*y)/500))
		}
	}
	return m
}

// BenchmarkResize compares the PIL-exact resampler with
// golang.org/x/image/draw's CatmullRom (the usual Go bicubic; not
// PIL-compatible) on the same sizes: a camera photo and a VGA image down to
// CLIP's 224 shortest edge.
func BenchmarkResize(b *testing.B) {
	for _, sz := range []struct {
		name         string
		w, h, ow, oh int
	}{
		{"4032x3024_to_298x224", 4032, 3024, 298, 224},
		{"640x480_to_298x224", 640, 480, 298, 224},
	} {
		src := benchSource(sz.w, sz.h)
		b.Run(sz.name+"/pil-exact", func(b *testing.B) {
			for b.Loop() {
				ResizeRGB(src, sz.ow, sz.oh, Bicubic)
			}
		})
		rgba := src.ToRGBA()
		b.Run(sz.name+"/xdraw-catmullrom", func(b *testing.B) {
			for b.Loop() {
				dst := image.NewRGBA(image.Rect(0, 0, sz.ow, sz.oh))
				draw.CatmullRom.Scale(dst, dst.Rect, rgba, rgba.Rect, draw.Src, nil)
			}
		})
	}
}

func TestResizeWindowMatchesCrop(t *testing.T) {
	src := ToRGB(noiseImage(61, 43))
	s := uint32(99)
	rnd := func(n int) int { s = s*1664525 + 1013904223; return int(s>>8) % n }
	for i := 0; i < 60; i++ {
		w, h := 1+rnd(130), 1+rnd(90)
		if i%10 == 0 {
			w = 61 // only the vertical pass
		}
		if i%10 == 1 {
			h = 43 // only the horizontal pass
		}
		f := []Filter{Bicubic, Bilinear, Lanczos, Nearest, Box, Hamming}[i%6]
		x0, y0 := rnd(w), rnd(h)
		win := image.Rect(x0, y0, x0+1+rnd(w-x0), y0+1+rnd(h-y0))
		full := ResizeRGB(src, w, h, f)
		want := CropRGB(full, win.Min.X, win.Min.Y, win.Dx(), win.Dy())
		got := ResizeRGBWindow(src, w, h, f, win)
		if got.Rect != want.Rect || string(got.Pix) != string(want.Pix) {
			t.Fatalf("%v %dx%d window %v: differs from the cropped full resize", f, w, h, win)
		}
	}
	// Same size: a plain crop; a window outside the result is empty.
	if got := ResizeRGBWindow(src, 61, 43, Bicubic, image.Rect(5, 6, 9, 8)); string(got.Pix) != string(CropRGB(src, 5, 6, 4, 2).Pix) {
		t.Error("same-size window")
	}
	if got := ResizeRGBWindow(src, 30, 20, Bicubic, image.Rect(40, 0, 50, 5)); !got.Rect.Empty() {
		t.Errorf("window outside: %v", got.Rect)
	}
}
