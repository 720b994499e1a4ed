package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/imagescope/imagescope/internal/adapt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/imagescope/imagescope/clip"
	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/progress"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/prompt"
	"github.com/imagescope/imagescope/thumbs"
)

// runIndex implements 'imagescope index'.
func runIndex(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "index", "--gallery DIR | --dataset NAME --data DIR --split SPLIT [--db PATH] [flags]",
		`Caption and embed a gallery into its image DB: a plain folder (recursive) or a
benchmark split's images. Captions come from the captioner role when one is
configured (otherwise the caption term of the score is dropped: tau is treated
as 0); embeddings from in-process CLIP (--clip) or the configured remote
embedder (--embedder remote). Captioning and embedding overlap.

Every finished image is committed at once: an interrupted run continues where
it stopped, and a re-run processes only new or changed files and drops deleted
ones. Images that cannot be read or decoded are recorded as failed (see
'imagescope db info') and skipped. The default DB is
$IMAGESCOPE_HOME/db/<dataset>_<split>.db (folders: folder_<name>_<hash>.db).`)
	galleryDir := fs.String("gallery", "", "image folder to index (recursive)")
	dsName := fs.String("dataset", "", "benchmark: CIRR, CIRCO, FashionIQ-dress|shirt|toptee, Flickr30K, MSCOCO, VisDial")
	data := fs.String("data", "", "benchmark data root (or the dataset's folder)")
	split := fs.String("split", "", "benchmark split: val | test")
	dbPath := fs.String("db", "", "image DB file (default under $IMAGESCOPE_HOME/db)")
	configPath := fs.String("config", "", "configuration file (default $IMAGESCOPE_CONFIG)")
	clipRef := fs.String("clip", "", "CLIP checkpoint directory or HuggingFace id (default from config, else "+clip.DefaultModel+")")
	threads := fs.Int("threads", 0, "CLIP threads (0: from config, else all cores)")
	embedder := fs.String("embedder", "clip", "embeddings from: clip (in-process) | remote (the config's embedder role)")
	noCaptions := fs.Bool("no-captions", false, "do not caption even when a captioner is configured")
	domain := fs.String("domain", "", "caption prompt set (default: the dataset's; folders: general)")
	promptDir := fs.String("prompts", "", "folder of prompt templates overriding the built-in ones (caption instruction), or of the reference implementation's prompt files")
	capWorkers := fs.Int("caption-workers", 0, "concurrent captioner calls (0: what the captioner endpoints accept)")
	batch := fs.Int("batch", 8, "images per embedding batch")
	float16 := fs.Bool("float16", false, "store new embeddings as float16 (half the size)")
	queueURL := fs.String("queue", "", "distribute the work through a NATS JetStream queue at this URL (see 'imagescope worker')")
	// Flags of the queue mode (parsed by runIndexQueue), listed here so that
	// --help shows every flag of the command.
	queueOnly := []string{"weaviate", "collection", "job", "status", "wait", "json", "model"}
	fs.String("weaviate", "", "with --queue: write to Weaviate at these node URLs (comma-separated) instead of an image DB")
	fs.String("collection", "", "with --queue: Weaviate collection (default derived from gallery and model)")
	fs.String("job", "", "with --queue: job id (default derived from gallery, store and CLIP model)")
	fs.Bool("status", false, "with --queue: print the progress of the job (or of all jobs) and exit")
	fs.Bool("wait", false, "with --queue: after publishing, print progress until the job is finished")
	fs.Bool("json", false, "with --queue --status: print JSON")
	fs.String("model", "", "with --queue: same as --clip")
	if queueRequested(args) {
		return runIndexQueue(ctx, e, args) // its own flags (--status, --job, --weaviate, ...)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *queueURL != "" {
		return runIndexQueue(ctx, e, args)
	}
	for _, n := range queueOnly {
		if flagSet(fs, n) {
			return usagef("--%s needs --queue URL", n)
		}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	switch {
	case *galleryDir != "" && *dsName != "":
		return usagef("give --gallery or --dataset, not both")
	case *galleryDir == "" && *dsName == "":
		return usagef("give --gallery DIR or --dataset NAME --data DIR --split SPLIT")
	case *dsName != "" && (*data == "" || *split == ""):
		return usagef("--dataset needs --data and --split")
	case *batch < 1 || *capWorkers < 0 || *threads < 0:
		return usagef("--batch must be >= 1, --caption-workers and --threads >= 0")
	case *embedder != "clip" && *embedder != "remote":
		return usagef("--embedder %q: want clip or remote", *embedder)
	}

	cpath := *configPath
	if cpath == "" {
		cpath = e.getenv("IMAGESCOPE_CONFIG")
	}
	cfg, err := config.Load(cpath, e.getenv)
	if err != nil {
		return err
	}
	var ds *dataset.Dataset
	var dbName, folderDB string
	if *galleryDir != "" {
		if ds, err = dataset.LoadFolder(ctx, *galleryDir); err != nil {
			return err
		}
		if folderDB, err = gallery.FolderPath(cfg.Home, *galleryDir); err != nil {
			return err
		}
	} else {
		if ds, err = dataset.Load(ctx, *dsName, *data, *split); err != nil {
			return err
		}
		dbName = ds.Name + "_" + ds.Split
	}
	if len(ds.Gallery) == 0 {
		return fmt.Errorf("no images found in %s", ds.Root)
	}
	items := make([]gallery.Item, len(ds.Gallery))
	for i, im := range ds.Gallery {
		items[i] = gallery.Item{Name: im.Name, Path: im.Path}
	}
	path := *dbPath
	switch {
	case path == "" && folderDB != "":
		path = folderDB
	case path == "":
		path = gallery.DefaultPath(cfg.Home, dbName)
	}
	dom := *domain
	if dom == "" {
		dom = ds.Domain
	}
	if dom == "" || dom == "chat" {
		dom = "general"
	}

	// Embedder.
	var emb gallery.Embedder
	if *embedder == "remote" {
		rcfg, ok := cfg.Role(config.RoleEmbedder)
		if !ok || !rcfg.Configured() {
			return usagef("--embedder remote: no embedder role in the configuration")
		}
		c, err := llm.New(ctx, llm.Role(config.RoleEmbedder), rcfg, nil, llm.Options{Logger: e.log})
		if err != nil {
			return err
		}
		if emb, err = newRemoteEmbedder(ctx, c); err != nil {
			return err
		}
	} else {
		ref := *clipRef
		if ref == "" {
			ref = cfg.CLIP.Model
		}
		th := *threads
		if th == 0 {
			th = cfg.CLIP.Threads
		}
		m, err := clip.Load(ctx, ref, clip.Options{Threads: th, Logger: e.log, Progress: progressPrinter(e)})
		if err != nil {
			return err
		}
		emb = adapt.CLIP{Model: m}
	}

	db, err := gallery.Open(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.BindModel(ctx, emb.ModelID(), emb.Dim()); err != nil {
		return err
	}

	opt := gallery.IndexOptions{Embedder: emb, EmbedBatch: *batch, Float16: *float16, Logger: e.log}
	rcfg, capOK := cfg.Role(pipeline.RoleCaptioner)
	switch {
	case *noCaptions:
		e.log.Info("captioning off (--no-captions): search will treat tau as 0 unless the DB already holds captions")
	case !capOK || !rcfg.Configured():
		e.log.Warn("no captioner configured: images are embedded without captions, and search treats tau as 0 (the caption term is dropped)")
	default:
		lib, err := prompt.Load(*promptDir)
		if err != nil {
			return err
		}
		if *domain == "" && ds.Name != dataset.Folder && lib.Layout() == prompt.LayoutReference {
			// The reference layout's caption.txt of this benchmark, as eval uses.
			if dom, err = lib.DatasetDomain(ds.Name, dom); err != nil {
				return fmt.Errorf("--prompts %s: %w", *promptDir, err)
			}
		}
		instr, err := lib.CaptionInstruction(dom)
		if err != nil {
			return err
		}
		var cache *llm.Cache
		if !cfg.Cache.Disabled {
			if err := os.MkdirAll(filepath.Dir(cfg.Cache.Path), 0o755); err != nil {
				return fmt.Errorf("answer cache: %w", err)
			}
			if cache, err = llm.OpenCache(cfg.Cache.Path); err != nil {
				return fmt.Errorf("answer cache: %w", err)
			}
			defer cache.Close()
		}
		c, err := llm.New(ctx, llm.Role(pipeline.RoleCaptioner), rcfg, cache, llm.Options{Logger: e.log})
		if err != nil {
			return err
		}
		opt.Captioner = adapt.Captioner{Client: c, Instruction: instr}
		opt.CaptionModel = rcfg.CacheModelID()
		opt.CaptionPrompt = instr
		opt.CaptionWorkers = *capWorkers
		if opt.CaptionWorkers == 0 {
			opt.CaptionWorkers = max(1, rcfg.MaxInFlight*len(rcfg.Endpoints))
		}
	}

	bar := progress.New(e.stderr, "index "+dbName, int64(len(items)), progress.Options{Unit: "images", Logger: e.log})
	opt.Progress = bar
	e.log.Info("index", "db", path, "images", len(items), "clip", emb.ModelID(), "dim", emb.Dim(), "captions", opt.Captioner != nil)
	sum, err := db.Index(ctx, items, opt)
	bar.Finish()
	if sum != nil {
		printIndexSummary(e, path, sum)
	}
	if err == nil {
		// Thumbnails for the web UI, made once now rather than on first view.
		files := make(map[string]string, len(items))
		for _, it := range items {
			files[it.Name] = it.Path
		}
		err = makeThumbs(ctx, e, path, files)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("%w; committed images are kept, run the same command again to continue", err)
		}
		return err
	}
	return nil
}

func printIndexSummary(e *env, path string, s *gallery.Summary) {
	w := e.stdout
	fmt.Fprintf(w, "image DB %s\n", path)
	fmt.Fprintf(w, "  listed:     %d\n  indexed:    %d\n  up to date: %d\n  removed:    %d\n  failed:     %d\n",
		s.Total, s.Done, s.UpToDate, s.Removed, s.Failed)
	if s.Captions {
		fmt.Fprintf(w, "  captions:   yes (set %s)\n", s.CaptionKey)
	} else {
		fmt.Fprintf(w, "  captions:   none made (no captioner): search treats tau as 0 unless the DB holds captions\n")
	}
	fmt.Fprintf(w, "  time:       %s\n", s.Elapsed.Round(1e7))
	const show = 20
	for i, f := range s.Failures {
		if i == show {
			fmt.Fprintf(w, "  ... and %d more (imagescope db info --db %s --failures)\n", len(s.Failures)-show, path)
			break
		}
		fmt.Fprintf(w, "  failed %s [%s]: %s\n", f.Name, f.Stage, strings.ReplaceAll(f.Reason, "\n", " "))
	}
}

// remoteEmbedder makes the embedder role (an OpenAI-compatible /embeddings
// server) a gallery.Embedder.
type remoteEmbedder struct {
	c   *llm.Client
	dim int
}

func newRemoteEmbedder(ctx context.Context, c *llm.Client) (*remoteEmbedder, error) {
	v, err := c.EmbedText(ctx, "a photo")
	if err != nil {
		return nil, fmt.Errorf("remote embedder: probe: %w", err)
	}
	if len(v) == 0 {
		return nil, errors.New("remote embedder: probe returned an empty vector")
	}
	return &remoteEmbedder{c: c, dim: len(v)}, nil
}

func (r *remoteEmbedder) ModelID() string { return r.c.ModelID() }
func (r *remoteEmbedder) Dim() int        { return r.dim }

func (r *remoteEmbedder) EmbedTexts(ctx context.Context, texts []string) ([][]float32, error) {
	return r.c.EmbedTexts(ctx, texts)
}

func (r *remoteEmbedder) EmbedImageFiles(ctx context.Context, paths []string) ([][]float32, []error, error) {
	vecs := make([][]float32, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := os.ReadFile(p)
			if err != nil {
				errs[i] = err
				return
			}
			vecs[i], errs[i] = r.c.EmbedImageData(ctx, llm.ImageBytes(b, ""))
		}()
	}
	wg.Wait()
	return vecs, errs, ctx.Err()
}

// flagSet reports whether flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

func makeThumbs(ctx context.Context, e *env, dbPath string, files map[string]string) error {
	st, err := thumbs.Open(thumbs.DirFor(dbPath), 0)
	if err != nil {
		return err
	}
	bar := progress.New(e.stderr, "thumbnails", int64(len(files)), progress.Options{Unit: "images", Logger: e.log})
	sum, err := st.PrepareAll(ctx, files, 0, func() { bar.Add(1) })
	bar.Finish()
	fmt.Fprintf(e.stdout, "  thumbnails: %d made, %d up to date, %d failed (%s)\n", sum.Made, sum.UpToDate, sum.Failed, st.Dir())
	return err
}
