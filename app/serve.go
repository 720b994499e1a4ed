package app

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/internal/progress"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/server"
	"github.com/imagescope/imagescope/thumbs"
)

// ServeSpec is a gallery to serve and how.
type ServeSpec struct {
	// Gallery is a folder, an image DB or a Weaviate collection. Single
	// searches at the default caption weight scan an 8-bit copy of the
	// fused gallery vectors first (results are exactly those of the full
	// scan), so Compact and Tau are set here.
	Gallery GallerySpec
	// PromptDir overrides the built-in prompts; Domain is the prompt set
	// of text and composed queries.
	PromptDir, Domain string
	// MaxStage is the last stage a search runs.
	MaxStage int
	// HTTP holds the server's own settings (image root, limits, token,
	// CORS, logger); the searcher, images, stages, thumbnails and model
	// reports are filled in.
	HTTP server.Config
	// OnIndex, when set, is told before a folder's images are indexed.
	OnIndex func(images int, db string)
}

// Serving is an opened gallery with the server over it. Close releases
// the gallery and the models.
type Serving struct {
	App     *App
	Gallery *Gallery
	Server  *server.Server
	// Stages are the stages as the server describes them.
	Stages []server.StageInfo
}

// Close releases the gallery and the models.
func (s *Serving) Close() {
	s.Gallery.Close()
	s.App.Close()
}

// OpenServe resolves and opens the gallery (indexing a folder first),
// makes its thumbnails (before serving a just indexed folder, else in the
// background), wires the engine and builds the server. o.Log and o.Bars
// receive the progress.
func OpenServe(ctx context.Context, cfg *config.Config, spec ServeSpec, o Options) (*Serving, error) {
	spec.Gallery.Compact, spec.Gallery.Tau = true, pipeline.DefaultOptions().Tau
	src, err := Resolve(ctx, cfg.Home, spec.Gallery)
	if err != nil {
		return nil, err
	}
	if o.Log != nil {
		o.Log.Info("loading CLIP", "model", cfg.CLIP.Model)
	}
	o.PromptDir, o.Interactive = spec.PromptDir, true
	a, err := Open(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	s := &Serving{App: a}
	if err := s.open(ctx, src, spec); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Serving) open(ctx context.Context, src *Source, spec ServeSpec) error {
	a := s.App
	if src.Items != nil && spec.OnIndex != nil {
		spec.OnIndex(len(src.Items), src.Path)
	}
	g, err := a.OpenGallery(ctx, src, spec.Domain)
	if err != nil {
		return err
	}
	s.Gallery = g
	if len(g.Index.Names) == 0 {
		return fmt.Errorf("image DB %s has no embedded images; run 'imagescope index' first", g.Where)
	}
	info := g.Info
	a.Log.Info("gallery loaded", "db", g.Where, "images", info.Images, "skipped", info.Skipped, "clip", info.ClipModel, "captions", info.CaptionKey != "", "from_cache", info.FromCache)
	if info.CacheNote != "" && spec.Gallery.Cache {
		a.Log.Info("search cache", "note", info.CacheNote)
	}
	thumbBase := g.Where
	if spec.Gallery.Weaviate != "" { // no DB file to keep them beside
		thumbBase = filepath.Join(a.Config.Home, "thumbs", "weaviate_"+spec.Gallery.Weaviate)
	}
	thumbStore, err := a.prepareThumbs(ctx, thumbBase, g.Images, spec.HTTP.MaxPixels, spec.Gallery.Folder != "")
	if err != nil {
		return err
	}
	opts := pipeline.DefaultOptions()
	opts.Depth = max(opts.Depth, server.DefaultMaxLimit) // the most results one request may ask for
	AskOptions(a.Config, &opts)
	engine, err := a.Engine(g, opts, nil)
	if err != nil {
		return err
	}
	searcher := server.NewEngineSearcher(engine, spec.Domain)
	searcher.MaxStage = spec.MaxStage
	s.Stages = serveStages(engine, spec.MaxStage)
	c := spec.HTTP
	c.Searcher, c.Images, c.Stages, c.Ask, c.Thumbs = searcher, g.Images, s.Stages, server.EngineAskInfo(engine), thumbStore
	c.ModelStats = func() []server.RoleStats { return serveModelStats(a.Roles) }
	c.RoleEndpoints = func() map[string][]server.EndpointState { return serveRoleEndpoints(a.Roles) }
	c.Description = src.Title
	s.Server, err = server.New(c)
	return err
}

// serveStages describes the engine's stages, those after maxStage as not
// requested.
func serveStages(engine *pipeline.Engine, maxStage int) []server.StageInfo {
	stages := server.EngineStages(engine)
	stageNumber := map[string]int{server.StageReason: 1, server.StageRetrieve: 1, server.StageVerify: 2, server.StageEvaluate: 3}
	for i, st := range stages {
		if stageNumber[st.Name] > maxStage && st.Configured {
			stages[i].Configured = false
			stages[i].Reason = fmt.Sprintf("not requested (serve --max-stage %d)", maxStage)
		}
	}
	return stages
}

// serveModelStats reports the model clients' counters per role.
func serveModelStats(roles *Roles) []server.RoleStats {
	var out []server.RoleStats
	for role, st := range roles.Stats() {
		out = append(out, server.RoleStats{Role: role, Calls: st.Calls, CacheHits: st.CacheHits,
			CacheMisses: st.CacheMisses, Failures: st.Failures, Retries: st.Retries})
	}
	return out
}

// serveRoleEndpoints reports the circuit breaker of every endpoint per role.
func serveRoleEndpoints(roles *Roles) map[string][]server.EndpointState {
	out := map[string][]server.EndpointState{}
	for role, st := range roles.Stats() {
		for _, e := range st.Endpoints {
			out[role] = append(out[role], server.EndpointState{URL: e.URL, Status: e.Breaker})
		}
	}
	return out
}

// prepareThumbs opens the thumbnail store kept beside base and makes the
// thumbnails that are missing: before serving when the gallery was just
// indexed (wait), else in the background while the server already
// answers.
func (a *App) prepareThumbs(ctx context.Context, base string, images map[string]string, maxPixels int64, wait bool) (*thumbs.Store, error) {
	st, err := thumbs.Open(thumbs.DirFor(base), maxPixels)
	if err != nil {
		return nil, err
	}
	bars, log := a.bars, a.Log
	if bars == nil {
		bars = io.Discard
	}
	run := func() {
		bar := progress.New(bars, "thumbnails", int64(len(images)), progress.Options{Unit: "images", Logger: log})
		sum, err := st.PrepareAll(ctx, images, 0, func() { bar.Add(1) })
		bar.Finish()
		log.Info("thumbnails ready", "dir", st.Dir(), "made", sum.Made, "up_to_date", sum.UpToDate, "failed", sum.Failed, "err", err)
		for _, ferr := range sum.Errors {
			log.Warn("thumbnail failed", "err", ferr)
		}
	}
	if wait {
		run()
	} else {
		go run()
	}
	return st, nil
}
