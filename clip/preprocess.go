package clip

import (
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagescope/imagescope/imageio"
)

// CLIP's default normalisation constants (OpenAI).
var (
	openAIMean = [3]float64{0.48145466, 0.4578275, 0.40821073}
	openAIStd  = [3]float64{0.26862954, 0.26130258, 0.27577711}
)

// ImageProcessor reproduces HuggingFace's (slow) CLIPImageProcessor:
// convert to RGB (PIL convert("RGB")), resize with PIL's resampling so the
// shortest edge is ShortestEdge (or to exactly ResizeHeight x ResizeWidth),
// center crop CropHeight x CropWidth at floor offsets (zero padding when the
// image is smaller), rescale and normalise in float32, laid out CHW.
//
// The result is bit-identical to HF's pixel_values for PNG input (and for
// any already-decoded image). JPEGs decoded by imageio differ from
// libjpeg's decode only by IDCT rounding (mean 0.03 levels on the
// references). It differs from open_clip's pipeline only where HF does
// (crop offsets when the margin is 3 mod 4; RGBA and palette images, which
// HF converts before resizing); set OpenCLIP for open_clip's order.
// Images are not EXIF-rotated here: imageio.DecodeFile does that (neither
// reference does). A processor is safe for concurrent use.
type ImageProcessor struct {
	DoConvertRGB bool // always effectively true: the output has 3 channels
	DoResize     bool
	// ShortestEdge > 0 resizes the shorter side to it and the longer side
	// to floor(ShortestEdge*long/short); otherwise ResizeHeight x
	// ResizeWidth is the exact target size.
	ShortestEdge              int
	ResizeHeight, ResizeWidth int
	Resample                  imageio.Filter
	DoCenterCrop              bool
	CropHeight, CropWidth     int
	DoRescale                 bool
	RescaleFactor             float64
	DoNormalize               bool
	Mean, Std                 [3]float64
	// OpenCLIP follows open_clip's (torchvision's) order instead of HF's:
	// resize in the source's own mode (RGBA premultiplied, palette images
	// with nearest), crop offsets rounded half to even, RGB conversion
	// last. It is set when the configuration came from
	// open_clip_config.json.
	OpenCLIP bool

	// lut caches the float value of each byte per channel for lutKey.
	lut    [3][256]float32
	lutKey lutParams
}

type lutParams struct {
	set                    bool
	doRescale, doNormalize bool
	rescale                float64
	mean, std              [3]float64
}

func (p *ImageProcessor) lutParams() lutParams {
	return lutParams{true, p.DoRescale, p.DoNormalize, p.RescaleFactor, p.Mean, p.Std}
}

// DefaultImageProcessor is CLIPImageProcessor's default configuration for an
// image size (224 for most CLIP models): shortest edge and square crop of
// that size, bicubic, rescale 1/255, OpenAI mean/std.
func DefaultImageProcessor(size int) *ImageProcessor {
	p := &ImageProcessor{
		DoConvertRGB: true, DoResize: true, ShortestEdge: size, Resample: imageio.Bicubic,
		DoCenterCrop: true, CropHeight: size, CropWidth: size,
		DoRescale: true, RescaleFactor: 1.0 / 255, DoNormalize: true,
		Mean: openAIMean, Std: openAIStd,
	}
	p.buildLUT()
	return p
}

// LoadImageProcessor reads dir/preprocessor_config.json in either HF form:
// legacy (`size: 224`, `crop_size: 224`, feature_extractor_type) or current
// (`size: {"shortest_edge": 224}` or `{"height","width"}`, `crop_size:
// {"height","width"}`), with image_mean/std, rescale_factor, resample and
// the do_* switches (defaults as in CLIPImageProcessor). Without that file
// it reads open_clip_config.json's preprocess_cfg (size, mean, std,
// interpolation; resize_mode "shortest" only) and follows open_clip's
// pipeline (OpenCLIP set). When neither exists the
// error wraps fs.ErrNotExist, so a caller can fall back to
// DefaultImageProcessor(image size).
func LoadImageProcessor(dir string) (*ImageProcessor, error) {
	hf := filepath.Join(dir, "preprocessor_config.json")
	b, err := os.ReadFile(hf)
	if err == nil {
		p, err := parseImageProcessor(b)
		if err != nil {
			return nil, fmt.Errorf("load image processor %s: %w", hf, err)
		}
		return p, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load image processor: %w", err)
	}
	oc := filepath.Join(dir, "open_clip_config.json")
	b, err2 := os.ReadFile(oc)
	if err2 != nil {
		if errors.Is(err2, fs.ErrNotExist) {
			return nil, fmt.Errorf("load image processor from %s: no preprocessor_config.json or open_clip_config.json: %w", dir, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("load image processor: %w", err2)
	}
	p, err := parseOpenCLIPPreprocess(b)
	if err != nil {
		return nil, fmt.Errorf("load image processor %s: %w", oc, err)
	}
	return p, nil
}

type ppJSON struct {
	DoResize      *bool           `json:"do_resize"`
	Size          json.RawMessage `json:"size"`
	Resample      *int            `json:"resample"`
	DoCenterCrop  *bool           `json:"do_center_crop"`
	CropSize      json.RawMessage `json:"crop_size"`
	DoRescale     *bool           `json:"do_rescale"`
	RescaleFactor *float64        `json:"rescale_factor"`
	DoNormalize   *bool           `json:"do_normalize"`
	ImageMean     json.RawMessage `json:"image_mean"`
	ImageStd      json.RawMessage `json:"image_std"`
	DoConvertRGB  *bool           `json:"do_convert_rgb"`
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

func parseImageProcessor(b []byte) (*ImageProcessor, error) {
	var c ppJSON
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	p := DefaultImageProcessor(224)
	p.DoResize = boolOr(c.DoResize, true)
	p.DoCenterCrop = boolOr(c.DoCenterCrop, true)
	p.DoRescale = boolOr(c.DoRescale, true)
	p.DoNormalize = boolOr(c.DoNormalize, true)
	p.DoConvertRGB = boolOr(c.DoConvertRGB, true)
	if c.Resample != nil {
		f := imageio.Filter(*c.Resample)
		if !f.Valid() {
			return nil, fmt.Errorf("field resample: unknown PIL filter %d", *c.Resample)
		}
		p.Resample = f
	}
	if c.RescaleFactor != nil {
		if *c.RescaleFactor <= 0 || math.IsInf(*c.RescaleFactor, 0) {
			return nil, fmt.Errorf("field rescale_factor: %v is not a positive number", *c.RescaleFactor)
		}
		p.RescaleFactor = *c.RescaleFactor
	}
	if len(c.Size) > 0 && string(c.Size) != "null" {
		se, h, w, err := parsePPSize(c.Size, false)
		if err != nil {
			return nil, fmt.Errorf("field size: %w", err)
		}
		p.ShortestEdge, p.ResizeHeight, p.ResizeWidth = se, h, w
	}
	if len(c.CropSize) > 0 && string(c.CropSize) != "null" {
		se, h, w, err := parsePPSize(c.CropSize, true)
		if err != nil {
			return nil, fmt.Errorf("field crop_size: %w", err)
		}
		if se > 0 {
			h, w = se, se
		}
		p.CropHeight, p.CropWidth = h, w
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *[3]float64
		pos  bool
	}{{"image_mean", c.ImageMean, &p.Mean, false}, {"image_std", c.ImageStd, &p.Std, true}} {
		if len(f.raw) == 0 || string(f.raw) == "null" {
			continue
		}
		v, err := parseTriple(f.raw)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", f.name, err)
		}
		if f.pos {
			for _, x := range v {
				if !(x > 0) {
					return nil, fmt.Errorf("field %s: %v has a non-positive value", f.name, v)
				}
			}
		}
		*f.dst = v
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	p.buildLUT()
	return p, nil
}

// parsePPSize reads an HF size field: an integer (legacy; for `size` it
// means the shortest edge, for `crop_size` a square), {"shortest_edge": n}
// or {"height": h, "width": w}.
func parsePPSize(raw json.RawMessage, crop bool) (shortest, h, w int, err error) {
	var n float64
	if json.Unmarshal(raw, &n) == nil {
		if n <= 0 || n != math.Trunc(n) || n > 1<<16 {
			return 0, 0, 0, fmt.Errorf("%v is not a positive integer", n)
		}
		if crop {
			return 0, int(n), int(n), nil
		}
		return int(n), 0, 0, nil
	}
	var m map[string]float64
	if err := json.Unmarshal(raw, &m); err != nil {
		return 0, 0, 0, fmt.Errorf("want an integer or an object: %s", raw)
	}
	pos := func(k string) (int, bool, error) {
		v, ok := m[k]
		if !ok {
			return 0, false, nil
		}
		if v <= 0 || v != math.Trunc(v) || v > 1<<16 {
			return 0, true, fmt.Errorf("%s: %v is not a positive integer", k, v)
		}
		return int(v), true, nil
	}
	se, okSE, err := pos("shortest_edge")
	if err != nil {
		return 0, 0, 0, err
	}
	hh, okH, err := pos("height")
	if err != nil {
		return 0, 0, 0, err
	}
	ww, okW, err := pos("width")
	if err != nil {
		return 0, 0, 0, err
	}
	switch {
	case okSE:
		return se, 0, 0, nil
	case okH && okW:
		return 0, hh, ww, nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return 0, 0, 0, fmt.Errorf("unsupported keys %s (want shortest_edge, or height and width)", strings.Join(keys, ","))
}

func parseTriple(raw json.RawMessage) ([3]float64, error) {
	var v []float64
	if err := json.Unmarshal(raw, &v); err != nil {
		var x float64
		if json.Unmarshal(raw, &x) != nil {
			return [3]float64{}, fmt.Errorf("want 3 numbers: %s", raw)
		}
		return [3]float64{x, x, x}, nil
	}
	if len(v) != 3 {
		return [3]float64{}, fmt.Errorf("want 3 numbers (one per RGB channel), got %d", len(v))
	}
	return [3]float64{v[0], v[1], v[2]}, nil
}

// parseOpenCLIPPreprocess reads open_clip_config.json's preprocess_cfg
// (with model_cfg.vision_cfg.image_size as the size fallback).
func parseOpenCLIPPreprocess(b []byte) (*ImageProcessor, error) {
	var c struct {
		ModelCfg struct {
			VisionCfg struct {
				ImageSize json.RawMessage `json:"image_size"`
			} `json:"vision_cfg"`
		} `json:"model_cfg"`
		PreprocessCfg struct {
			Size          json.RawMessage `json:"size"`
			Mean          json.RawMessage `json:"mean"`
			Std           json.RawMessage `json:"std"`
			Interpolation string          `json:"interpolation"`
			ResizeMode    string          `json:"resize_mode"`
		} `json:"preprocess_cfg"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	size := 224
	for _, raw := range []json.RawMessage{c.PreprocessCfg.Size, c.ModelCfg.VisionCfg.ImageSize} {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		var n int
		var pair []int
		switch {
		case json.Unmarshal(raw, &n) == nil && n > 0:
			size = n
		case json.Unmarshal(raw, &pair) == nil && len(pair) == 2 && pair[0] == pair[1] && pair[0] > 0:
			size = pair[0]
		default:
			return nil, fmt.Errorf("field size: unsupported value %s (want a positive integer or a square pair)", raw)
		}
		break
	}
	if m := c.PreprocessCfg.ResizeMode; m != "" && m != "shortest" {
		return nil, fmt.Errorf("field resize_mode: %q is not supported (only \"shortest\")", m)
	}
	p := DefaultImageProcessor(size)
	p.OpenCLIP = true
	switch c.PreprocessCfg.Interpolation {
	case "", "bicubic":
	case "bilinear":
		p.Resample = imageio.Bilinear
	case "nearest":
		p.Resample = imageio.Nearest
	case "lanczos":
		p.Resample = imageio.Lanczos
	case "box":
		p.Resample = imageio.Box
	case "hamming":
		p.Resample = imageio.Hamming
	default:
		return nil, fmt.Errorf("field interpolation: unknown %q", c.PreprocessCfg.Interpolation)
	}
	var err error
	if len(c.PreprocessCfg.Mean) > 0 {
		if p.Mean, err = parseTriple(c.PreprocessCfg.Mean); err != nil {
			return nil, fmt.Errorf("field mean: %w", err)
		}
	}
	if len(c.PreprocessCfg.Std) > 0 {
		if p.Std, err = parseTriple(c.PreprocessCfg.Std); err != nil {
			return nil, fmt.Errorf("field std: %w", err)
		}
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	p.buildLUT()
	return p, nil
}

func (p *ImageProcessor) validate() error {
	if p.DoResize && p.ShortestEdge <= 0 && (p.ResizeHeight <= 0 || p.ResizeWidth <= 0) {
		return errors.New("resize enabled without a size")
	}
	if p.DoCenterCrop && (p.CropHeight <= 0 || p.CropWidth <= 0) {
		return errors.New("center crop enabled without a crop size")
	}
	for c := 0; c < 3; c++ {
		if p.DoNormalize && !(p.Std[c] > 0) {
			return fmt.Errorf("std[%d] = %v is not positive", c, p.Std[c])
		}
	}
	return nil
}

// buildLUT precomputes the float value of every (channel, byte) pair with
// HF's arithmetic: float32(u * rescale_factor) (float64 product, as numpy
// does), then (x - float32(mean)) / float32(std) in float32.
func (p *ImageProcessor) buildLUT() {
	fillLUT(&p.lut, p.lutParams())
	p.lutKey = p.lutParams()
}

// table returns the byte -> float tables for the current fields (the cached
// ones unless the fields were changed after construction).
func (p *ImageProcessor) table() *[3][256]float32 {
	if k := p.lutParams(); k != p.lutKey {
		t := new([3][256]float32)
		fillLUT(t, k)
		return t
	}
	return &p.lut
}

func fillLUT(lut *[3][256]float32, k lutParams) {
	for c := 0; c < 3; c++ {
		mean, std := float32(k.mean[c]), float32(k.std[c])
		for u := 0; u < 256; u++ {
			x := float32(u)
			if k.doRescale {
				x = float32(float64(u) * k.rescale)
			}
			if k.doNormalize {
				x = float32(x-mean) / std
			}
			lut[c][u] = x
		}
	}
}

// OutputSize is the height and width of the tensors Pixels returns, for an
// input of the given size.
func (p *ImageProcessor) OutputSize(w, h int) (oh, ow int) {
	if p.DoResize {
		w, h = p.resizeTarget(w, h)
	}
	if p.DoCenterCrop {
		return p.CropHeight, p.CropWidth
	}
	return h, w
}

// resizeTarget is HF's get_resize_output_image_size (default_to_square
// False): the short side becomes ShortestEdge, the long side
// int(ShortestEdge*long/short).
func (p *ImageProcessor) resizeTarget(w, h int) (int, int) {
	if p.ShortestEdge <= 0 {
		return p.ResizeWidth, p.ResizeHeight
	}
	s := p.ShortestEdge
	if w <= h {
		return s, int(int64(s) * int64(h) / int64(w))
	}
	return int(int64(s) * int64(w) / int64(h)), s
}

// Crop returns the 8-bit RGB image after conversion, resize and center crop
// (the stage before rescaling and normalisation).
func (p *ImageProcessor) Crop(img image.Image) *imageio.RGB {
	if p.OpenCLIP {
		return p.cropOpenCLIP(img)
	}
	rgb := imageio.ToRGB(img)
	w, h := rgb.Rect.Dx(), rgb.Rect.Dy()
	if w <= 0 || h <= 0 {
		return rgb
	}
	if p.DoResize {
		tw, th := p.resizeTarget(w, h)
		if p.DoCenterCrop && tw >= p.CropWidth && th >= p.CropHeight {
			// Resize only the pixels the crop keeps (bit-identical).
			left, top := (tw-p.CropWidth)/2, (th-p.CropHeight)/2
			return imageio.ResizeRGBWindow(rgb, tw, th, p.Resample,
				image.Rect(left, top, left+p.CropWidth, top+p.CropHeight))
		}
		rgb = imageio.ResizeRGB(rgb, tw, th, p.Resample)
	}
	if p.DoCenterCrop {
		rgb = imageio.CenterCrop(rgb, p.CropWidth, p.CropHeight)
	}
	return rgb
}

func (p *ImageProcessor) cropOpenCLIP(img image.Image) *imageio.RGB {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return imageio.ToRGB(img)
	}
	if p.DoResize {
		tw, th := p.resizeTarget(w, h)
		img = imageio.ResizePIL(img, tw, th, p.Resample)
		w, h = tw, th
	}
	if !p.DoCenterCrop {
		return imageio.ToRGB(img)
	}
	// torchvision: round((size-crop)/2) (half to even); a too-small image
	// is first padded with floor(missing/2) black pixels on the left/top.
	offset := func(size, crop int) int {
		if size < crop {
			return -((crop - size) / 2)
		}
		return int(math.RoundToEven(float64(size-crop) / 2))
	}
	return imageio.CropRGB(img, offset(w, p.CropWidth), offset(h, p.CropHeight), p.CropWidth, p.CropHeight)
}

// Pixels preprocesses img into a CHW float32 tensor (3 x height x width,
// normally 3 x crop x crop). An empty image gives nil.
func (p *ImageProcessor) Pixels(img image.Image) []float32 {
	if img == nil {
		return nil
	}
	crop := p.Crop(img)
	w, h := crop.Rect.Dx(), crop.Rect.Dy()
	if w <= 0 || h <= 0 {
		return nil
	}
	out := make([]float32, 3*w*h)
	p.tensor(out, crop)
	return out
}

// tensor writes the CHW tensor of an 8-bit RGB image with origin (0,0).
func (p *ImageProcessor) tensor(out []float32, crop *imageio.RGB) {
	w, h := crop.Rect.Dx(), crop.Rect.Dy()
	plane := w * h
	r, g, b := out[:plane], out[plane:2*plane], out[2*plane:3*plane]
	lut := p.table()
	lr, lg, lb := &lut[0], &lut[1], &lut[2]
	for y := 0; y < h; y++ {
		row := crop.Pix[y*crop.Stride : y*crop.Stride+3*w]
		o := y * w
		for x := 0; x < w; x++ {
			r[o+x] = lr[row[3*x]]
			g[o+x] = lg[row[3*x+1]]
			b[o+x] = lb[row[3*x+2]]
		}
	}
}
