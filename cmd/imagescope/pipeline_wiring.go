package main

// Wiring of the pipeline engine to the concrete packages (config, llm,
// clip, gallery, vindex), shared by 'eval' and 'search'.

import (
	"bytes"
	"context"
	"fmt"
	"github.com/imagescope/imagescope/internal/progress"
	"image"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/imageio"
	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/prompt"
	evalrun "github.com/imagescope/imagescope/run"
	"github.com/imagescope/imagescope/vindex"
)

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
	return adapt.Chatter{Role: name, Client: c}
}

// names lists the configured roles in pipeline order (the proposer when
// the reasoner stands in for it).
func (r *roleClients) names() []string {
	var out []string
	for _, n := range []string{pipeline.RoleCaptioner, pipeline.RoleReasoner, pipeline.RoleProposer, pipeline.RoleVerifier, pipeline.RoleEvaluator} {
		_, ok := r.clients[n]
		if !ok && n == pipeline.RoleProposer {
			_, ok = r.clients[pipeline.RoleReasoner]
		}
		if ok {
			out = append(out, n)
		}
	}
	return out
}

// counters are the llm clients' counters for the run report.
func (r *roleClients) counters() map[string]evalrun.ModelCounters {
	out := map[string]evalrun.ModelCounters{}
	for k, s := range r.stats() {
		out[k] = evalrun.ModelCounters{Calls: s.Calls, CacheHits: s.CacheHits, Shared: s.Shared, CacheMisses: s.CacheMisses,
			Failures: s.Failures, Requests: s.Requests, Retries: s.Retries, CutOff: s.CutOff, Truncated: s.Truncated}
	}
	return out
}

// Stats returns the llm clients' counters.
func (r *roleClients) stats() map[string]llm.Stats {
	out := map[string]llm.Stats{}
	for k, c := range r.clients {
		out[k] = c.Stats()
	}
	return out
}

// openRoles opens the clients; interactive ones (serve, search) fail fast
// while a role's breakers are open so the search can degrade, batch ones
// ride out outages up to the role's down_after window.
func openRoles(ctx context.Context, cfg *config.Config, log *slog.Logger, interactive bool) (*roleClients, error) {
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
	for _, name := range pipeline.ChatRoles() {
		rcfg, ok := cfg.Role(name)
		if !ok || !rcfg.Configured() {
			continue
		}
		c, err := llm.New(ctx, llm.Role(name), rcfg, rc.cache, llm.Options{Logger: log, Interactive: interactive})
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
	cfg   *config.Config
	roles *roleClients
	model *clip.Model
	index *vindex.Index
	// searcher and gallery, when set, replace the index (an external
	// vector engine such as Weaviate).
	searcher  pipeline.Searcher
	gallery   pipeline.Gallery
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
	var searcher pipeline.Searcher
	var gal pipeline.Gallery
	if s.searcher != nil {
		searcher, gal = s.searcher, s.gallery
	} else {
		ad := adapt.Index{Index: s.index}
		searcher, gal = ad, ad
	}
	return pipeline.New(pipeline.Config{
		Embedder:      adapt.CLIP{Model: s.model},
		ImageEmbedder: adapt.CLIP{Model: s.model},
		Searcher:      searcher,
		Gallery:       gal,
		Images:        s.images,
		Decode:        decodeImage,
		Roles: pipeline.Roles{
			Captioner:  s.roles.chatter(pipeline.RoleCaptioner),
			Reasoner:   s.roles.chatter(pipeline.RoleReasoner),
			Proposer:   s.roles.chatter(pipeline.RoleProposer),
			Questioner: s.roles.chatter(pipeline.RoleQuestioner),
			Verifier:   s.roles.chatter(pipeline.RoleVerifier),
			Evaluator:  s.roles.chatter(pipeline.RoleEvaluator),
		},
		Prompts: lib,
		Options: s.opt,
		Log:     s.log,
	})
}

// askOptions sizes asking back from the configuration's ask section.
func askOptions(cfg *config.Config, opt *pipeline.Options) {
	if cfg.Ask.Questions > 0 {
		opt.AskQuestions = cfg.Ask.Questions
	}
	if cfg.Ask.Probe > 0 {
		opt.AskProbe = cfg.Ask.Probe
	}
}

// inFlightFromConfig bounds the pipeline's concurrent calls per role by
// what the role's endpoints accept in total.
func inFlightFromConfig(cfg *config.Config) map[string]int {
	out := map[string]int{}
	for _, name := range pipeline.ChatRoles() {
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
	opt := gallery.IndexOptions{Embedder: adapt.CLIP{Model: model}, Logger: e.log}
	captionKey := gallery.NoCaptions
	if c, ok := roles.clients[pipeline.RoleCaptioner]; ok {
		instr, err := lib.CaptionInstruction(domain)
		if err != nil {
			return nil, gallery.LoadInfo{}, err
		}
		rcfg, _ := cfg.Role(pipeline.RoleCaptioner)
		opt.Captioner = adapt.Captioner{Client: c, Instruction: instr}
		opt.CaptionModel = rcfg.CacheModelID()
		opt.CaptionPrompt = instr
		captionKey = gallery.CaptionKey(opt.CaptionModel, instr)
	}
	if len(items) > 0 {
		// The same progress bar as 'imagescope index'.
		bar := progress.New(e.stderr, "index "+strings.TrimSuffix(filepath.Base(dbPath), ".db"), int64(len(items)), progress.Options{Unit: "images", Logger: e.log})
		opt.Progress = bar
		sum, err := db.Index(ctx, items, opt)
		bar.Finish()
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
