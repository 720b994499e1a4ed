package clip

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/imagescope/imagescope/internal/half"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// rewriteCheckpoint copies the HF checkpoint files of src into a temp dir,
// passing the tensors through edit before writing model.safetensors.
func rewriteCheckpoint(t *testing.T, src string, edit func([]Tensor) []Tensor) string {
	t.Helper()
	data, shapes := readAll(t, filepath.Join(src, "model.safetensors"))
	names := make([]string, 0, len(data))
	for n := range data {
		names = append(names, n)
	}
	sort.Strings(names)
	var ts []Tensor
	for _, n := range names {
		ts = append(ts, Tensor{Name: n, DType: "F32", Shape: shapes[n], Data: data[n]})
	}
	ts = edit(ts)
	dir := t.TempDir()
	for _, f := range []string{"config.json", "preprocessor_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeST(t, filepath.Join(dir, "model.safetensors"), ts)
	return dir
}

func writeST(t testing.TB, path string, ts []Tensor) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSafetensors(f, ts); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestHalfPrecisionCheckpoints(t *testing.T) {
	r := ownRef(t)
	src := r.path("tiny-clip-gelu")
	ctx := context.Background()
	ref, err := loadLocal(src, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	px := [][]float32{cropPixels(t, r, loadIndex(t, r).Images[0].CropOC)}
	refImg, _ := ref.EmbedPixels(ctx, px)
	ids := [][]int32{{49406, 320, 1125, 539, 320, 2368, 49407}}
	refTxt, _ := ref.EmbedTokenIDs(ctx, ids)
	orig, _ := readAll(t, filepath.Join(src, "model.safetensors"))
	for _, dt := range []string{"F16", "BF16"} {
		t.Run(dt, func(t *testing.T) {
			dir := rewriteCheckpoint(t, src, func(ts []Tensor) []Tensor {
				for i := range ts {
					ts[i].DType = dt
				}
				return ts
			})
			// Every value reads back as the float32 value of its rounding.
			st, err := openSafetensors(filepath.Join(dir, "model.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			relTol := 1.0 / 2048 // half: 11-bit significand
			if dt == "BF16" {
				relTol = 1.0 / 256
			}
			for name, want := range orig {
				if st.tensors[name].DType != dt {
					t.Fatalf("%s stored as %s", name, st.tensors[name].DType)
				}
				got, _, err := st.float32s(name)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					w := float64(want[i])
					if d := math.Abs(float64(got[i]) - w); d > relTol*math.Abs(w)+6e-8 {
						t.Fatalf("%s[%d]: %v read back as %v", name, i, want[i], got[i])
					}
				}
			}
			m, err := loadLocal(dir, Options{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			img, _ := m.EmbedPixels(ctx, px)
			txt, _ := m.EmbedTokenIDs(ctx, ids)
			minCos := 0.9999
			if dt == "BF16" {
				minCos = 0.999
			}
			if c := cosine(img[0], refImg[0]); c < minCos {
				t.Errorf("image cosine to float32 model %v", c)
			}
			if c := cosine(txt[0], refTxt[0]); c < minCos {
				t.Errorf("text cosine to float32 model %v", c)
			}
		})
	}
}

func TestHalfConversionExact(t *testing.T) {
	for _, c := range []struct {
		h uint16
		f float32
	}{
		{0x0000, 0}, {0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.960464477539063e-08},
		{0x0400, 6.103515625e-05}, {0x3555, 0.333251953125},
	} {
		if got := half.ToFloat32(c.h); got != c.f {
			t.Errorf("half.ToFloat32(%#x) = %v, want %v", c.h, got, c.f)
		}
		if got := half.FromFloat32(c.f); got != c.h {
			t.Errorf("half.FromFloat32(%v) = %#x, want %#x", c.f, got, c.h)
		}
	}
	if !math.IsInf(float64(half.ToFloat32(0x7c00)), 1) || !math.IsNaN(float64(half.ToFloat32(0x7e00))) {
		t.Error("inf/nan")
	}
}

func TestCheckpointErrors(t *testing.T) {
	r := ownRef(t)
	src := r.path("tiny-clip-quickgelu")
	cases := []struct {
		name string
		edit func([]Tensor) []Tensor
		want []string
	}{
		{"missing", func(ts []Tensor) []Tensor {
			var out []Tensor
			for _, x := range ts {
				if x.Name != "vision_model.encoder.layers.1.mlp.fc2.bias" {
					out = append(out, x)
				}
			}
			return out
		}, []string{`"vision_model.encoder.layers.1.mlp.fc2.bias" is missing`, "[16]"}},
		{"misshaped", func(ts []Tensor) []Tensor {
			for i := range ts {
				if ts[i].Name == "text_projection.weight" {
					ts[i].Shape = []int{4, 12} // transposed
				}
			}
			return ts
		}, []string{`"text_projection.weight" has shape [4 12], want [12 4]`}},
		{"extra tensors are ignored", func(ts []Tensor) []Tensor {
			return append(ts, Tensor{Name: "text_model.embeddings.position_ids", DType: "F32", Shape: []int{1, 77}, Data: make([]float32, 77)},
				Tensor{Name: "something.else", DType: "F32", Shape: []int{2}, Data: make([]float32, 2)})
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := rewriteCheckpoint(t, src, c.edit)
			_, err := Load(context.Background(), dir, Options{Threads: 1})
			if c.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// Damaged files.
	dir := t.TempDir()
	for _, f := range []string{"config.json"} {
		b, _ := os.ReadFile(filepath.Join(src, f))
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	whole, _ := os.ReadFile(filepath.Join(src, "model.safetensors"))
	for name, content := range map[string][]byte{
		"truncated":  whole[:len(whole)/2],
		"empty":      nil,
		"bad header": append([]byte{8, 0, 0, 0, 0, 0, 0, 0}, []byte("{nope   ")...),
	} {
		os.WriteFile(filepath.Join(dir, "model.safetensors"), content, 0o644)
		if _, err := Load(context.Background(), dir, Options{}); err == nil || !strings.Contains(err.Error(), "model.safetensors") {
			t.Errorf("%s: error %v", name, err)
		}
	}
	if _, err := Load(context.Background(), t.TempDir(), Options{}); err == nil || !strings.Contains(err.Error(), "no CLIP checkpoint") {
		t.Errorf("empty dir: %v", err)
	}
}

// TestSyntheticGridMatchesNaive builds a random model whose config differs
// from the fixtures (image 64, patch 16: a 4x4 grid and 17 positions; odd
// widths) and checks both towers against a plain float64 implementation.
func TestSyntheticGridMatchesNaive(t *testing.T) {
	cfg := map[string]any{
		"model_type": "clip", "projection_dim": 12,
		"text_config":   map[string]any{"hidden_size": 20, "intermediate_size": 36, "num_attention_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 9, "vocab_size": 50, "hidden_act": "gelu", "layer_norm_eps": 1e-5},
		"vision_config": map[string]any{"hidden_size": 24, "intermediate_size": 40, "num_attention_heads": 3, "num_hidden_layers": 2, "image_size": 64, "patch_size": 16, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-6},
	}
	r := rand.New(rand.NewPCG(7, 8))
	rnd := func(n int, s float64) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(r.NormFloat64() * s)
		}
		return out
	}
	ones := func(n int) []float32 {
		out := rnd(n, 0.1)
		for i := range out {
			out[i]++
		}
		return out
	}
	tensors := map[string][]float32{}
	shapes := map[string][]int{}
	add := func(name string, d []float32, shape ...int) { tensors[name], shapes[name] = d, shape }
	layer := func(prefix string, w, inter int) {
		for _, p := range []string{"q", "k", "v", "out"} {
			add(prefix+".self_attn."+p+"_proj.weight", rnd(w*w, 1/math.Sqrt(float64(w))), w, w)
			add(prefix+".self_attn."+p+"_proj.bias", rnd(w, 0.1), w)
		}
		add(prefix+".layer_norm1.weight", ones(w), w)
		add(prefix+".layer_norm1.bias", rnd(w, 0.1), w)
		add(prefix+".layer_norm2.weight", ones(w), w)
		add(prefix+".layer_norm2.bias", rnd(w, 0.1), w)
		add(prefix+".mlp.fc1.weight", rnd(inter*w, 1/math.Sqrt(float64(w))), inter, w)
		add(prefix+".mlp.fc1.bias", rnd(inter, 0.1), inter)
		add(prefix+".mlp.fc2.weight", rnd(w*inter, 1/math.Sqrt(float64(inter))), w, inter)
		add(prefix+".mlp.fc2.bias", rnd(w, 0.1), w)
	}
	for i := 0; i < 2; i++ {
		layer("vision_model.encoder.layers."+string(rune('0'+i)), 24, 40)
		layer("text_model.encoder.layers."+string(rune('0'+i)), 20, 36)
	}
	add("vision_model.embeddings.class_embedding", rnd(24, 0.5), 24)
	add("vision_model.embeddings.patch_embedding.weight", rnd(24*3*16*16, 1/math.Sqrt(768)), 24, 3, 16, 16)
	add("vision_model.embeddings.position_embedding.weight", rnd(17*24, 0.5), 17, 24)
	add("vision_model.pre_layrnorm.weight", ones(24), 24)
	add("vision_model.pre_layrnorm.bias", rnd(24, 0.1), 24)
	add("vision_model.post_layernorm.weight", ones(24), 24)
	add("vision_model.post_layernorm.bias", rnd(24, 0.1), 24)
	add("visual_projection.weight", rnd(12*24, 0.2), 12, 24)
	add("text_model.embeddings.token_embedding.weight", rnd(50*20, 0.5), 50, 20)
	add("text_model.embeddings.position_embedding.weight", rnd(9*20, 0.5), 9, 20)
	add("text_model.final_layer_norm.weight", ones(20), 20)
	add("text_model.final_layer_norm.bias", rnd(20, 0.1), 20)
	add("text_projection.weight", rnd(12*20, 0.2), 12, 20)
	add("logit_scale", []float32{2.6592})
	dir := t.TempDir()
	var ts []Tensor
	for n, d := range tensors {
		ts = append(ts, Tensor{Name: n, DType: "F32", Shape: shapes[n], Data: d})
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	writeST(t, filepath.Join(dir, "model.safetensors"), ts)
	cj, _ := json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "config.json"), cj, 0o644)

	m, err := Load(context.Background(), dir, Options{Threads: 3})
	if err != nil {
		t.Fatal(err)
	}
	if m.vision.tokens != 17 || m.Dim() != 12 {
		t.Fatalf("tokens %d dim %d", m.vision.tokens, m.Dim())
	}
	px := [][]float32{rnd(3*64*64, 1), rnd(3*64*64, 1), rnd(3*64*64, 1)}
	got, err := m.EmbedPixels(context.Background(), px)
	if err != nil {
		t.Fatal(err)
	}
	nv := naiveModel{tensors: tensors}
	for i := range px {
		want := nv.image(px[i], 64, 16, 24, 3, 2, 1e-6, false)
		checkClose(t, "synthetic image", got[i], want, 2e-5)
	}
	ids := [][]int32{{48, 5, 7, 49, 0, 0, 0, 0, 0}, {48, 49, 3, 49}, {48, 1, 2, 3, 4, 5, 6, 7, 49}}
	gotT, err := m.EmbedTokenIDs(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range ids {
		want := nv.text(s, 20, 4, 2, 1e-5, true)
		checkClose(t, "synthetic text", gotT[i], want, 2e-5)
	}
	// Ids beyond the vocabulary or the context are per-call errors, not panics.
	if _, err := m.EmbedTokenIDs(context.Background(), [][]int32{{48, 60, 49}}); err == nil || !strings.Contains(err.Error(), "token id 60") {
		t.Errorf("bad id: %v", err)
	}
	if _, err := m.EmbedTokenIDs(context.Background(), [][]int32{make([]int32, 10)}); err == nil {
		t.Error("too long: no error")
	}
	// Wrong pixel size.
	if _, err := m.EmbedPixels(context.Background(), [][]float32{make([]float32, 10)}); err == nil {
		t.Error("bad pixels: no error")
	}
}

// naiveModel is a direct float64 CLIP forward pass over HF tensors.
type naiveModel struct{ tensors map[string][]float32 }

func (n naiveModel) ln(x []float64, name string, eps float64) []float64 {
	g, b := n.tensors[name+".weight"], n.tensors[name+".bias"]
	var mean, v float64
	for _, a := range x {
		mean += a
	}
	mean /= float64(len(x))
	for _, a := range x {
		v += (a - mean) * (a - mean)
	}
	v /= float64(len(x))
	out := make([]float64, len(x))
	for i, a := range x {
		out[i] = (a-mean)/math.Sqrt(v+eps)*float64(g[i]) + float64(b[i])
	}
	return out
}

func (n naiveModel) lin(x []float64, name string, out int, bias bool) []float64 {
	w := n.tensors[name+".weight"]
	y := make([]float64, out)
	for o := 0; o < out; o++ {
		if bias {
			y[o] = float64(n.tensors[name+".bias"][o])
		}
		for i, a := range x {
			y[o] += a * float64(w[o*len(x)+i])
		}
	}
	return y
}

func (n naiveModel) encoder(x [][]float64, prefix string, w, heads, layers int, eps float64, causal, gelu bool) [][]float64 {
	L, dh := len(x), w/heads
	for l := 0; l < layers; l++ {
		p := prefix + string(rune('0'+l))
		q, k, v := make([][]float64, L), make([][]float64, L), make([][]float64, L)
		for i := range x {
			h := n.ln(x[i], p+".layer_norm1", eps)
			q[i], k[i], v[i] = n.lin(h, p+".self_attn.q_proj", w, true), n.lin(h, p+".self_attn.k_proj", w, true), n.lin(h, p+".self_attn.v_proj", w, true)
		}
		att := make([][]float64, L)
		for i := range att {
			att[i] = make([]float64, w)
			for hd := 0; hd < heads; hd++ {
				s := make([]float64, L)
				mx := math.Inf(-1)
				for j := 0; j < L; j++ {
					if causal && j > i {
						s[j] = math.Inf(-1)
						continue
					}
					for d := 0; d < dh; d++ {
						s[j] += q[i][hd*dh+d] * k[j][hd*dh+d]
					}
					s[j] /= math.Sqrt(float64(dh))
					mx = math.Max(mx, s[j])
				}
				var sum float64
				for j := range s {
					s[j] = math.Exp(s[j] - mx)
					sum += s[j]
				}
				for j := range s {
					for d := 0; d < dh; d++ {
						att[i][hd*dh+d] += s[j] / sum * v[j][hd*dh+d]
					}
				}
			}
		}
		for i := range x {
			o := n.lin(att[i], p+".self_attn.out_proj", w, true)
			for d := range o {
				x[i][d] += o[d]
			}
			h := n.ln(x[i], p+".layer_norm2", eps)
			inter := len(n.tensors[p+".mlp.fc1.bias"])
			m := n.lin(h, p+".mlp.fc1", inter, true)
			for j, a := range m {
				if gelu {
					m[j] = 0.5 * a * (1 + math.Erf(a/math.Sqrt2))
				} else {
					m[j] = a / (1 + math.Exp(-1.702*a))
				}
			}
			o = n.lin(m, p+".mlp.fc2", w, true)
			for d := range o {
				x[i][d] += o[d]
			}
		}
	}
	return x
}

func toF32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

func (n naiveModel) image(px []float32, S, P, W, heads, layers int, eps float64, gelu bool) []float32 {
	G := S / P
	pw := n.tensors["vision_model.embeddings.patch_embedding.weight"]
	pos := n.tensors["vision_model.embeddings.position_embedding.weight"]
	cls := n.tensors["vision_model.embeddings.class_embedding"]
	x := make([][]float64, G*G+1)
	x[0] = make([]float64, W)
	for d := 0; d < W; d++ {
		x[0][d] = float64(cls[d]) + float64(pos[d])
	}
	for gy := 0; gy < G; gy++ {
		for gx := 0; gx < G; gx++ {
			t := 1 + gy*G + gx
			x[t] = make([]float64, W)
			for o := 0; o < W; o++ {
				s := float64(pos[t*W+o])
				for c := 0; c < 3; c++ {
					for ky := 0; ky < P; ky++ {
						for kx := 0; kx < P; kx++ {
							s += float64(px[c*S*S+(gy*P+ky)*S+gx*P+kx]) * float64(pw[((o*3+c)*P+ky)*P+kx])
						}
					}
				}
				x[t][o] = s
			}
		}
	}
	for i := range x {
		x[i] = n.ln(x[i], "vision_model.pre_layrnorm", eps)
	}
	x = n.encoder(x, "vision_model.encoder.layers.", W, heads, layers, eps, false, gelu)
	pooled := n.ln(x[0], "vision_model.post_layernorm", eps)
	return toF32(n.lin(pooled, "visual_projection", len(n.tensors["visual_projection.weight"])/W, false))
}

func (n naiveModel) text(ids []int32, W, heads, layers int, eps float64, gelu bool) []float32 {
	tok := n.tensors["text_model.embeddings.token_embedding.weight"]
	pos := n.tensors["text_model.embeddings.position_embedding.weight"]
	x := make([][]float64, len(ids))
	for i, id := range ids {
		x[i] = make([]float64, W)
		for d := 0; d < W; d++ {
			x[i][d] = float64(tok[int(id)*W+d]) + float64(pos[i*W+d])
		}
	}
	x = n.encoder(x, "text_model.encoder.layers.", W, heads, layers, eps, true, gelu)
	e := eotIndex(ids)
	pooled := n.ln(x[e], "text_model.final_layer_norm", eps)
	return toF32(n.lin(pooled, "text_projection", len(n.tensors["text_projection.weight"])/W, false))
}

// TestEOSPooling: the pooled position is the first end token (49407), not
// config.json's eos_token_id (2 in the quickgelu fixture, as in legacy
// openai configs), and nothing after it changes the result.
func TestEOSPooling(t *testing.T) {
	r := ownRef(t)
	m, err := loadLocal(r.path("tiny-clip-quickgelu"), Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	base := []int32{49406, 320, 1125, 539, 49407}
	variants := [][]int32{
		base,
		append(append([]int32(nil), base...), 0, 0, 0),             // open_clip padding
		append(append([]int32(nil), base...), 49407, 49407),        // HF padding
		append(append([]int32(nil), base...), 2, 2, 320, 49407, 7), // eos_token_id=2 and a second end token
	}
	out, err := m.EmbedTokenIDs(ctx, variants)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(out); i++ {
		checkClose(t, fmt.Sprintf("variant %d", i), out[i], out[0], 1e-6)
	}
	// Pooling at id 2 (a wrong reading of eos_token_id) would differ.
	other, _ := m.EmbedTokenIDs(ctx, [][]int32{{49406, 320, 1125, 539}})
	if maxAbsDiff(other[0], out[0]) < 1e-3 {
		t.Error("pooling position does not matter?")
	}
}

func TestOpenCLIPConfigOptions(t *testing.T) {
	base := `{"model_cfg": {"embed_dim": 16, "quick_gelu": true,
	  "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 8, "patch_size": 32 %s},
	  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 8, "heads": 2, "layers": 3 %s}}}`
	for _, tc := range []struct {
		vision, text string
		err          string
	}{
		{"", "", ""},
		{`, "ls_init_value": null, "pool_type": "tok"`, `, "pool_type": "argmax", "proj_bias": false`, ""},
		{`, "ls_init_value": 0.1`, "", "vision_cfg.ls_init_value"},
		{`, "attentional_pool": true`, "", "vision_cfg.attentional_pool"},
		{"", `, "pool_type": "last"`, "text_cfg.pool_type"},
		{"", `, "no_causal_mask": true`, "text_cfg.no_causal_mask"},
	} {
		c, err := parseOpenCLIPConfig([]byte(fmt.Sprintf(base, tc.vision, tc.text)))
		if tc.err == "" {
			if err != nil || c.Vision.Heads != 4 || c.Text.Intermediate != 32 || c.Vision.Act != "quick_gelu" {
				t.Errorf("%+v: %v %+v", tc, err, c)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v: error %v, want %q", tc, err, tc.err)
		}
	}
}
