package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/gallery"
	"github.com/imagescope/imagescope/internal/progress"
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
	cf := addConfigFlags(fs)
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
	case *batch < 1 || *capWorkers < 0 || cf.threads < 0:
		return usagef("--batch must be >= 1, --caption-workers and --threads >= 0")
	case *embedder != "clip" && *embedder != "remote":
		return usagef("--embedder %q: want clip or remote", *embedder)
	}

	cfg, err := cf.load(e)
	if err != nil {
		return err
	}
	spec := app.GallerySpec{Folder: *galleryDir, DB: *dbPath}
	if *dsName != "" {
		if spec.Split, err = dataset.Load(ctx, *dsName, *data, *split); err != nil {
			return err
		}
	}
	src, err := app.Resolve(ctx, cfg.Home, spec)
	if err != nil {
		return err
	}
	if len(src.Items) == 0 {
		return fmt.Errorf("no images found in %s", src.Root)
	}
	bar := progress.New(e.stderr, "index "+src.Name, int64(len(src.Items)), progress.Options{Unit: "images", Logger: e.log})
	sum, err := app.Index(ctx, cfg, src, app.IndexSpec{Remote: *embedder == "remote", Domain: *domain, PromptDir: *promptDir,
		NoCaptions: *noCaptions, CaptionWorkers: *capWorkers, Batch: *batch, Float16: *float16, Progress: bar, Log: e.log, ClipProgress: progressPrinter(e)})
	bar.Finish()
	if sum != nil {
		printIndexSummary(e, src.Path, sum)
	}
	if err != nil {
		return err
	}
	bar = progress.New(e.stderr, "thumbnails", int64(len(src.Items)), progress.Options{Unit: "images", Logger: e.log})
	ts, dir, err := app.MakeThumbs(ctx, src, func() { bar.Add(1) })
	bar.Finish()
	if dir != "" {
		fmt.Fprintf(e.stdout, "  thumbnails: %d made, %d up to date, %d failed (%s)\n", ts.Made, ts.UpToDate, ts.Failed, dir)
	}
	return err
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

// flagSet reports whether flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
