package clip

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/imageio"
)

type ppImage struct {
	File         string `json:"file"`
	Mode         string `json:"mode"`
	Width        int    `json:"width"`
	Height       int    `json:"height"`
	Format       string `json:"format"`
	ResizedWH    [2]int `json:"resized_wh"`
	CropOpenCLIP string `json:"crop_open_clip"`
	CropHF       string `json:"crop_hf"`
	Pixels       string `json:"pixels_open_clip"`
	Decoded      string `json:"decoded_rgb_pil"`
}

func loadPPIndex(t *testing.T, r refData) []ppImage {
	t.Helper()
	b, err := os.ReadFile(r.path("reference", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Images []ppImage `json:"images"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Images) == 0 {
		t.Fatal("index.json: no images")
	}
	return idx.Images
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

// sourceImage is the exact pixel source of a fixture: the image itself for
// PNG, PIL's decode for JPEG (Go's JPEG decoder differs by a few levels).
func sourceImage(t *testing.T, r refData, im ppImage) image.Image {
	t.Helper()
	if im.Decoded != "" {
		return readPNG(t, r.path("reference", im.Decoded))
	}
	img, info, err := imageio.DecodeFile(r.path(im.File), imageio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Width != im.Width || info.Height != im.Height || !strings.EqualFold(info.Format, im.Format) {
		t.Fatalf("%s: info %+v, want %dx%d %s", im.File, info, im.Width, im.Height, im.Format)
	}
	return img
}

func fixtureProcessors(t *testing.T, r refData) map[string]*ImageProcessor {
	t.Helper()
	out := map[string]*ImageProcessor{}
	for _, m := range []string{"tiny-clip-quickgelu", "tiny-clip-gelu"} {
		p, err := LoadImageProcessor(r.path(m))
		if err != nil {
			t.Fatal(err)
		}
		out[m] = p
	}
	return out
}

func TestPreprocessConfigForms(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		procs := fixtureProcessors(t, r)
		legacy, current := procs["tiny-clip-quickgelu"], procs["tiny-clip-gelu"]
		for name, p := range procs {
			if !p.DoResize || p.ShortestEdge != 224 || !p.DoCenterCrop || p.CropHeight != 224 || p.CropWidth != 224 ||
				!p.DoRescale || !p.DoNormalize || p.Resample != imageio.Bicubic || math.Abs(p.RescaleFactor-1.0/255) > 1e-15 ||
				p.Mean != openAIMean || p.Std != openAIStd {
				t.Errorf("%s: %+v", name, p)
			}
		}
		if legacy.lut != current.lut {
			t.Error("legacy and current config forms give different tables")
		}
	})
}

func TestPreprocessCropsMatchHF(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		procs := fixtureProcessors(t, r)
		for _, im := range loadPPIndex(t, r) {
			src := sourceImage(t, r, im)
			wantPath := im.CropOpenCLIP
			if im.CropHF != "" {
				wantPath = im.CropHF
			}
			want := imageio.ToRGB(readPNG(t, r.path("reference", wantPath)))
			for name, p := range procs {
				if w, h := p.resizeTarget(im.Width, im.Height); w != im.ResizedWH[0] || h != im.ResizedWH[1] {
					t.Errorf("%s: resize target %dx%d, want %v", im.File, w, h, im.ResizedWH)
				}
				got := p.Crop(src)
				if got.Rect != want.Rect {
					t.Fatalf("%s (%s): crop %v, want %v", im.File, name, got.Rect, want.Rect)
				}
				if n, maxd := diffRGB(got, want); n != 0 {
					t.Errorf("%s (%s): %d bytes differ from %s (max %d)", im.File, name, n, wantPath, maxd)
				}
			}
		}
	})
}

func TestPreprocessOpenCLIPOrderMatchesOpenCLIP(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		p := DefaultImageProcessor(224)
		p.OpenCLIP = true
		for _, im := range loadPPIndex(t, r) {
			src := sourceImage(t, r, im)
			want := imageio.ToRGB(readPNG(t, r.path("reference", im.CropOpenCLIP)))
			got := p.Crop(src)
			if got.Rect != want.Rect {
				t.Fatalf("%s: crop %v, want %v", im.File, got.Rect, want.Rect)
			}
			if n, maxd := diffRGB(got, want); n != 0 {
				t.Errorf("%s: %d bytes differ from %s (max %d)", im.File, n, im.CropOpenCLIP, maxd)
			}
			if im.Pixels != "" {
				want := readFloat32s(t, r.path("reference", im.Pixels))
				got := p.Pixels(src)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s: value %d = %v, want %v", im.File, i, got[i], want[i])
					}
				}
			}
		}
	})
}

func diffRGB(a, b *imageio.RGB) (n, maxd int) {
	for i := range a.Pix {
		d := int(a.Pix[i]) - int(b.Pix[i])
		if d != 0 {
			n++
			maxd = max(maxd, d, -d)
		}
	}
	return n, maxd
}

func readFloat32s(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(b)/4)
	if err := binary.Read(bytes.NewReader(b), binary.LittleEndian, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPreprocessPixelsBitExact(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		procs := fixtureProcessors(t, r)
		checked := 0
		for _, im := range loadPPIndex(t, r) {
			if im.Pixels == "" {
				continue
			}
			want := readFloat32s(t, r.path("reference", im.Pixels))
			src := sourceImage(t, r, im)
			for name, p := range procs {
				got := p.Pixels(src)
				if len(got) != 3*224*224 || len(want) != len(got) {
					t.Fatalf("%s: %d values, want %d", im.File, len(got), len(want))
				}
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s (%s): value %d = %v, want %v (bit-exact)", im.File, name, i, got[i], want[i])
					}
				}
				checked++
			}
		}
		if checked == 0 {
			t.Fatal("no pixel tensors checked")
		}
	})
}

func TestPreprocessJPEGDecodeClose(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		for _, im := range loadPPIndex(t, r) {
			if im.Decoded == "" {
				continue
			}
			img, info, err := imageio.DecodeFile(r.path(im.File), imageio.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != "jpeg" {
				t.Errorf("%s: format %q", im.File, info.Format)
			}
			got := imageio.ToRGB(img)
			want := imageio.ToRGB(readPNG(t, r.path("reference", im.Decoded)))
			if got.Rect != want.Rect {
				t.Fatalf("%s: %v vs %v", im.File, got.Rect, want.Rect)
			}
			sum, maxd, exact := 0, 0, 0
			for i := range got.Pix {
				d := int(got.Pix[i]) - int(want.Pix[i])
				sum += max(d, -d)
				maxd = max(maxd, d, -d)
				if d == 0 {
					exact++
				}
			}
			mean := float64(sum) / float64(len(got.Pix))
			t.Logf("%s: mean |d| = %.3f, max %d, %.2f%% exact vs PIL", im.File, mean, maxd, 100*float64(exact)/float64(len(got.Pix)))
			// The brief's bound is 3 levels; libjpeg-style upsampling and
			// colour conversion leave only IDCT rounding differences.
			if mean > 3 {
				t.Errorf("%s: mean |d| = %.3f levels vs PIL's decode, want <= 3", im.File, mean)
			}
			if mean > 0.1 || maxd > 4 {
				t.Errorf("%s: mean |d| = %.3f, max %d vs PIL's decode; libjpeg-compatible conversion should give <= 0.1 and <= 4", im.File, mean, maxd)
			}
		}
	})
}

func TestPreprocessOptions(t *testing.T) {
	r := ownRef(t)
	dir := t.TempDir()
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "preprocessor_config.json"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Squash resize + no crop + no normalisation: raw rescaled values.
	write(`{"size":{"height":4,"width":6},"do_center_crop":false,"do_normalize":false,"rescale_factor":0.5,"resample":2}`)
	p, err := LoadImageProcessor(dir)
	if err != nil {
		t.Fatal(err)
	}
	img := image.NewGray(image.Rect(0, 0, 12, 8))
	for i := range img.Pix {
		img.Pix[i] = 100
	}
	px := p.Pixels(img)
	if len(px) != 3*4*6 {
		t.Fatalf("%d values", len(px))
	}
	for _, v := range px {
		if v != 50 {
			t.Fatalf("value %v, want 50", v)
		}
	}
	if h, w := p.OutputSize(12, 8); h != 4 || w != 6 {
		t.Errorf("OutputSize %dx%d", h, w)
	}
	// Crop larger than the image pads with zeros (HF), which normalise to -mean/std.
	write(`{"do_resize":false,"crop_size":{"height":5,"width":5}}`)
	if p, err = LoadImageProcessor(dir); err != nil {
		t.Fatal(err)
	}
	px = p.Pixels(image.NewGray(image.Rect(0, 0, 2, 2)))
	zero := float32(0-float32(openAIMean[0])) / float32(openAIStd[0])
	if len(px) != 75 || px[0] != zero {
		t.Errorf("padded crop: %d values, first %v want %v", len(px), px[0], zero)
	}
	// Changing a field after loading is honoured.
	p.DoNormalize = false
	if px = p.Pixels(image.NewGray(image.Rect(0, 0, 2, 2))); px[0] != 0 {
		t.Errorf("after DoNormalize=false: %v", px[0])
	}
	for _, bad := range []string{
		`{"size":{"longest_edge":3}}`, `{"size":-1}`, `{"image_std":[1,0,1]}`, `{"image_mean":[1,2]}`,
		`{"resample":9}`, `{"crop_size":"big"}`, `not json`,
	} {
		write(bad)
		if _, err := LoadImageProcessor(dir); err == nil || !strings.Contains(err.Error(), "preprocessor_config.json") {
			t.Errorf("%s: err %v", bad, err)
		}
	}
	// open_clip layout fallback and the not-exist error.
	empty := t.TempDir()
	if _, err := LoadImageProcessor(empty); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("empty dir: %v", err)
	}
	oc, err := os.ReadFile(r.path("tiny-clip-quickgelu", "open_clip_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(empty, "open_clip_config.json"), oc, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err = LoadImageProcessor(empty)
	if err != nil {
		t.Fatal(err)
	}
	if p.ShortestEdge != 224 || p.CropHeight != 224 || p.Resample != imageio.Bicubic || p.Mean != openAIMean || !p.OpenCLIP {
		t.Errorf("open_clip config: %+v", p)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func BenchmarkPreprocess(b *testing.B) {
	p := DefaultImageProcessor(224)
	src := imageio.NewRGB(image.Rect(0, 0, 640, 480))
	for i := range src.Pix {
		src.Pix[i] = uint8(i * 7)
	}
	for b.Loop() {
		p.Pixels(src)
	}
}

func TestPreprocessConcurrent(t *testing.T) {
	p := DefaultImageProcessor(64)
	imgs := make([]image.Image, 4)
	want := make([][]float32, len(imgs))
	for i := range imgs {
		m := imageio.NewRGB(image.Rect(0, 0, 300+10*i, 200))
		for j := range m.Pix {
			m.Pix[j] = uint8(j * (i + 3))
		}
		imgs[i] = m
		want[i] = p.Pixels(m)
	}
	errs := make(chan string, len(imgs))
	for i := range imgs {
		go func() {
			got := p.Pixels(imgs[i])
			for k := range got {
				if got[k] != want[i][k] {
					errs <- "concurrent Pixels differs"
					return
				}
			}
			errs <- ""
		}()
	}
	for range imgs {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
}
