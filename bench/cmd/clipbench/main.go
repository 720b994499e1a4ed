// Command clipbench is the Go side of bench/clip: it writes a randomly
// initialised CLIP checkpoint of real ViT-B/32 dimensions in the HF layout
// plus a set of benchmark inputs, and measures imagescope's embedding
// throughput on them.
//
//	clipbench gen --out DIR --images N --texts M
//	clipbench run --dir DIR --threads T [--batch B]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/imagescope/imagescope/clip"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: clipbench gen|run [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "clipbench:", err)
		os.Exit(1)
	}
}

// arch is the ViT-B/32 CLIP architecture (openai/clip-vit-base-patch32).
type arch struct {
	vw, vl, vh, vi, image, patch int
	tw, tl, th, ti, ctx, vocab   int
	proj                         int
}

var vitB32 = arch{768, 12, 12, 3072, 224, 32, 512, 12, 8, 2048, 77, 49408, 512}

func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	out := fs.String("out", "", "output directory")
	nImages := fs.Int("images", 64, "benchmark images")
	nTexts := fs.Int("texts", 256, "benchmark texts")
	seed := fs.Uint64("seed", 1, "random seed")
	fs.Parse(args)
	if *out == "" {
		return fmt.Errorf("gen: --out is required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	a := vitB32
	r := rand.New(rand.NewPCG(*seed, 0x5eed))
	var ts []clip.Tensor
	add := func(name string, data []float32, shape ...int) {
		ts = append(ts, clip.Tensor{Name: name, DType: "F32", Shape: shape, Data: data})
	}
	normal := func(n int, std float64) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(r.NormFloat64() * std)
		}
		return out
	}
	lnw := func(n int) []float32 {
		out := normal(n, 0.05)
		for i := range out {
			out[i]++
		}
		return out
	}
	layer := func(prefix string, w, inter int) {
		for _, p := range []string{"q", "k", "v", "out"} {
			add(prefix+".self_attn."+p+"_proj.weight", normal(w*w, 1/math.Sqrt(float64(w))), w, w)
			add(prefix+".self_attn."+p+"_proj.bias", normal(w, 0.02), w)
		}
		add(prefix+".layer_norm1.weight", lnw(w), w)
		add(prefix+".layer_norm1.bias", normal(w, 0.02), w)
		add(prefix+".layer_norm2.weight", lnw(w), w)
		add(prefix+".layer_norm2.bias", normal(w, 0.02), w)
		add(prefix+".mlp.fc1.weight", normal(inter*w, 1/math.Sqrt(float64(w))), inter, w)
		add(prefix+".mlp.fc1.bias", normal(inter, 0.02), inter)
		add(prefix+".mlp.fc2.weight", normal(w*inter, 1/math.Sqrt(float64(inter))), w, inter)
		add(prefix+".mlp.fc2.bias", normal(w, 0.02), w)
	}
	grid := a.image / a.patch
	add("vision_model.embeddings.class_embedding", normal(a.vw, 0.5), a.vw)
	add("vision_model.embeddings.patch_embedding.weight", normal(a.vw*3*a.patch*a.patch, 1/math.Sqrt(float64(3*a.patch*a.patch))), a.vw, 3, a.patch, a.patch)
	add("vision_model.embeddings.position_embedding.weight", normal((grid*grid+1)*a.vw, 0.5), grid*grid+1, a.vw)
	add("vision_model.pre_layrnorm.weight", lnw(a.vw), a.vw)
	add("vision_model.pre_layrnorm.bias", normal(a.vw, 0.02), a.vw)
	for i := 0; i < a.vl; i++ {
		layer(fmt.Sprintf("vision_model.encoder.layers.%d", i), a.vw, a.vi)
	}
	add("vision_model.post_layernorm.weight", lnw(a.vw), a.vw)
	add("vision_model.post_layernorm.bias", normal(a.vw, 0.02), a.vw)
	add("visual_projection.weight", normal(a.proj*a.vw, 1/math.Sqrt(float64(a.vw))), a.proj, a.vw)
	add("text_model.embeddings.token_embedding.weight", normal(a.vocab*a.tw, 0.5), a.vocab, a.tw)
	add("text_model.embeddings.position_embedding.weight", normal(a.ctx*a.tw, 0.5), a.ctx, a.tw)
	for i := 0; i < a.tl; i++ {
		layer(fmt.Sprintf("text_model.encoder.layers.%d", i), a.tw, a.ti)
	}
	add("text_model.final_layer_norm.weight", lnw(a.tw), a.tw)
	add("text_model.final_layer_norm.bias", normal(a.tw, 0.02), a.tw)
	add("text_projection.weight", normal(a.proj*a.tw, 1/math.Sqrt(float64(a.tw))), a.proj, a.tw)
	add("logit_scale", []float32{float32(math.Log(100))})
	if err := writeST(filepath.Join(*out, "model.safetensors"), ts); err != nil {
		return err
	}
	cfg := map[string]any{
		"architectures": []string{"CLIPModel"}, "model_type": "clip", "projection_dim": a.proj,
		"text_config": map[string]any{"hidden_size": a.tw, "intermediate_size": a.ti, "num_attention_heads": a.th,
			"num_hidden_layers": a.tl, "max_position_embeddings": a.ctx, "vocab_size": a.vocab,
			"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407},
		"vision_config": map[string]any{"hidden_size": a.vw, "intermediate_size": a.vi, "num_attention_heads": a.vh,
			"num_hidden_layers": a.vl, "image_size": a.image, "patch_size": a.patch, "num_channels": 3,
			"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
	}
	cj, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(filepath.Join(*out, "config.json"), cj, 0o644); err != nil {
		return err
	}
	// Inputs: normalised-pixel-like images and token sequences with
	// caption-like lengths (5..30 tokens), stored as float32.
	pixels := normal(*nImages*3*a.image*a.image, 1)
	ids := make([]float32, *nTexts*a.ctx)
	for i := 0; i < *nTexts; i++ {
		n := 5 + r.IntN(26)
		row := ids[i*a.ctx : (i+1)*a.ctx]
		row[0] = 49406
		for j := 1; j <= n; j++ {
			row[j] = float32(r.IntN(49400))
		}
		row[n+1] = 49407
	}
	return writeST(filepath.Join(*out, "inputs.safetensors"), []clip.Tensor{
		{Name: "pixels", DType: "F32", Shape: []int{*nImages, 3, a.image, a.image}, Data: pixels},
		{Name: "ids", DType: "F32", Shape: []int{*nTexts, a.ctx}, Data: ids},
	})
}

func writeST(path string, ts []clip.Tensor) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := clip.WriteSafetensors(w, ts); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	dir := fs.String("dir", "", "directory written by gen")
	threads := fs.Int("threads", runtime.NumCPU(), "threads")
	batch := fs.Int("batch", 32, "images/texts per call")
	rounds := fs.Int("rounds", 1, "timed passes over the inputs (best is reported)")
	cpuprof := fs.String("cpuprofile", "", "write a CPU profile")
	fs.Parse(args)
	ctx := context.Background()
	m, err := clip.Load(ctx, *dir, clip.Options{Threads: *threads})
	if err != nil {
		return err
	}
	in, err := clip.ReadSafetensorsFloat32(filepath.Join(*dir, "inputs.safetensors"))
	if err != nil {
		return err
	}
	px, idsF := in["pixels"], in["ids"]
	S := m.Config().ImageSize
	C := m.Config().ContextLength
	nImg, nTxt := len(px)/(3*S*S), len(idsF)/C
	images := make([][]float32, nImg)
	for i := range images {
		images[i] = px[i*3*S*S : (i+1)*3*S*S]
	}
	texts := make([][]int32, nTxt)
	for i := range texts {
		texts[i] = make([]int32, C)
		for j := range texts[i] {
			texts[i][j] = int32(idsF[i*C+j])
		}
	}
	// Warm up (page in weights, grow heaps).
	if _, err := m.EmbedPixels(ctx, images[:min(2, nImg)]); err != nil {
		return err
	}
	if _, err := m.EmbedTokenIDs(ctx, texts[:min(8, nTxt)]); err != nil {
		return err
	}
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var imgEmb, txtEmb [][]float32
	bestImg, bestTxt := math.Inf(1), math.Inf(1)
	for round := 0; round < *rounds; round++ {
		t0 := time.Now()
		imgEmb = imgEmb[:0]
		for lo := 0; lo < nImg; lo += *batch {
			e, err := m.EmbedPixels(ctx, images[lo:min(lo+*batch, nImg)])
			if err != nil {
				return err
			}
			imgEmb = append(imgEmb, e...)
		}
		bestImg = min(bestImg, time.Since(t0).Seconds())
		t0 = time.Now()
		txtEmb = txtEmb[:0]
		for lo := 0; lo < nTxt; lo += *batch {
			e, err := m.EmbedTokenIDs(ctx, texts[lo:min(lo+*batch, nTxt)])
			if err != nil {
				return err
			}
			txtEmb = append(txtEmb, e...)
		}
		bestTxt = min(bestTxt, time.Since(t0).Seconds())
	}
	D := m.Dim()
	flatten := func(v [][]float32) []float32 {
		out := make([]float32, 0, len(v)*D)
		for _, x := range v {
			out = append(out, x...)
		}
		return out
	}
	if err := writeST(filepath.Join(*dir, "go_embeds.safetensors"), []clip.Tensor{
		{Name: "image_embeds", DType: "F32", Shape: []int{nImg, D}, Data: flatten(imgEmb)},
		{Name: "text_embeds", DType: "F32", Shape: []int{nTxt, D}, Data: flatten(txtEmb)},
	}); err != nil {
		return err
	}
	fmt.Printf("imagescope backend=%s threads=%d images/s=%.2f texts/s=%.2f\n",
		clip.KernelBackend(), *threads, float64(nImg)/bestImg, float64(nTxt)/bestTxt)
	return nil
}
