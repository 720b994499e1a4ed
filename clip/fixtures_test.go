package clip

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/testutil"
)

// fixture access -----------------------------------------------------------

// refData is one set of CLIP reference data in the fixtures layout: the
// repository's own testdata/clip (made by scripts/gen-testdata), or the
// independent ../shared/fixtures/clip used as an extra cross-check.
type refData struct{ dir string }

func (r refData) path(elem ...string) string {
	return filepath.Join(append([]string{r.dir}, elem...)...)
}

// forEachRef runs f on testdata/clip, then on ../shared/fixtures/clip
// (skipped when absent, a failure under CI=true).
func forEachRef(t *testing.T, f func(t *testing.T, r refData)) {
	t.Run("testdata", func(t *testing.T) { f(t, refData{testutil.CLIP(t)}) })
	t.Run("shared", func(t *testing.T) { f(t, refData{testutil.Fixtures(t, "clip")}) })
}

// ownRef is the repository's own reference data.
func ownRef(t testing.TB) refData { return refData{testutil.CLIP(t)} }

type fixtureIndex struct {
	Images []struct {
		File   string `json:"file"`
		CropOC string `json:"crop_open_clip"`
		CropHF string `json:"crop_hf"`
	} `json:"images"`
	ImageOrder    []string `json:"image_order"`
	HFDiffers     []string `json:"images_hf_preprocessing_differs"`
	PromptIndices []int    `json:"prompt_string_indices"`
	DebugImages   []string `json:"debug_images"`
	DebugTexts    []struct {
		K           int `json:"k"`
		StringIndex int `json:"string_index"`
	} `json:"debug_texts"`
	Arrays map[string]struct {
		Shape []int `json:"shape"`
	} `json:"arrays"`
}

type tokenFixture struct {
	N       int `json:"n"`
	Strings []struct {
		Text     string  `json:"text"`
		IDs      []int32 `json:"ids"`
		EOTIndex int     `json:"eot_index"`
		HFIDs    []int32 `json:"hf_input_ids"`
	} `json:"strings"`
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func loadIndex(t testing.TB, r refData) *fixtureIndex {
	var ix fixtureIndex
	readJSON(t, r.path("reference", "index.json"), &ix)
	return &ix
}

func loadTokens(t testing.TB, r refData) *tokenFixture {
	var tf tokenFixture
	readJSON(t, r.path("reference", "tokens.json"), &tf)
	if tf.N != len(tf.Strings) || tf.N == 0 {
		t.Fatalf("tokens.json: n=%d strings=%d", tf.N, len(tf.Strings))
	}
	return &tf
}

// readBin reads a reference float32 array and checks its element count
// against index.json.
func readBin(t testing.TB, r refData, ix *fixtureIndex, rel string) []float32 {
	t.Helper()
	data, err := os.ReadFile(r.path("reference", rel))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	if a, ok := ix.Arrays[rel]; ok {
		n := 1
		for _, d := range a.Shape {
			n *= d
		}
		if n != len(out) {
			t.Fatalf("%s: %d values, index says shape %v", rel, len(out), a.Shape)
		}
	}
	return out
}

// cropPixels turns a 224x224 crop PNG into the normalised CHW tensor with
// the reference formula (float32 division by 255, then (x-mean)/std).
func cropPixels(t testing.TB, r refData, rel string) []float32 {
	t.Helper()
	f, err := os.Open(r.path("reference", rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	b := img.Bounds()
	if b.Dx() != 224 || b.Dy() != 224 {
		t.Fatalf("%s: %v", rel, b)
	}
	mean := [3]float32{0.48145466, 0.4578275, 0.40821073}
	std := [3]float32{0.26862954, 0.26130258, 0.27577711}
	out := make([]float32, 3*224*224)
	for y := 0; y < 224; y++ {
		for x := 0; x < 224; x++ {
			r, g, bb, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
			for c, v := range [3]uint32{r >> 8, g >> 8, bb >> 8} {
				f := float32(v) / float32(255)
				out[c*224*224+y*224+x] = (f - mean[c]) / std[c]
			}
		}
	}
	return out
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if d > m || d != d {
			m = d
		}
	}
	return m
}

func checkClose(t *testing.T, what string, got, want []float32, atol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	if d := maxAbsDiff(got, want); !(d <= atol) {
		t.Errorf("%s: max |diff| %.3g > %.1g", what, d, atol)
	}
}

func flat(rows [][]float32) []float32 {
	var out []float32
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

// model variants --------------------------------------------------------------

type variant struct {
	name   string // reference folder
	dir    string
	layout string
}

// variants returns every (model, layout) combination: the quickgelu model in
// both shipped layouts, the gelu model in HF layout and converted to the
// open_clip layout.
func variants(t *testing.T, r refData) []variant {
	q := r.path("tiny-clip-quickgelu")
	g := r.path("tiny-clip-gelu")
	return []variant{
		{"tiny-clip-quickgelu", q, LayoutHF},
		{"tiny-clip-quickgelu", q, LayoutOpenCLIP},
		{"tiny-clip-gelu", g, LayoutHF},
		{"tiny-clip-gelu", convertToOpenCLIP(t, g), LayoutOpenCLIP},
	}
}

func loadVariant(t *testing.T, v variant) *Model {
	t.Helper()
	m, err := loadLocal(v.dir, Options{Threads: 2, Layout: v.layout})
	if err != nil {
		t.Fatalf("load %s (%s): %v", v.name, v.layout, err)
	}
	if m.Layout() != v.layout {
		t.Fatalf("layout %s, want %s", m.Layout(), v.layout)
	}
	return m
}

// readAll reads every float tensor of a safetensors file.
func readAll(t testing.TB, path string) (map[string][]float32, map[string][]int) {
	t.Helper()
	st, err := openSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	data, shapes := map[string][]float32{}, map[string][]int{}
	for _, n := range st.names() {
		if st.tensors[n].DType == "I64" {
			continue
		}
		d, s, err := st.float32s(n)
		if err != nil {
			t.Fatal(err)
		}
		data[n], shapes[n] = d, s
	}
	return data, shapes
}

func transpose(a []float32, rows, cols int) []float32 {
	out := make([]float32, len(a))
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			out[j*rows+i] = a[i*cols+j]
		}
	}
	return out
}

// convertToOpenCLIP writes the HF checkpoint in dir as an open_clip layout
// checkpoint (renamed keys, fused in_proj, transposed projections) into a
// temporary directory.
func convertToOpenCLIP(t *testing.T, dir string) string {
	t.Helper()
	data, shapes := readAll(t, filepath.Join(dir, "model.safetensors"))
	var out []Tensor
	used := map[string]bool{}
	add := func(name string, shape []int, d []float32) {
		out = append(out, Tensor{Name: name, DType: "F32", Shape: shape, Data: d})
	}
	take := func(n string) []float32 {
		d, ok := data[n]
		if !ok {
			t.Fatalf("convert: %s missing", n)
		}
		used[n] = true
		return d
	}
	simple := map[string]string{
		"text_model.embeddings.token_embedding.weight":      "token_embedding.weight",
		"text_model.embeddings.position_embedding.weight":   "positional_embedding",
		"text_model.final_layer_norm.weight":                "ln_final.weight",
		"text_model.final_layer_norm.bias":                  "ln_final.bias",
		"vision_model.embeddings.class_embedding":           "visual.class_embedding",
		"vision_model.embeddings.patch_embedding.weight":    "visual.conv1.weight",
		"vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
		"vision_model.pre_layrnorm.weight":                  "visual.ln_pre.weight",
		"vision_model.pre_layrnorm.bias":                    "visual.ln_pre.bias",
		"vision_model.post_layernorm.weight":                "visual.ln_post.weight",
		"vision_model.post_layernorm.bias":                  "visual.ln_post.bias",
		"logit_scale":                                       "logit_scale",
	}
	for hf, oc := range simple {
		add(oc, shapes[hf], take(hf))
	}
	for _, p := range []struct{ hf, oc string }{{"text_projection.weight", "text_projection"}, {"visual_projection.weight", "visual.proj"}} {
		s := shapes[p.hf]
		add(p.oc, []int{s[1], s[0]}, transpose(take(p.hf), s[0], s[1]))
	}
	for _, tw := range []struct{ hf, oc string }{{"text_model.encoder.layers.", "transformer.resblocks."}, {"vision_model.encoder.layers.", "visual.transformer.resblocks."}} {
		for i := 0; ; i++ {
			hp, op := fmt.Sprintf("%s%d.", tw.hf, i), fmt.Sprintf("%s%d.", tw.oc, i)
			if _, ok := data[hp+"layer_norm1.weight"]; !ok {
				break
			}
			for hs, os := range map[string]string{
				"layer_norm1.weight": "ln_1.weight", "layer_norm1.bias": "ln_1.bias",
				"layer_norm2.weight": "ln_2.weight", "layer_norm2.bias": "ln_2.bias",
				"self_attn.out_proj.weight": "attn.out_proj.weight", "self_attn.out_proj.bias": "attn.out_proj.bias",
				"mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
				"mlp.fc2.weight": "mlp.c_proj.weight", "mlp.fc2.bias": "mlp.c_proj.bias",
			} {
				add(op+os, shapes[hp+hs], take(hp+hs))
			}
			w := shapes[hp+"self_attn.q_proj.weight"][0]
			var qkvW, qkvB []float32
			for _, x := range []string{"q", "k", "v"} {
				qkvW = append(qkvW, take(hp+"self_attn."+x+"_proj.weight")...)
				qkvB = append(qkvB, take(hp+"self_attn."+x+"_proj.bias")...)
			}
			add(op+"attn.in_proj_weight", []int{3 * w, w}, qkvW)
			add(op+"attn.in_proj_bias", []int{3 * w}, qkvB)
		}
	}
	for n := range data {
		if !used[n] {
			t.Fatalf("convert: tensor %s not mapped", n)
		}
	}
	tmp := t.TempDir()
	f, err := os.Create(filepath.Join(tmp, "open_clip_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSafetensors(f, out); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "open_clip_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "open_clip_config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return tmp
}

// tests ---------------------------------------------------------------------------

func TestFixtureImageEmbeddings(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		ix := loadIndex(t, r)
		var px [][]float32
		crops := map[string]string{}
		for _, im := range ix.Images {
			crops[im.File] = im.CropOC
		}
		for _, f := range ix.ImageOrder {
			px = append(px, cropPixels(t, r, crops[f]))
		}
		var hfPx [][]float32
		for _, f := range ix.HFDiffers {
			for _, im := range ix.Images {
				if im.File == f {
					hfPx = append(hfPx, cropPixels(t, r, im.CropHF))
				}
			}
		}
		if len(hfPx) != len(ix.HFDiffers) {
			t.Fatalf("%d HF crops", len(hfPx))
		}
		ctx := context.Background()
		for _, v := range variants(t, r) {
			t.Run(v.name+"/"+v.layout, func(t *testing.T) {
				m := loadVariant(t, v)
				pooled, emb, err := m.imageBatches(ctx, px, nil)
				if err != nil {
					t.Fatal(err)
				}
				checkClose(t, "image_embeds", flat(emb), readBin(t, r, ix, v.name+"/image_embeds.bin"), 1e-5)
				checkClose(t, "image_pooled", flat(pooled), readBin(t, r, ix, v.name+"/image_pooled.bin"), 1e-5)
				hf, err := m.EmbedPixels(ctx, hfPx)
				if err != nil {
					t.Fatal(err)
				}
				checkClose(t, "image_embeds_hf_preprocessing", flat(hf), readBin(t, r, ix, v.name+"/image_embeds_hf_preprocessing.bin"), 1e-5)
				// One image at a time gives the same result as the batch.
				one, err := m.EmbedPixels(ctx, px[3:4])
				if err != nil {
					t.Fatal(err)
				}
				checkClose(t, "single image", one[0], emb[3], 1e-6)
			})
		}
	})
}

func TestFixtureTextEmbeddingsAndLogits(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		ix := loadIndex(t, r)
		tf := loadTokens(t, r)
		ids := make([][]int32, len(tf.Strings))
		eots := make([]int, len(tf.Strings))
		for i, s := range tf.Strings {
			ids[i] = s.IDs
			eots[i] = s.EOTIndex
			if got := eotIndex(s.IDs); got != s.EOTIndex {
				t.Fatalf("string %d: eotIndex %d, fixture %d", i, got, s.EOTIndex)
			}
		}
		ctx := context.Background()
		for _, v := range variants(t, r) {
			t.Run(v.name+"/"+v.layout, func(t *testing.T) {
				m := loadVariant(t, v)
				pooled, emb, err := m.textBatches(ctx, ids, eots, false, nil)
				if err != nil {
					t.Fatal(err)
				}
				wantEmb := readBin(t, r, ix, v.name+"/text_embeds.bin")
				checkClose(t, "text_embeds", flat(emb), wantEmb, 1e-5)
				checkClose(t, "text_pooled", flat(pooled), readBin(t, r, ix, v.name+"/text_pooled.bin"), 1e-5)
				// Full-length evaluation (all 77 positions) agrees.
				_, full, err := m.textBatches(ctx, ids, eots, true, nil)
				if err != nil {
					t.Fatal(err)
				}
				checkClose(t, "text_embeds (full length)", flat(full), wantEmb, 1e-5)
				// HF-style ids (49407 padding) pool at the first end token too.
				hf := make([][]int32, 0, len(tf.Strings))
				for _, s := range tf.Strings {
					p := append([]int32(nil), s.HFIDs...)
					for len(p) < 77 {
						p = append(p, 49407)
					}
					hf = append(hf, p)
				}
				hfEmb, err := m.EmbedTokenIDs(ctx, hf)
				if err != nil {
					t.Fatal(err)
				}
				for i, s := range tf.Strings {
					if fmt.Sprint(s.HFIDs) == fmt.Sprint(s.IDs[:len(s.HFIDs)]) {
						checkClose(t, fmt.Sprintf("HF ids of string %d", i), hfEmb[i], emb[i], 1e-5)
					}
				}

				// Logits: images x prompts.
				var px [][]float32
				crops := map[string]string{}
				for _, im := range ix.Images {
					crops[im.File] = im.CropOC
				}
				for _, f := range ix.ImageOrder {
					px = append(px, cropPixels(t, r, crops[f]))
				}
				img, err := m.EmbedPixels(ctx, px)
				if err != nil {
					t.Fatal(err)
				}
				var logits []float32
				for _, iv := range img {
					a := append([]float32(nil), iv...)
					Normalize(a)
					for _, p := range ix.PromptIndices {
						b := append([]float32(nil), emb[p]...)
						Normalize(b)
						var dot float32
						for k := range a {
							dot += a[k] * b[k]
						}
						logits = append(logits, m.LogitScale()*dot)
					}
				}
				checkClose(t, "logits_per_image", logits, readBin(t, r, ix, v.name+"/logits_per_image.bin"), 2e-4)
			})
		}
	})
}

func TestFixtureIntermediates(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		ix := loadIndex(t, r)
		tf := loadTokens(t, r)
		crops := map[string]string{}
		for _, im := range ix.Images {
			crops[filepath.Base(im.File)] = im.CropOC
		}
		ctx := context.Background()
		for _, v := range variants(t, r) {
			t.Run(v.name+"/"+v.layout, func(t *testing.T) {
				m := loadVariant(t, v)
				for _, name := range ix.DebugImages {
					got := map[string][]float32{}
					trace := func(stage string, x []float32) { got[stage] = append([]float32(nil), x...) }
					if _, _, err := m.imageBatches(ctx, [][]float32{cropPixels(t, r, crops[name])}, trace); err != nil {
						t.Fatal(err)
					}
					for _, stage := range []string{"embeddings", "pre_layrnorm", "layer0"} {
						rel := fmt.Sprintf("%s/debug/image_%s.vision_%s.bin", v.name, strings.TrimSuffix(strings.TrimSuffix(name, ".png"), ".jpg"), stage)
						checkClose(t, rel, got[stage], readBin(t, r, ix, rel), 5e-5)
					}
				}
				for _, dt := range ix.DebugTexts {
					s := tf.Strings[dt.StringIndex]
					got := map[string][]float32{}
					trace := func(stage string, x []float32) { got[stage] = append([]float32(nil), x...) }
					if _, _, err := m.textBatches(ctx, [][]int32{s.IDs}, []int{s.EOTIndex}, true, trace); err != nil {
						t.Fatal(err)
					}
					for _, stage := range []string{"embeddings", "layer0", "final_layer_norm"} {
						rel := fmt.Sprintf("%s/debug/text_%d.text_%s.bin", v.name, dt.K, stage)
						checkClose(t, rel, got[stage], readBin(t, r, ix, rel), 5e-5)
					}
				}
			})
		}
	})
}

func TestLayoutsAgree(t *testing.T) {
	forEachRef(t, func(t *testing.T, r refData) {
		// Both shipped layouts of the quickgelu model give the same numbers.
		vs := variants(t, r)
		ctx := context.Background()
		a, b := loadVariant(t, vs[0]), loadVariant(t, vs[1])
		px := [][]float32{cropPixels(t, r, "preprocess/square_224x224.open_clip.crop.png")}
		ea, _ := a.EmbedPixels(ctx, px)
		eb, _ := b.EmbedPixels(ctx, px)
		checkClose(t, "image embeds hf vs open_clip", ea[0], eb[0], 1e-6)
		ids := [][]int32{{49406, 320, 1125, 539, 320, 2368, 49407}}
		ta, _ := a.EmbedTokenIDs(ctx, ids)
		tb, _ := b.EmbedTokenIDs(ctx, ids)
		checkClose(t, "text embeds hf vs open_clip", ta[0], tb[0], 1e-6)
		if !strings.Contains(a.ID(), "tiny-clip-quickgelu") {
			t.Errorf("ID %q", a.ID())
		}
		if want := loadIndex(t, r).Arrays["tiny-clip-quickgelu/image_embeds.bin"].Shape[1]; a.Dim() != want {
			t.Errorf("Dim %d, want %d", a.Dim(), want)
		}
	})
}
