package main

// Wiring of the pipeline engine to the concrete packages (config, llm,
// clip, gallery, vindex), shared by 'eval' and 'search'.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/imageio"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/prompt"
	"github.com/imagescope/imagescope/vindex"
)

// chatAdapter makes an llm.Client a pipeline.Chatter.
type chatAdapter struct {
	role string
	c    *llm.Client
}

func (a chatAdapter) Chat(ctx context.Context, req pipeline.ChatRequest) (*pipeline.ChatResponse, error) {
	lr := llm.ChatRequest{MaxTokens: req.MaxTokens, Stop: req.Stop, Logprobs: req.Logprobs, TopLogprobs: req.TopLogprobs, Extra: req.Extra}
	for _, m := range req.Messages {
		lm := llm.Message{Role: m.Role}
		for _, p := range m.Parts {
			if p.Image != nil {
				img := p.Image
				var li *llm.ImageData
				if img.Memo != nil {
					// One *llm.ImageData per image, so the client encodes it once.
					li = img.Memo.Get(func() any { return llm.ImageBytes(img.Bytes, img.MIME) }).(*llm.ImageData)
				} else {
					li = llm.ImageBytes(img.Bytes, img.MIME)
				}
				lm.Parts = append(lm.Parts, llm.ImagePart(li))
			} else {
				lm.Parts = append(lm.Parts, llm.TextPart(p.Text))
			}
		}
		lr.Messages = append(lr.Messages, lm)
	}
	resp, err := a.c.Chat(ctx, lr)
	if err != nil {
		if errors.Is(err, llm.ErrRoleDown) {
			return nil, &pipeline.RoleDownError{Role: a.role, Last: err}
		}
		return nil, err
	}
	out := &pipeline.ChatResponse{Text: resp.Text, FinishReason: resp.FinishReason, Cached: resp.Cached,
		PromptTokens: resp.Usage.PromptTokens, CompletionTokens: resp.Usage.CompletionTokens}
	if p, ok := resp.YesNo(); ok {
		out.PYes = &p
	}
	return out, nil
}

// clipText makes a clip.Model a pipeline.TextEmbedder.
type clipText struct{ m *clip.Model }

func (c clipText) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	res, err := c.m.EmbedTexts(ctx, texts)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, len(res))
	for i, r := range res {
		if r.Err != nil {
			return nil, fmt.Errorf("embed text %q: %w", texts[i], r.Err)
		}
		out[i] = r.Vector
	}
	return out, nil
}

// clipIndexer makes a clip.Model a gallery.Embedder.
type clipIndexer struct{ m *clip.Model }

func (c clipIndexer) ModelID() string { return c.m.ID() }
func (c clipIndexer) Dim() int        { return c.m.Dim() }
func (c clipIndexer) EmbedImageFiles(ctx context.Context, paths []string) ([][]float32, []error, error) {
	res, err := c.m.EmbedImageFiles(ctx, paths)
	if err != nil {
		return nil, nil, err
	}
	vecs := make([][]float32, len(res))
	errs := make([]error, len(res))
	for i, r := range res {
		vecs[i], errs[i] = r.Vector, r.Err
	}
	return vecs, errs, nil
}
func (c clipIndexer) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	return clipText(c).EmbedTexts(ctx, texts)
}

// llmCaptioner makes the captioner role a gallery.Captioner.
type llmCaptioner struct {
	c           *llm.Client
	instruction string
}

func (l llmCaptioner) Caption(ctx context.Context, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	resp, err := l.c.Chat(ctx, llm.ChatRequest{
		Messages:  []llm.Message{llm.UserImages(l.instruction, llm.ImageBytes(b, ""))},
		MaxTokens: 256,
		Extra:     map[string]any{"repetition_penalty": 1.05},
	})
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(resp.Text), nil
}

// indexAdapter makes a vindex.Index a pipeline.Searcher and Gallery.
type indexAdapter struct{ ix *vindex.Index }

func (a indexAdapter) Search(ctx context.Context, qs []pipeline.SearchQuery, k int) ([][]pipeline.Hit, error) {
	vq := make([]vindex.Query, len(qs))
	for i, q := range qs {
		vq[i] = vindex.Query{Descriptions: q.Descriptions, Tau: q.Tau, Restrict: q.Restrict, Exclude: q.Exclude}
	}
	res, err := a.ix.Search(ctx, vq, k)
	if err != nil {
		return nil, err
	}
	out := make([][]pipeline.Hit, len(res))
	for i, hs := range res {
		out[i] = make([]pipeline.Hit, len(hs))
		for j, h := range hs {
			out[i][j] = pipeline.Hit{Index: h.Index, Name: h.Name, Score: h.Score}
		}
	}
	return out, nil
}

func (a indexAdapter) Lookup(name string) (int, bool) { return a.ix.Position(name) }
func (a indexAdapter) HasCaptions() bool              { return a.ix.HasCaption }
func (a indexAdapter) Caption(name string) (string, bool) {
	i, ok := a.ix.Position(name)
	if !ok || i >= len(a.ix.Captions) || a.ix.Captions[i] == "" {
		return "", false
	}
	return a.ix.Captions[i], true
}

// fileImages serves images from files by gallery name.
type fileImages map[string]string

func (f fileImages) Image(ctx context.Context, name string) (pipeline.ImageData, error) {
	p, ok := f[name]
	if !ok {
		return pipeline.ImageData{}, fmt.Errorf("image %q: not in the gallery", name)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return pipeline.ImageData{}, fmt.Errorf("image %q: %w", name, err)
	}
	mt := mime.TypeByExtension(strings.ToLower(filepath.Ext(p)))
	if mt == "" {
		mt = http.DetectContentType(b)
	}
	return pipeline.ImageData{Bytes: b, MIME: mt}, nil
}

func decodeImage(b []byte) (image.Image, error) {
	img, _, err := imageio.Decode(bytes.NewReader(b), imageio.Limits{})
	return img, err
}

// roleClients opens the llm clients of every configured role.
type roleClients struct {
	cache   *llm.Cache
	clients map[string]*llm.Client
}

func (r *roleClients) close() {
	if r.cache != nil {
		r.cache.Close()
	}
}

func (r *roleClients) chatter(name string) pipeline.Chatter {
	c, ok := r.clients[name]
	if !ok {
		return nil
	}
	return chatAdapter{role: name, c: c}
}

// Stats returns the llm clients' counters.
func (r *roleClients) stats() map[string]llm.Stats {
	out := map[string]llm.Stats{}
	for k, c := range r.clients {
		out[k] = c.Stats()
	}
	return out
}

func openRoles(ctx context.Context, cfg *config.Config, log *slog.Logger) (*roleClients, error) {
	rc := &roleClients{clients: map[string]*llm.Client{}}
	if !cfg.Cache.Disabled {
		if err := os.MkdirAll(filepath.Dir(cfg.Cache.Path), 0o755); err != nil {
			return nil, fmt.Errorf("answer cache: %w", err)
		}
		c, err := llm.OpenCache(cfg.Cache.Path)
		if err != nil {
			return nil, fmt.Errorf("answer cache: %w", err)
		}
		rc.cache = c
	}
	for _, name := range []string{pipeline.RoleCaptioner, pipeline.RoleReasoner, pipeline.RoleProposer, pipeline.RoleVerifier, pipeline.RoleEvaluator} {
		rcfg, ok := cfg.Role(name)
		if !ok || !rcfg.Configured() {
			continue
		}
		c, err := llm.New(ctx, llm.Role(name), rcfg, rc.cache, llm.Options{Logger: log})
		if err != nil {
			rc.close()
			return nil, err
		}
		rc.clients[name] = c
	}
	return rc, nil
}

// engineSetup is what buildEngine needs.
type engineSetup struct {
	cfg       *config.Config
	roles     *roleClients
	model     *clip.Model
	index     *vindex.Index
	images    pipeline.ImageSource
	promptDir string
	opt       pipeline.Options
	log       *slog.Logger
}

func buildEngine(s engineSetup) (*pipeline.Engine, error) {
	lib, err := prompt.Load(s.promptDir)
	if err != nil {
		return nil, err
	}
	ad := indexAdapter{s.index}
	return pipeline.New(pipeline.Config{
		Embedder: clipText{s.model},
		Searcher: ad,
		Gallery:  ad,
		Images:   s.images,
		Decode:   decodeImage,
		Roles: pipeline.Roles{
			Captioner: s.roles.chatter(pipeline.RoleCaptioner),
			Reasoner:  s.roles.chatter(pipeline.RoleReasoner),
			Proposer:  s.roles.chatter(pipeline.RoleProposer),
			Verifier:  s.roles.chatter(pipeline.RoleVerifier),
			Evaluator: s.roles.chatter(pipeline.RoleEvaluator),
		},
		Prompts: lib,
		Options: s.opt,
		Log:     s.log,
	})
}

// inFlightFromConfig bounds the pipeline's concurrent calls per role by
// what the role's endpoints accept in total.
func inFlightFromConfig(cfg *config.Config) map[string]int {
	out := map[string]int{}
	for _, name := range []string{pipeline.RoleCaptioner, pipeline.RoleReasoner, pipeline.RoleProposer, pipeline.RoleVerifier, pipeline.RoleEvaluator} {
		r, ok := cfg.Role(name)
		if !ok || !r.Configured() {
			continue
		}
		out[name] = max(1, r.MaxInFlight*len(r.Endpoints))
	}
	return out
}

// loadGallery indexes items into the DB at dbPath (captioning with the
// captioner when configured) and loads the search index.
func loadGallery(ctx context.Context, e *env, cfg *config.Config, roles *roleClients, model *clip.Model, dbPath, domain string, items []gallery.Item, lib *prompt.Library) (*vindex.Index, gallery.LoadInfo, error) {
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o755); err != nil {
		return nil, gallery.LoadInfo{}, fmt.Errorf("image DB: %w", err)
	}
	db, err := gallery.Open(ctx, dbPath)
	if err != nil {
		return nil, gallery.LoadInfo{}, err
	}
	defer db.Close()
	opt := gallery.IndexOptions{Embedder: clipIndexer{model}, Logger: e.log}
	captionKey := gallery.NoCaptions
	if c, ok := roles.clients[pipeline.RoleCaptioner]; ok {
		instr, err := lib.CaptionInstruction(domain)
		if err != nil {
			return nil, gallery.LoadInfo{}, err
		}
		rcfg, _ := cfg.Role(pipeline.RoleCaptioner)
		opt.Captioner = llmCaptioner{c: c, instruction: instr}
		opt.CaptionModel = rcfg.CacheModelID()
		opt.CaptionPrompt = instr
		captionKey = gallery.CaptionKey(opt.CaptionModel, instr)
	}
	if len(items) > 0 {
		sum, err := db.Index(ctx, items, opt)
		if err != nil {
			return nil, gallery.LoadInfo{}, fmt.Errorf("index gallery into %s: %w", dbPath, err)
		}
		e.log.Info("image DB ready", "db", dbPath, "images", sum.Total, "new", sum.Done, "up_to_date", sum.UpToDate, "failed", sum.Failed)
	}
	if captionKey == gallery.NoCaptions {
		sets, err := db.CaptionSets(ctx)
		if err == nil && len(sets) > 0 && sets[0].Embedded > 0 {
			captionKey = sets[0].Key
			e.log.Info("no captioner configured; using the DB's caption set", "caption_set", captionKey)
		}
	}
	ix, info, err := db.LoadWithInfo(ctx, model.ID(), captionKey)
	if err != nil {
		return nil, info, fmt.Errorf("load image DB %s: %w", dbPath, err)
	}
	return ix, info, nil
}

func loadPrompts(dir string) (*prompt.Library, error) { return prompt.Load(dir) }
