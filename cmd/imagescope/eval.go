package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imagescope/imagescope/app"
	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/metrics"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/prompt"
	evalrun "github.com/imagescope/imagescope/run"
)

// parseStages reads "s1,s2,s3" (or "1,2", "s1-s3") into the last stage;
// stages must start at 1 and be contiguous.
func parseStages(v string) (int, error) {
	v = strings.ToLower(strings.TrimSpace(v))
	if v == "" {
		return 3, nil
	}
	var got []int
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		f = strings.TrimPrefix(strings.TrimPrefix(f, "stage"), "s")
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 3 {
			return 0, fmt.Errorf("--stages %q: stages are s1, s2, s3", v)
		}
		got = append(got, n)
	}
	for i, n := range got {
		if n != i+1 {
			return 0, fmt.Errorf("--stages %q: stages run in order from s1 (s1 | s1,s2 | s1,s2,s3)", v)
		}
	}
	return len(got), nil
}

// runEval implements 'imagescope eval'.
func runEval(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "eval", "--dataset NAME --data DIR --split SPLIT [flags] | --resume RUNDIR",
		`Run a benchmark end to end: build or reuse the image DB of the split's gallery,
run the stages for every query (streaming: each query moves on as soon as its
own inputs are ready), and write a run folder
runs/<dataset>_<split>/<clip>-<run>_<timestamp>/ with the log, the prompts, the
effective configuration, metrics.json, rankings.<stage>.json, trace.jsonl,
submissions (CIRR/CIRCO test), metrics.txt, recall.svg and report.txt.
Every finished stage of every query is checkpointed: --resume RUNDIR completes
an interrupted run without repeating finished model calls, and can extend it
with later stages (--stages).
--interactive (VisDial) replaces the human turns after the caption: each
round the engine asks back the question that best splits its current top
candidates and the verifier, looking at the target, answers it
(docs/asking-back.md); --beside RUNDIR reports its Hits@K per round beside
those of a run over the dialogues' own turns.`)
	dsName := fs.String("dataset", "", "CIRR, CIRCO, FashionIQ-dress|shirt|toptee, Flickr30K, MSCOCO or VisDial")
	data := fs.String("data", "", "data root (or the dataset folder)")
	split := fs.String("split", "", "valid|val|test")
	stagesFlag := fs.String("stages", "s1,s2,s3", "stages to run: s1 | s1,s2 | s1,s2,s3")
	tau := fs.Float64("tau", 0.15, "caption weight in the fused score")
	topK := fs.Int("top-k", 20, "stage 2: candidates verified (K)")
	alpha := fs.Int("alpha", 3, "stage 3: candidates evaluated")
	subset := fs.Bool("subset", false, "CIRR: rank only the img_set members (reference excluded); re-rank depth clipped to the subset")
	keepRef := fs.Bool("keep-reference", false, "CIRR: keep the reference image in rankings (the reference code's behaviour; official practice removes it)")
	runName := fs.String("run-name", "run", "run name used in the folder name")
	resume := fs.String("resume", "", "resume (or extend) the run in this folder")
	barrier := fs.Bool("barrier", false, "finish each stage for every query before starting the next (for comparison)")
	cf := addConfigFlags(fs)
	dbPath := fs.String("db", "", "image DB file (default $IMAGESCOPE_HOME/db/<dataset>_<split>.db)")
	wvCollection := fs.String("weaviate", "", "search the split's gallery in this Weaviate collection (filled by 'index --queue ... --dataset ... --weaviate') instead of an image DB")
	runsRoot := fs.String("runs", "runs", "folder holding run folders")
	promptDir := fs.String("prompts", "", "folder of prompt templates overriding the built-in ones, or of the reference implementation's prompt files (a folder per dataset; see docs/benchmarks.md)")
	yesRule := fs.String("yes-rule", "word", "verifier yes rule: word (yes as a word) or substring (reference code)")
	soft := fs.Bool("soft", false, "also score verification softly from yes/no log-probabilities (reported beside the hard count)")
	limit := fs.Int("limit", 0, "run only the first N queries (0: all)")
	active := fs.Int("active", 64, "queries in progress at once")
	interactive := fs.Bool("interactive", false, "chat datasets: generate each round's question (asking back) and answer it with the verifier looking at the target")
	beside := fs.String("beside", "", "with --interactive: a finished run over the dataset's own dialogues; Hits@K per round of both go to beside.txt/beside.json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	lastStage, err := parseStages(*stagesFlag)
	if err != nil {
		return usagef("%v", err)
	}
	if *dbPath != "" && *wvCollection != "" {
		return usagef("give --db PATH or --weaviate COLLECTION, not both")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var settings evalrun.Settings
	var saved map[string]any
	var opt pipeline.Options
	dir := *resume
	if dir != "" {
		for _, name := range []string{"dataset", "data", "split", "tau", "top-k", "alpha", "subset", "keep-reference", "run-name", "prompts", "yes-rule", "soft", "limit", "runs", "interactive", "beside"} {
			if set[name] {
				return usagef("--%s cannot change on --resume (the run's settings are in %s)", name, filepath.Join(dir, "config.json"))
			}
		}
		if settings, saved, err = evalrun.ReadSettings(dir); err != nil {
			return err
		}
		if opt, err = evalrun.ReadOptions(dir); err != nil {
			return err
		}
		if set["stages"] {
			if lastStage < settings.Stages {
				return usagef("--stages: the run already covers stage %d; it can only be extended", settings.Stages)
			}
			settings.Stages = lastStage
		}
		if set["barrier"] {
			settings.Barrier = *barrier
		}
		if prev, _ := saved["weaviate_collection"].(string); prev != "" && !set["weaviate"] {
			*wvCollection = prev // a resumed run keeps its gallery
		}
		if set["active"] {
			settings.Active = *active
		}
		*promptDir = filepath.Join(dir, "prompts")
	} else {
		if *dsName == "" || *data == "" || *split == "" {
			return usagef("--dataset, --data and --split are required (or --resume RUNDIR)")
		}
		if *limit < 0 || *active < 1 {
			return usagef("--limit must be >= 0 and --active >= 1")
		}
		settings = evalrun.Settings{Dataset: *dsName, Split: *split, Data: *data, Stages: lastStage, Subset: *subset,
			KeepReference: *keepRef, Barrier: *barrier, Active: *active, Limit: *limit, Interactive: *interactive, Beside: *beside}
		opt = pipeline.DefaultOptions()
		opt.Tau, opt.TopK, opt.Alpha, opt.YesRule, opt.Soft = float32(*tau), *topK, *alpha, *yesRule, *soft
		if *tau < 0 || *tau > 1 || *topK < 1 || *alpha < 1 {
			return usagef("--tau must be within [0,1], --top-k and --alpha >= 1")
		}
		if *yesRule != "word" && *yesRule != "substring" {
			return usagef("--yes-rule %q: want word or substring", *yesRule)
		}
	}

	cfg, err := cf.load(e)
	if err != nil {
		return err
	}
	if dir == "" {
		app.AskOptions(cfg, &opt) // a resumed run keeps its saved options
	}
	if prev, ok := saved["clip_model"].(string); ok && dir != "" && !set["clip"] {
		cfg.CLIP.Model = prev // a resumed run keeps its CLIP model
	}
	ds, err := dataset.Load(ctx, settings.Dataset, settings.Data, settings.Split)
	if err != nil {
		return err
	}
	if settings.Subset && !strings.EqualFold(ds.Name, "CIRR") {
		return usagef("--subset applies to CIRR only")
	}
	lib, err := prompt.Load(*promptDir)
	if err != nil {
		return err
	}
	// A prompts folder in the reference layout has a folder per dataset.
	if ds.Domain, err = lib.DatasetDomain(ds.Name, ds.Domain); err != nil {
		return fmt.Errorf("--prompts %s: %w", *promptDir, err)
	}
	src, err := app.Resolve(ctx, cfg.Home, app.GallerySpec{Split: ds, DB: *dbPath, Weaviate: *wvCollection})
	if err != nil {
		return err
	}
	a, err := app.Open(ctx, cfg, app.Options{Prompts: lib, PromptDir: *promptDir, Log: e.log, Getenv: e.getenv, Progress: progressPrinter(e), Bars: e.stderr})
	if err != nil {
		return err
	}
	defer a.Close()
	model := a.Model
	if prev, ok := saved["clip_model"].(string); ok && prev != model.ID() {
		return fmt.Errorf("resume %s: the run used CLIP model %s, the configuration gives %s", dir, prev, model.ID())
	}

	opt.InFlight = app.InFlight(cfg)
	fresh := dir == ""
	if fresh {
		clipTag := model.ID()
		if filepath.IsAbs(clipTag) || strings.HasPrefix(clipTag, ".") {
			clipTag = filepath.Base(clipTag) // a local checkpoint folder
		}
		dir, err = evalrun.NewDir(*runsRoot, ds.Name, ds.Split, clipTag, *runName, time.Now())
		if err != nil {
			return err
		}
		// Resumable from here on, even if killed while the gallery is indexed.
		early := map[string]any{"clip_model": model.ID(), "roles_config": app.RoleModels(cfg), "config_file": cfg.Path,
			"clip_threads": cfg.CLIP.Threads, "answer_cache": map[string]any{"path": cfg.Cache.Path, "disabled": cfg.Cache.Disabled}}
		if err := evalrun.Prepare(dir, settings, opt, a.Roles.Names(), lib, early); err != nil {
			_ = os.RemoveAll(dir)
			return err
		}
	}
	logf, err := os.OpenFile(filepath.Join(dir, "run.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("run log: %w", err)
	}
	defer logf.Close()
	// refuse ends a run that could not start; a fresh one leaves no run
	// folder behind.
	refuse := func(err error) error {
		if fresh {
			logf.Close()
			_ = os.RemoveAll(dir)
		}
		return err
	}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(e.stderr, logf), &slog.HandlerOptions{Level: slog.LevelInfo}))
	a.Log = log
	log.Info("eval", "dir", dir, "dataset", ds.Name, "split", ds.Split, "queries", len(ds.Queries), "gallery", len(ds.Gallery), "clip", model.ID())
	g, err := a.OpenGallery(ctx, src, ds.Domain)
	if err != nil {
		if *wvCollection != "" {
			return refuse(err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted while indexing the gallery; resume with: imagescope eval --resume %s", dir)
		}
		return err
	}
	defer g.Close()
	if !g.Index.HasCaption {
		log.Warn("the gallery has no captions: the caption term is dropped (tau treated as 0)")
	}
	eng, err := a.Engine(g, opt, log)
	if err != nil {
		return err
	}
	extra := map[string]any{
		"clip_model": model.ID(), "image_db": g.Where, "weaviate_collection": *wvCollection, "caption_set": g.Info.CaptionKey, "gallery_images": g.Info.Images,
		"roles_config": app.RoleModels(cfg), "config_file": cfg.Path, "clip_threads": cfg.CLIP.Threads,
		"answer_cache": map[string]any{"path": cfg.Cache.Path, "disabled": cfg.Cache.Disabled},
	}
	r, err := evalrun.New(evalrun.Config{
		Engine: eng, Dataset: ds, Dir: dir, Settings: settings, Log: log, Extra: extra,
		Score:      scoreWithMetrics(metrics.Options{ReferenceCode: settings.KeepReference && ds.Name == dataset.CIRR}),
		Submit:     submitters(),
		ModelStats: a.Roles.Counters,
		Progress: func(stage, done, total int) {
			if done == total || done%max(1, total/20) == 0 {
				log.Info("progress", "stage", stage, "done", done, "total", total)
			}
		},
	})
	if err != nil {
		return refuse(err)
	}
	runErr := r.Run(ctx)
	if b, err := json.MarshalIndent(a.Roles.Stats(), "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "llm_stats.json"), append(b, '\n'), 0o644)
	}
	fmt.Fprint(e.stdout, evalrun.FormatReport(r.Report()))
	if t, err := os.ReadFile(filepath.Join(dir, "metrics.txt")); err == nil {
		fmt.Fprintf(e.stdout, "\n%s", t)
	}
	fmt.Fprintf(e.stdout, "run folder: %s\n", dir)
	if runErr != nil {
		if errors.Is(runErr, context.Canceled) {
			return fmt.Errorf("interrupted; resume with: imagescope eval --resume %s", dir)
		}
		return runErr
	}
	return nil
}

// scoreWithMetrics scores rankings with the metrics package (the numbers
// 'imagescope score' prints). A run that keeps the reference image in its
// rankings (--keep-reference) also gets the reference code's recall
// (refcode_recall@K) beside the official one.
func scoreWithMetrics(opt metrics.Options) func(*dataset.Dataset, map[string][]string, map[string][][]string) (json.RawMessage, string, error) {
	return func(ds *dataset.Dataset, lists map[string][]string, rounds map[string][][]string) (json.RawMessage, string, error) {
		rep, err := metrics.Score(ds, metrics.Rankings{Lists: lists, Rounds: rounds}, opt)
		if err != nil {
			return nil, "", err
		}
		b, err := rep.MarshalJSON()
		if err != nil {
			return nil, "", err
		}
		var t bytes.Buffer
		if err := rep.WriteTable(&t); err != nil {
			return nil, "", err
		}
		return b, t.String(), nil
	}
}

// submitters wires the metrics package's submission writers.
func submitters() evalrun.Submitter {
	return evalrun.Submitter{CIRR: metrics.WriteCIRRSubmission, CIRCO: metrics.WriteCIRCOSubmission}
}
