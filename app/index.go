package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/internal/parallel"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/modelrole"
	"github.com/imagescope/imagescope/prompt"
	"github.com/imagescope/imagescope/thumbs"
)

// IndexSpec is how 'imagescope index' builds an image DB.
type IndexSpec struct {
	// Remote embeds with the configuration's embedder role instead of
	// in-process CLIP.
	Remote bool
	// Domain is the caption prompt set ("" or chat: general).
	Domain    string
	PromptDir string
	// NoCaptions skips captioning even with a captioner configured.
	NoCaptions bool
	// CaptionWorkers bounds concurrent captioner calls (0: what the
	// captioner's endpoints accept in total).
	CaptionWorkers int
	Batch          int
	Float16        bool
	Progress       gallery.Progress
	Log            *slog.Logger
	// ClipProgress reports hub downloads of the CLIP checkpoint.
	ClipProgress func(file string, done, total int64)
}

// Index captions and embeds src's images into its image DB. Only the
// roles it needs (captioner, and embedder when Remote) are opened.
func Index(ctx context.Context, cfg *config.Config, src *Source, spec IndexSpec) (*gallery.Summary, error) {
	log := spec.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dom := spec.Domain
	if dom == "" {
		dom = src.Domain
	}
	if dom == "" || dom == "chat" {
		dom = "general"
	}
	var emb gallery.Embedder
	if spec.Remote {
		rcfg, ok := cfg.Role(modelrole.Embedder)
		if !ok || !rcfg.Configured() {
			return nil, errors.New("remote embedding: no embedder role in the configuration")
		}
		c, err := llm.New(ctx, modelrole.Embedder, rcfg, nil, llm.Options{Logger: log})
		if err != nil {
			return nil, err
		}
		if emb, err = NewRemoteEmbedder(ctx, c); err != nil {
			return nil, err
		}
	} else {
		m, err := clip.Load(ctx, cfg.CLIP.Model, clip.Options{Threads: cfg.CLIP.Threads, Logger: log, Progress: spec.ClipProgress})
		if err != nil {
			return nil, err
		}
		emb = adapt.CLIP{Model: m}
	}
	db, err := gallery.Open(ctx, src.Path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if err := db.BindModel(ctx, emb.ModelID(), emb.Dim()); err != nil {
		return nil, err
	}
	opt := gallery.IndexOptions{Embedder: emb, EmbedBatch: spec.Batch, Float16: spec.Float16, Logger: log, Progress: spec.Progress}
	rcfg, capOK := cfg.Role(modelrole.Captioner)
	switch {
	case spec.NoCaptions:
		log.Info("captioning off (--no-captions): search will treat tau as 0 unless the DB already holds captions")
	case !capOK || !rcfg.Configured():
		log.Warn("no captioner configured: images are embedded without captions, and search treats tau as 0 (the caption term is dropped)")
	default:
		lib, err := prompt.Load(spec.PromptDir)
		if err != nil {
			return nil, err
		}
		if spec.Domain == "" && src.Spec.Split != nil && lib.Layout() == prompt.LayoutReference {
			// The reference layout's caption.txt of this benchmark, as eval uses.
			if dom, err = lib.DatasetDomain(src.Spec.Split.Name, dom); err != nil {
				return nil, fmt.Errorf("prompts %s: %w", spec.PromptDir, err)
			}
		}
		instr, err := lib.CaptionInstruction(dom)
		if err != nil {
			return nil, err
		}
		cache, err := OpenCache(cfg)
		if err != nil {
			return nil, err
		}
		if cache != nil {
			defer cache.Close()
		}
		c, err := llm.New(ctx, modelrole.Captioner, rcfg, cache, llm.Options{Logger: log})
		if err != nil {
			return nil, err
		}
		opt.Captioner = adapt.Captioner{Client: c, Instruction: instr}
		opt.CaptionModel = rcfg.CacheModelID()
		opt.CaptionPrompt = instr
		opt.CaptionWorkers = spec.CaptionWorkers
		if opt.CaptionWorkers == 0 {
			opt.CaptionWorkers = max(1, rcfg.MaxInFlight*len(rcfg.Endpoints))
		}
	}
	log.Info("index", "db", src.Path, "images", len(src.Items), "clip", emb.ModelID(), "dim", emb.Dim(), "captions", opt.Captioner != nil)
	sum, err := db.Index(ctx, src.Items, opt)
	if err != nil && errors.Is(err, context.Canceled) {
		err = fmt.Errorf("%w; committed images are kept, run the same command again to continue", err)
	}
	return sum, err
}

// RemoteEmbedder makes the embedder role (an OpenAI-compatible /embeddings
// server) a gallery.Embedder.
type RemoteEmbedder struct {
	c   *llm.Client
	dim int
}

// NewRemoteEmbedder probes the server once for the vector dimension.
func NewRemoteEmbedder(ctx context.Context, c *llm.Client) (*RemoteEmbedder, error) {
	v, err := c.EmbedText(ctx, "a photo")
	if err != nil {
		return nil, fmt.Errorf("remote embedder: probe: %w", err)
	}
	if len(v) == 0 {
		return nil, errors.New("remote embedder: probe returned an empty vector")
	}
	return &RemoteEmbedder{c: c, dim: len(v)}, nil
}

// ModelID is the embedder role's model id.
func (r *RemoteEmbedder) ModelID() string { return r.c.ModelID() }

// Dim is the vector dimension the probe returned.
func (r *RemoteEmbedder) Dim() int { return r.dim }

// EmbedTexts embeds texts in one request.
func (r *RemoteEmbedder) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	return r.c.EmbedTexts(ctx, texts)
}

// EmbedImageFiles embeds image files, one request each, concurrently.
func (r *RemoteEmbedder) EmbedImageFiles(ctx context.Context, paths []string) ([][]float32, []error, error) {
	vecs := make([][]float32, len(paths))
	errs := make([]error, len(paths))
	parallel.For(len(paths), len(paths), func(_, i int) {
		b, err := os.ReadFile(paths[i])
		if err != nil {
			errs[i] = err
			return
		}
		vecs[i], errs[i] = r.c.EmbedImageData(ctx, llm.ImageBytes(b, ""))
	})
	return vecs, errs, ctx.Err()
}

// MakeThumbs makes the web UI's thumbnails of src's images beside its
// image DB (once now rather than on first view), calling done after each
// image. It returns the summary and the thumbnail folder.
func MakeThumbs(ctx context.Context, src *Source, done func()) (thumbs.Summary, string, error) {
	st, err := thumbs.Open(thumbs.DirFor(src.Path), 0)
	if err != nil {
		return thumbs.Summary{}, "", err
	}
	files := make(map[string]string, len(src.Items))
	for _, it := range src.Items {
		files[it.Name] = it.Path
	}
	sum, err := st.PrepareAll(ctx, files, 0, done)
	return sum, st.Dir(), err
}
