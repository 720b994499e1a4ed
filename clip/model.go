// Package clip is an in-process CLIP encoder: it loads HuggingFace or
// open_clip checkpoints (safetensors, or PyTorch .bin zips read by a
// restricted unpickler; float32/float16/bfloat16) and embeds
// texts and images on the CPU with the kernels of package linalg.
package clip

import (
	"context"
	"fmt"
	"image"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/imagescope/imagescope/hfhub"
	"github.com/imagescope/imagescope/internal/parallel"
	"github.com/imagescope/imagescope/linalg"
)

// DefaultModel is the model used when none is named.
const DefaultModel = "openai/clip-vit-base-patch32"

// Options configure Load.
type Options struct {
	// Threads bounds the goroutines used by one call (0: all CPUs).
	Threads int
	// Hub resolves HuggingFace model ids (nil: a client configured from the
	// environment: HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE).
	Hub *hfhub.Client
	// Logger receives load progress (nil: discard).
	Logger *slog.Logger
	// Progress reports download progress of hub files.
	Progress func(file string, done, total int64)
	// Layout forces a checkpoint layout (LayoutHF or LayoutOpenCLIP); empty
	// picks HF when config.json and model.safetensors exist, else open_clip.
	Layout string
	// Revision is the hub revision for ids (empty: "main").
	Revision string
}

// Model is a loaded CLIP model. It is safe for concurrent use.
type Model struct {
	id         string
	dir        string
	layout     string
	cfg        Config
	vision     *visionTower
	text       *textTower
	logitScale float32
	threads    int
	log        *slog.Logger

	// workspaces recycles forward-pass buffers between calls.
	workspaces sync.Pool

	tok  *Tokenizer
	proc imageProcessor
	// decode reads an image file (format sniffing, size limit, EXIF).
	decode func(path string) (image.Image, error)
}

// imageProcessor turns a decoded image into the CHW float tensor the vision
// tower expects.
type imageProcessor interface {
	Pixels(img image.Image) []float32
}

// Config returns the model's architecture.
func (m *Model) Config() Config { return m.cfg }

// ID is the hub id the model was loaded by, or its cleaned directory path.
func (m *Model) ID() string { return m.id }

// Dim is the dimension of the projected embeddings.
func (m *Model) Dim() int { return m.cfg.ProjectionDim }

// Dir is the local directory the checkpoint was read from.
func (m *Model) Dir() string { return m.dir }

// Layout is the checkpoint layout that was read (LayoutHF or LayoutOpenCLIP).
func (m *Model) Layout() string { return m.layout }

// LogitScale is exp(logit_scale), the multiplier of cosine similarities.
func (m *Model) LogitScale() float32 { return m.logitScale }

// Threads is the number of goroutines one call uses.
func (m *Model) Threads() int { return m.threads }

// firstFile returns the path of the first of names that exists in dir ("" if none).
func firstFile(dir string, names ...string) string {
	for _, n := range names {
		if p := filepath.Join(dir, n); existsFile(p) {
			return p
		}
	}
	return ""
}

func existsFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// loadLocal reads the weights and config of a checkpoint directory (not the
// tokenizer or image processor).
func loadLocal(dir string, opt Options) (*Model, error) {
	layout := opt.Layout
	hfCfg, ocCfg := filepath.Join(dir, "config.json"), filepath.Join(dir, "open_clip_config.json")
	// Weights: safetensors first, then the PyTorch (pickle) checkpoint.
	hfW := firstFile(dir, "model.safetensors", "pytorch_model.bin")
	ocW := firstFile(dir, "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
	if layout == "" {
		switch {
		case existsFile(hfCfg) && hfW != "":
			layout = LayoutHF
		case ocW != "" && (existsFile(ocCfg) || existsFile(hfCfg)):
			layout = LayoutOpenCLIP
		default:
			return nil, fmt.Errorf("%s: no CLIP checkpoint found (want config.json + model.safetensors or pytorch_model.bin, or open_clip_config.json + open_clip_model.safetensors or open_clip_pytorch_model.bin)", dir)
		}
	}
	var cfg *Config
	var wpath string
	var err error
	switch layout {
	case LayoutHF:
		cfg, err = readConfig(hfCfg, parseHFConfig)
		wpath = hfW
		if wpath == "" {
			wpath = filepath.Join(dir, "model.safetensors")
		}
	case LayoutOpenCLIP:
		if existsFile(ocCfg) {
			cfg, err = readConfig(ocCfg, parseOpenCLIPConfig)
		} else {
			cfg, err = readConfig(hfCfg, parseHFConfig)
		}
		wpath = ocW
		if wpath == "" {
			wpath = filepath.Join(dir, "open_clip_model.safetensors")
		}
	default:
		return nil, fmt.Errorf("unknown checkpoint layout %q (want %q or %q)", layout, LayoutHF, LayoutOpenCLIP)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	open := openSafetensors
	if strings.HasSuffix(wpath, ".bin") {
		open = openPyTorch
	}
	st, err := open(wpath)
	if err != nil {
		return nil, fmt.Errorf("open weights: %w", err)
	}
	defer st.Close()
	v, t, scale, err := loadWeights(st, layout, cfg)
	if err != nil {
		return nil, fmt.Errorf("load weights: %w", err)
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Model{
		id: filepath.Clean(dir), dir: dir, layout: layout, cfg: *cfg,
		vision: v, text: t, logitScale: float32(math.Exp(float64(scale))),
		threads: parallel.Workers(opt.Threads), log: log,
	}, nil
}

// EmbedTokenIDs embeds already tokenised texts. Each ids slice holds at most
// the context length of ids (sot, tokens, eot, optional padding); the pooled
// position is the first occurrence of the largest id (the end token).
// Results are projected, not normalised.
func (m *Model) EmbedTokenIDs(ctx context.Context, ids [][]int32) ([][]float32, error) {
	eots := make([]int, len(ids))
	for i, s := range ids {
		eots[i] = eotIndex(s)
	}
	_, emb, err := m.textBatches(ctx, ids, eots, false, nil)
	return emb, err
}

// EmbedPixels embeds preprocessed images (CHW float32, channels x size x
// size as in Config). Results are projected, not normalised.
func (m *Model) EmbedPixels(ctx context.Context, pixels [][]float32) ([][]float32, error) {
	_, emb, err := m.imageBatches(ctx, pixels, nil)
	return emb, err
}

// imageBatchSize is how many images one forward pass carries: enough rows
// to keep the matrix kernels busy, bounded memory for large towers.
func (m *Model) imageBatchSize() int {
	n := 2048 / m.vision.tokens
	return max(1, min(n, 32))
}

func split(flat []float32, n, d int) [][]float32 {
	out := make([][]float32, n)
	for i := range out {
		out[i] = flat[i*d : (i+1)*d : (i+1)*d]
	}
	return out
}

func (m *Model) imageBatches(ctx context.Context, pixels [][]float32, trace traceFunc) (pooled, embeds [][]float32, err error) {
	bs := m.imageBatchSize()
	W, D := m.cfg.Vision.Width, m.cfg.ProjectionDim
	for lo := 0; lo < len(pixels); lo += bs {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		hi := min(lo+bs, len(pixels))
		ws := m.getWorkspace()
		p, e, err := m.vision.forward(ctx, pixels[lo:hi], D, m.threads, trace, ws)
		m.putWorkspace(ws)
		if err != nil {
			return nil, nil, err
		}
		pooled = append(pooled, split(p, hi-lo, W)...)
		embeds = append(embeds, split(e, hi-lo, D)...)
	}
	return pooled, embeds, nil
}

// textBatchTokens bounds the token rows of one text forward pass.
const textBatchTokens = 4096

func (m *Model) textBatches(ctx context.Context, ids [][]int32, eots []int, full bool, trace traceFunc) (pooled, embeds [][]float32, err error) {
	W, D := m.cfg.Text.Width, m.cfg.ProjectionDim
	for lo := 0; lo < len(ids); {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		hi, rows := lo, 0
		for hi < len(ids) && (hi == lo || rows+eots[hi]+1 <= textBatchTokens) {
			rows += eots[hi] + 1
			hi++
		}
		ws := m.getWorkspace()
		p, e, err := m.text.forward(ctx, ids[lo:hi], eots[lo:hi], D, full, m.threads, trace, ws)
		m.putWorkspace(ws)
		if err != nil {
			return nil, nil, err
		}
		pooled = append(pooled, split(p, hi-lo, W)...)
		embeds = append(embeds, split(e, hi-lo, D)...)
		lo = hi
	}
	return pooled, embeds, nil
}

// KernelBackend names the matrix-multiply backend compiled in ("go" or
// "openblas").
func KernelBackend() string { return linalg.Backend }

func (m *Model) getWorkspace() *workspace {
	if ws, ok := m.workspaces.Get().(*workspace); ok {
		return ws
	}
	return &workspace{}
}

func (m *Model) putWorkspace(ws *workspace) { m.workspaces.Put(ws) }
