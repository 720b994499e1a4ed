package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/imagescope/imagescope/app"
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
	if *resume == "" {
		if *dsName == "" || *data == "" || *split == "" {
			return usagef("--dataset, --data and --split are required (or --resume RUNDIR)")
		}
		if *limit < 0 || *active < 1 {
			return usagef("--limit must be >= 0 and --active >= 1")
		}
		if *tau < 0 || *tau > 1 || *topK < 1 || *alpha < 1 {
			return usagef("--tau must be within [0,1], --top-k and --alpha >= 1")
		}
		if *yesRule != "word" && *yesRule != "substring" {
			return usagef("--yes-rule %q: want word or substring", *yesRule)
		}
	}
	plan, err := app.PlanEval(app.EvalSpec{
		Resume: *resume, Given: set,
		Settings: evalrun.Settings{Dataset: *dsName, Split: *split, Data: *data, Stages: lastStage, Subset: *subset,
			KeepReference: *keepRef, Barrier: *barrier, Active: *active, Limit: *limit, Interactive: *interactive, Beside: *beside},
		Tau: *tau, TopK: *topK, Alpha: *alpha, YesRule: *yesRule, Soft: *soft,
		RunsRoot: *runsRoot, RunName: *runName, DB: *dbPath, Weaviate: *wvCollection, PromptDir: *promptDir,
	})
	if err != nil {
		return appUsage(err)
	}
	cfg, err := cf.load(e)
	if err != nil {
		return err
	}
	res, err := app.RunEval(ctx, cfg, plan, app.EvalIO{Stderr: e.stderr, Log: e.log, Getenv: e.getenv, Progress: progressPrinter(e)})
	if res != nil && res.Report != nil {
		fmt.Fprint(e.stdout, evalrun.FormatReport(*res.Report))
		if res.Metrics != nil {
			fmt.Fprintf(e.stdout, "\n%s", res.Metrics)
		}
		fmt.Fprintf(e.stdout, "run folder: %s\n", res.Dir)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, app.ErrInterruptedIndexing):
		return fmt.Errorf("interrupted while indexing the gallery; resume with: imagescope eval --resume %s", res.Dir)
	case res != nil && res.Report != nil && errors.Is(err, context.Canceled):
		return fmt.Errorf("interrupted; resume with: imagescope eval --resume %s", res.Dir)
	}
	return appUsage(err)
}

// appUsage makes the app's usage errors the command's (exit code 2).
func appUsage(err error) error {
	var ue *app.UsageError
	if errors.As(err, &ue) {
		return usagef("%s", ue.Msg)
	}
	return err
}
