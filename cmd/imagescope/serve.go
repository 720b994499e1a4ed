package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/server"
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
	var origins []string
	for _, o := range strings.Split(*cors, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	s, err := app.OpenServe(ctx, cfg, app.ServeSpec{
		Gallery: app.GallerySpec{Folder: *galleryDir, DB: *dbPath, Weaviate: *wvCollection, CaptionKey: ck, Fuse: *fuse,
			Cache: *cache || *onDisk, VectorsOnDisk: *onDisk},
		PromptDir: *promptDir, Domain: *domain, MaxStage: *maxStage,
		HTTP: server.Config{ImageRoot: *imageRoot, Token: *token, CORSOrigins: origins, MaxUploadBytes: int64(*maxUploadMB) << 20,
			MaxPixels: *maxPixels, SearchTimeout: *timeout, MaxSearches: *maxSearches, Logger: e.log},
		OnIndex: func(n int, db string) {
			fmt.Fprintf(e.stderr, "imagescope serve: indexing %d images of %s into %s\n", n, *galleryDir, db)
		},
	}, app.Options{Log: e.log, Getenv: e.getenv, Bars: e.stderr})
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	url := "http://" + ln.Addr().String() + "/"
	fmt.Fprintf(e.stderr, "imagescope serve: %d images on %s\n", len(s.Gallery.Index.Names), url)
	for _, st := range s.Stages {
		if !st.Configured {
			fmt.Fprintf(e.stderr, "  stage %s skipped: %s\n", st.Name, st.Reason)
		}
	}
	if *token != "" {
		fmt.Fprintln(e.stderr, "  API calls need the bearer token")
	}
	return s.Server.Serve(ctx, ln)
}
