package clip

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// benchDir holds checkpoints written by benchmarks; TestMain removes it.
var benchDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// vitB32 writes a randomly initialised checkpoint with the dimensions of
// openai/clip-vit-base-patch32 (the real per-image and per-text cost) into
// a temporary folder, once per test binary.
var vitB32 = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "clip-vitb32-")
	if err != nil {
		return "", err
	}
	benchDir = dir
	const (
		vw, vl, vh, vi, image, patch = 768, 12, 12, 3072, 224, 32
		tw, tl, th, ti, ctx, vocab   = 512, 12, 8, 2048, 77, 49408
		proj                         = 512
	)
	cfg := map[string]any{
		"model_type": "clip", "projection_dim": proj,
		"text_config":   map[string]any{"hidden_size": tw, "intermediate_size": ti, "num_attention_heads": th, "num_hidden_layers": tl, "max_position_embeddings": ctx, "vocab_size": vocab, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
		"vision_config": map[string]any{"hidden_size": vw, "intermediate_size": vi, "num_attention_heads": vh, "num_hidden_layers": vl, "image_size": image, "patch_size": patch, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
	}
	r := rand.New(rand.NewPCG(1, 32))
	var ts []Tensor
	add := func(name string, s float64, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(r.NormFloat64() * s)
		}
		if s == 0 { // layer-norm gains
			for i := range d {
				d[i] = 1
			}
		}
		ts = append(ts, Tensor{Name: name, DType: "F32", Shape: shape, Data: d})
	}
	layer := func(prefix string, w, inter int) {
		for _, p := range []string{"q", "k", "v", "out"} {
			add(prefix+".self_attn."+p+"_proj.weight", 1/math.Sqrt(float64(w)), w, w)
			add(prefix+".self_attn."+p+"_proj.bias", 0.02, w)
		}
		add(prefix+".layer_norm1.weight", 0, w)
		add(prefix+".layer_norm1.bias", 0.02, w)
		add(prefix+".layer_norm2.weight", 0, w)
		add(prefix+".layer_norm2.bias", 0.02, w)
		add(prefix+".mlp.fc1.weight", 1/math.Sqrt(float64(w)), inter, w)
		add(prefix+".mlp.fc1.bias", 0.02, inter)
		add(prefix+".mlp.fc2.weight", 1/math.Sqrt(float64(inter)), w, inter)
		add(prefix+".mlp.fc2.bias", 0.02, w)
	}
	for i := 0; i < vl; i++ {
		layer(fmt.Sprintf("vision_model.encoder.layers.%d", i), vw, vi)
	}
	for i := 0; i < tl; i++ {
		layer(fmt.Sprintf("text_model.encoder.layers.%d", i), tw, ti)
	}
	tokens := (image/patch)*(image/patch) + 1
	add("vision_model.embeddings.class_embedding", 0.5, vw)
	add("vision_model.embeddings.patch_embedding.weight", 1/math.Sqrt(3*patch*patch), vw, 3, patch, patch)
	add("vision_model.embeddings.position_embedding.weight", 0.5, tokens, vw)
	add("vision_model.pre_layrnorm.weight", 0, vw)
	add("vision_model.pre_layrnorm.bias", 0.02, vw)
	add("vision_model.post_layernorm.weight", 0, vw)
	add("vision_model.post_layernorm.bias", 0.02, vw)
	add("visual_projection.weight", 1/math.Sqrt(vw), proj, vw)
	add("text_model.embeddings.token_embedding.weight", 0.5, vocab, tw)
	add("text_model.embeddings.position_embedding.weight", 0.5, ctx, tw)
	add("text_model.final_layer_norm.weight", 0, tw)
	add("text_model.final_layer_norm.bias", 0.02, tw)
	add("text_projection.weight", 1/math.Sqrt(tw), proj, tw)
	add("logit_scale", 0)
	f, err := os.Create(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return "", err
	}
	if err := WriteSafetensors(f, ts); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	cj, _ := json.Marshal(cfg)
	return dir, os.WriteFile(filepath.Join(dir, "config.json"), cj, 0o644)
})

func benchModel(b *testing.B, threads int) *Model {
	dir, err := vitB32()
	if err != nil {
		b.Fatal(err)
	}
	m, err := Load(context.Background(), dir, Options{Threads: threads})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkImageForward is the ViT-B/32 image tower on a batch of 8
// preprocessed 224x224 images (random weights, real cost).
func BenchmarkImageForward(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			m := benchModel(b, threads)
			r := rand.New(rand.NewPCG(2, 2))
			px := make([][]float32, 8)
			for i := range px {
				px[i] = make([]float32, 3*224*224)
				for j := range px[i] {
					px[i][j] = float32(r.NormFloat64())
				}
			}
			for b.Loop() {
				if _, err := m.EmbedPixels(context.Background(), px); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(px)*b.N)/b.Elapsed().Seconds(), "images/s")
		})
	}
}

// BenchmarkTextForward is the ViT-B/32 text tower on a batch of 32 token
// sequences of 8 to 40 tokens (each computed to its own end).
func BenchmarkTextForward(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			m := benchModel(b, threads)
			r := rand.New(rand.NewPCG(3, 3))
			ids := make([][]int32, 32)
			tokens := 0
			for i := range ids {
				n := 8 + r.IntN(33)
				ids[i] = make([]int32, n)
				ids[i][0] = 49406
				for j := 1; j < n-1; j++ {
					ids[i][j] = int32(r.IntN(49000))
				}
				ids[i][n-1] = 49407
				tokens += n
			}
			for b.Loop() {
				if _, err := m.EmbedTokenIDs(context.Background(), ids); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(ids)*b.N)/b.Elapsed().Seconds(), "texts/s")
			b.ReportMetric(float64(tokens*b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
