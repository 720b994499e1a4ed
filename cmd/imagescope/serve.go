package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/progress"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/server"
	"github.com/imagescope/imagescope/thumbs"
)

// runServe implements 'imagescope serve'.
func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "serve", "--db PATH | --gallery DIR | --weaviate COLLECTION [flags]", `
Serve the JSON API and the web UI over an indexed gallery: text-to-image,
composed (reference image + change) and chat retrieval, with each result's
explanation (descriptions, propositions and the verifier's answers, the
evaluator's verdict). Stages whose model role is not configured are skipped
and the UI says so.

--db serves an image DB built by 'imagescope index'. --gallery indexes a
plain folder first (CLIP embeddings, and captions when a captioner is
configured) into $IMAGESCOPE_HOME/db and serves it. --weaviate serves a
gallery held in a Weaviate collection (filled by 'imagescope index --queue ...
--weaviate'; server from the config's weaviate.url or $IMAGESCOPE_WEAVIATE_URL):
candidates come from Weaviate and are ranked with the exact fused score, and
the images are read from the paths stored with them.

The server binds to loopback by default. Binding elsewhere requires a bearer
token (--token or IMAGESCOPE_TOKEN), which every API call must then send as
"Authorization: Bearer <token>". The API is described at /api/openapi.json.`)
	dbPath := fs.String("db", "", "image DB to serve")
	galleryDir := fs.String("gallery", "", "plain image folder to index (if needed) and serve")
	wvCollection := fs.String("weaviate", "", "serve this Weaviate collection instead of an image DB")
	addr := fs.String("addr", "127.0.0.1:8080", "listen address (host:port)")
	cf := addConfigFlags(fs)
	captionKey := fs.String("caption-key", "", "caption set to use (default: the DB's first; \"none\" for none)")
	cache := fs.Bool("cache", false, "with --db: keep the loaded gallery in DB"+gallery.CacheSuffix+" beside the DB and start from it while the DB is unchanged (fast restarts of large galleries; costs that much disk)")
	onDisk := fs.Bool("vectors-on-disk", false, "with --db: keep the gallery's vectors in the search cache file (implies --cache) and read only the candidates' rows; the server then holds about a third of the image vectors' size (the 8-bit copy, names and captions), results unchanged")
	fuse := fs.Bool("fuse", false, "with --db: hold one matrix of fused image+caption vectors for the default tau (half the memory; requests with another tau are refused)")
	domain := fs.String("domain", "general", "prompt set for text and composed queries (general, cirr, fashion-dress, fashion-shirt, fashion-toptee)")
	maxStage := fs.Int("max-stage", 3, "last stage to run (1: reason + retrieve only, 2: + verify, 3: + evaluate)")
	token := fs.String("token", "", "bearer token required on every API call (default $IMAGESCOPE_TOKEN)")
	cors := fs.String("cors", "", "comma-separated origins allowed to call the API from a browser (\"*\" for any; default none)")
	maxUploadMB := fs.Int("max-upload-mb", server.DefaultMaxUploadBytes>>20, "largest accepted request body (upload), MiB")
	maxPixels := fs.Int64("max-pixels", server.DefaultMaxPixels, "largest accepted image, width x height (checked before decoding)")
	timeout := fs.Duration("search-timeout", server.DefaultSearchTimeout, "time limit of one search")
	maxSearches := fs.Int("max-searches", server.DefaultMaxSearches, "searches run at once (more wait in line)")
	noCache := fs.Bool("no-cache", false, "do not use the model answer cache")
	promptDir := fs.String("prompts", "", "folder of prompt templates overriding the built-in ones")
	imageRoot := fs.String("image-root", "", "folder every served image must resolve into (default: the deepest folder holding all gallery files)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	if btoi(*dbPath != "")+btoi(*galleryDir != "")+btoi(*wvCollection != "") != 1 {
		return usagef("give exactly one of --db PATH, --gallery DIR and --weaviate COLLECTION")
	}
	if *maxStage < 1 || *maxStage > 3 {
		return usagef("--max-stage %d: want 1, 2 or 3", *maxStage)
	}
	if *maxUploadMB < 1 {
		return usagef("--max-upload-mb %d: want at least 1", *maxUploadMB)
	}
	if *maxPixels < 1 {
		return usagef("--max-pixels %d: want at least 1", *maxPixels)
	}
	if *token == "" {
		*token = e.getenv("IMAGESCOPE_TOKEN")
	}
	if _, _, err := net.SplitHostPort(*addr); err != nil {
		return usagef("--addr %q: %v", *addr, err)
	}
	if !server.IsLoopback(*addr) && *token == "" {
		return usagef("--addr %s is not a loopback address: set --token or IMAGESCOPE_TOKEN so the API is not open to the network", *addr)
	}

	cfg, err := cf.load(e)
	if err != nil {
		return err
	}
	if *noCache {
		cfg.Cache.Disabled = true
	}
	if err := app.CheckDomain(*promptDir, *domain); err != nil {
		return usagef("--domain %q: %v", *domain, err)
	}
	ck := *captionKey
	if ck == "none" {
		ck = gallery.NoCaptions
	}
	src, err := app.Resolve(ctx, cfg.Home, app.GallerySpec{Folder: *galleryDir, DB: *dbPath, Weaviate: *wvCollection, CaptionKey: ck,
		// Single searches at the default caption weight scan an 8-bit copy
		// of the fused gallery vectors first; results are exactly those of
		// the full scan (vindex.Index.Compact).
		Fuse: *fuse, Compact: true, Cache: *cache || *onDisk, VectorsOnDisk: *onDisk, Tau: pipeline.DefaultOptions().Tau})
	if err != nil {
		return err
	}
	e.log.Info("loading CLIP", "model", cfg.CLIP.Model)
	a, err := app.Open(ctx, cfg, app.Options{PromptDir: *promptDir, Log: e.log, Getenv: e.getenv, Bars: e.stderr, Interactive: true})
	if err != nil {
		return err
	}
	defer a.Close()
	if src.Items != nil {
		fmt.Fprintf(e.stderr, "imagescope serve: indexing %d images of %s into %s\n", len(src.Items), *galleryDir, src.Path)
	}
	g, err := a.OpenGallery(ctx, src, *domain)
	if err != nil {
		return err
	}
	defer g.Close()
	ix, info := g.Index, g.Info
	if len(ix.Names) == 0 {
		return fmt.Errorf("image DB %s has no embedded images; run 'imagescope index' first", g.Where)
	}
	e.log.Info("gallery loaded", "db", g.Where, "images", info.Images, "skipped", info.Skipped, "clip", info.ClipModel, "captions", info.CaptionKey != "", "from_cache", info.FromCache)
	if info.CacheNote != "" && (*cache || *onDisk) {
		e.log.Info("search cache", "note", info.CacheNote)
	}
	thumbBase := g.Where
	if *wvCollection != "" { // no DB file to keep them beside
		thumbBase = filepath.Join(cfg.Home, "thumbs", "weaviate_"+*wvCollection)
	}
	thumbStore, err := prepareThumbs(ctx, e, thumbBase, g.Images, *maxPixels, *galleryDir != "")
	if err != nil {
		return err
	}
	opts := pipeline.DefaultOptions()
	opts.Depth = max(opts.Depth, server.DefaultMaxLimit) // the most results one request may ask for
	app.AskOptions(cfg, &opts)
	engine, err := a.Engine(g, opts, nil)
	if err != nil {
		return err
	}
	searcher := server.NewEngineSearcher(engine, *domain)
	searcher.MaxStage = *maxStage
	stages := server.EngineStages(engine)
	stageNumber := map[string]int{server.StageReason: 1, server.StageRetrieve: 1, server.StageVerify: 2, server.StageEvaluate: 3}
	for i, st := range stages {
		if stageNumber[st.Name] > *maxStage && st.Configured {
			stages[i].Configured = false
			stages[i].Reason = fmt.Sprintf("not requested (serve --max-stage %d)", *maxStage)
		}
	}
	var origins []string
	for _, o := range strings.Split(*cors, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	srv, err := server.New(server.Config{
		Searcher:       searcher,
		Images:         g.Images,
		ImageRoot:      *imageRoot,
		Token:          *token,
		CORSOrigins:    origins,
		MaxUploadBytes: int64(*maxUploadMB) << 20,
		MaxPixels:      *maxPixels,
		SearchTimeout:  *timeout,
		MaxSearches:    *maxSearches,
		Stages:         stages,
		Ask:            server.EngineAskInfo(engine),
		Thumbs:         thumbStore,
		ModelStats:     func() []server.RoleStats { return serveModelStats(a.Roles) },
		RoleEndpoints:  func() map[string][]server.EndpointState { return serveRoleEndpoints(a.Roles) },
		Description:    src.Title,
		Logger:         e.log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	url := "http://" + ln.Addr().String() + "/"
	fmt.Fprintf(e.stderr, "imagescope serve: %d images on %s\n", len(ix.Names), url)
	for _, st := range stages {
		if !st.Configured {
			fmt.Fprintf(e.stderr, "  stage %s skipped: %s\n", st.Name, st.Reason)
		}
	}
	if *token != "" {
		fmt.Fprintln(e.stderr, "  API calls need the bearer token")
	}
	return srv.Serve(ctx, ln)
}

// serveModelStats reports the model clients' counters per role.
func serveModelStats(roles *app.Roles) []server.RoleStats {
	var out []server.RoleStats
	for role, st := range roles.Stats() {
		out = append(out, server.RoleStats{Role: role, Calls: st.Calls, CacheHits: st.CacheHits,
			CacheMisses: st.CacheMisses, Failures: st.Failures, Retries: st.Retries})
	}
	return out
}

// prepareThumbs opens the DB's thumbnail store and makes the thumbnails
// that are missing: before serving when the gallery was just indexed
// (wait), else in the background while the server already answers.
func prepareThumbs(ctx context.Context, e *env, dbPath string, images map[string]string, maxPixels int64, wait bool) (*thumbs.Store, error) {
	st, err := thumbs.Open(thumbs.DirFor(dbPath), maxPixels)
	if err != nil {
		return nil, err
	}
	run := func() {
		bar := progress.New(e.stderr, "thumbnails", int64(len(images)), progress.Options{Unit: "images", Logger: e.log})
		sum, err := st.PrepareAll(ctx, images, 0, func() { bar.Add(1) })
		bar.Finish()
		e.log.Info("thumbnails ready", "dir", st.Dir(), "made", sum.Made, "up_to_date", sum.UpToDate, "failed", sum.Failed, "err", err)
		for _, ferr := range sum.Errors {
			e.log.Warn("thumbnail failed", "err", ferr)
		}
	}
	if wait {
		run()
	} else {
		go run()
	}
	return st, nil
}

// serveRoleEndpoints reports the circuit breaker of every endpoint per role.
func serveRoleEndpoints(roles *app.Roles) map[string][]server.EndpointState {
	out := map[string][]server.EndpointState{}
	for role, st := range roles.Stats() {
		for _, e := range st.Endpoints {
			out[role] = append(out[role], server.EndpointState{URL: e.URL, Status: e.Breaker})
		}
	}
	return out
}
