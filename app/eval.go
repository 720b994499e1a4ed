package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/metrics"
	"github.com/imagescope/imagescope/pipeline"
	"github.com/imagescope/imagescope/prompt"
	evalrun "github.com/imagescope/imagescope/run"
)

// UsageError is a request that cannot be met as asked (a setting that a
// resumed run fixes, an option the dataset does not take): the caller
// should change what it asks, not retry.
type UsageError struct{ Msg string }

func (u *UsageError) Error() string { return u.Msg }

func usagef(format string, a ...any) error { return &UsageError{fmt.Sprintf(format, a...)} }

// ErrInterruptedIndexing is returned when a run is interrupted while its
// gallery is indexed; the run folder (EvalResult.Dir) can be resumed.
var ErrInterruptedIndexing = errors.New("interrupted while indexing the gallery")

// EvalSpec is a benchmark run as asked: a new run of a split (Settings,
// the stage options, where the run folder goes), or Resume of a run
// folder, whose saved settings hold except for what Given allows.
type EvalSpec struct {
	// Resume is the run folder to resume or extend ("" for a new run).
	Resume string
	// Given names the options set explicitly (by their flag names). A
	// resumed run refuses those its folder fixes, takes stages, barrier,
	// active and weaviate, and keeps its CLIP model unless clip is given.
	Given map[string]bool
	// Settings of a new run; on Resume only Stages, Barrier and Active
	// count, and only when given.
	Settings evalrun.Settings
	// Stage options of a new run.
	Tau         float64
	TopK, Alpha int
	YesRule     string
	Soft        bool
	// RunsRoot holds run folders; RunName goes into a new folder's name.
	RunsRoot, RunName string
	// DB is the split's image DB (default under the home); Weaviate a
	// collection holding the split's gallery instead.
	DB, Weaviate string
	// PromptDir overrides the built-in prompts (a resumed run uses the
	// copy in its folder).
	PromptDir string
}

// resumeFixed are the options a run folder fixes: a resumed run refuses
// them.
var resumeFixed = []string{"dataset", "data", "split", "tau", "top-k", "alpha", "subset", "keep-reference", "run-name", "prompts", "yes-rule", "soft", "limit", "runs", "interactive", "beside"}

// EvalPlan is an EvalSpec with a resumed run's saved settings merged in.
type EvalPlan struct {
	Spec     EvalSpec
	Settings evalrun.Settings
	Options  pipeline.Options
	// Saved is the resumed run's config.json (nil for a new run).
	Saved map[string]any
}

// PlanEval merges a resumed run's saved settings and options with what
// spec may change, or sets up a new run's options. It loads no model.
func PlanEval(spec EvalSpec) (*EvalPlan, error) {
	p := &EvalPlan{Spec: spec}
	dir := spec.Resume
	if dir == "" {
		p.Settings = spec.Settings
		p.Options = pipeline.DefaultOptions()
		p.Options.Tau, p.Options.TopK, p.Options.Alpha, p.Options.YesRule, p.Options.Soft = float32(spec.Tau), spec.TopK, spec.Alpha, spec.YesRule, spec.Soft
		return p, nil
	}
	given := spec.Given
	for _, name := range resumeFixed {
		if given[name] {
			return nil, usagef("--%s cannot change on --resume (the run's settings are in %s)", name, filepath.Join(dir, "config.json"))
		}
	}
	var err error
	if p.Settings, p.Saved, err = evalrun.ReadSettings(dir); err != nil {
		return nil, err
	}
	if p.Options, err = evalrun.ReadOptions(dir); err != nil {
		return nil, err
	}
	if given["stages"] {
		if spec.Settings.Stages < p.Settings.Stages {
			return nil, usagef("--stages: the run already covers stage %d; it can only be extended", p.Settings.Stages)
		}
		p.Settings.Stages = spec.Settings.Stages
	}
	if given["barrier"] {
		p.Settings.Barrier = spec.Settings.Barrier
	}
	if prev, _ := p.Saved["weaviate_collection"].(string); prev != "" && !given["weaviate"] {
		p.Spec.Weaviate = prev // a resumed run keeps its gallery
	}
	if given["active"] {
		p.Settings.Active = spec.Settings.Active
	}
	p.Spec.PromptDir = filepath.Join(dir, "prompts")
	return p, nil
}

// EvalIO is where a run reports besides its folder.
type EvalIO struct {
	// Stderr receives the run's log (also written to run.log) and the
	// progress bars.
	Stderr io.Writer
	// Log receives what happens before the run log is open.
	Log    *slog.Logger
	Getenv func(string) string
	// Progress reports hub downloads of the CLIP checkpoint.
	Progress func(file string, done, total int64)
}

// EvalResult is what a run leaves to report. Dir is set once the run
// folder exists; Report once the run started.
type EvalResult struct {
	Dir    string
	Report *evalrun.Report
	// Metrics is the run's metrics.txt (nil when it has none).
	Metrics []byte
}

// evalRun is a run being set up: its folder, log and whether it is new.
type evalRun struct {
	plan  *EvalPlan
	dir   string
	fresh bool
	logf  *os.File
	log   *slog.Logger
}

// refuse ends a run that could not start; a fresh one leaves no run
// folder behind.
func (r *evalRun) refuse(err error) error {
	if r.fresh {
		r.logf.Close()
		_ = os.RemoveAll(r.dir)
	}
	return err
}

// RunEval runs (or resumes) the planned benchmark run under cfg: it loads
// the split and the prompts, creates the run folder (resumable from then
// on), indexes the split's gallery, runs the stages and writes
// llm_stats.json. A run error comes with the result: the run folder holds
// what was done.
func RunEval(ctx context.Context, cfg *config.Config, p *EvalPlan, o EvalIO) (*EvalResult, error) {
	spec := p.Spec
	resumed := spec.Resume != ""
	if !resumed {
		AskOptions(cfg, &p.Options) // a resumed run keeps its saved options
	}
	if prev, ok := p.Saved["clip_model"].(string); ok && resumed && !spec.Given["clip"] {
		cfg.CLIP.Model = prev // a resumed run keeps its CLIP model
	}
	ds, err := dataset.Load(ctx, p.Settings.Dataset, p.Settings.Data, p.Settings.Split)
	if err != nil {
		return nil, err
	}
	if p.Settings.Subset && !strings.EqualFold(ds.Name, "CIRR") {
		return nil, usagef("--subset applies to CIRR only")
	}
	lib, err := prompt.Load(spec.PromptDir)
	if err != nil {
		return nil, err
	}
	// A prompts folder in the reference layout has a folder per dataset.
	if ds.Domain, err = lib.DatasetDomain(ds.Name, ds.Domain); err != nil {
		return nil, fmt.Errorf("--prompts %s: %w", spec.PromptDir, err)
	}
	src, err := Resolve(ctx, cfg.Home, GallerySpec{Split: ds, DB: spec.DB, Weaviate: spec.Weaviate})
	if err != nil {
		return nil, err
	}
	a, err := Open(ctx, cfg, Options{Prompts: lib, PromptDir: spec.PromptDir, Log: o.Log, Getenv: o.Getenv, Progress: o.Progress, Bars: o.Stderr})
	if err != nil {
		return nil, err
	}
	defer a.Close()
	if prev, ok := p.Saved["clip_model"].(string); ok && prev != a.Model.ID() {
		return nil, fmt.Errorf("resume %s: the run used CLIP model %s, the configuration gives %s", spec.Resume, prev, a.Model.ID())
	}
	p.Options.InFlight = InFlight(cfg)
	r, err := a.startRun(p, ds, o.Stderr)
	if err != nil {
		return nil, err
	}
	defer r.logf.Close()
	res := &EvalResult{Dir: r.dir}
	runner, g, err := a.evalRunner(ctx, r, ds, src)
	if err != nil {
		return res, err
	}
	defer g.Close()
	runErr := runner.Run(ctx)
	if b, err := json.MarshalIndent(a.Roles.Stats(), "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(r.dir, "llm_stats.json"), append(b, '\n'), 0o644)
	}
	rep := runner.Report()
	res.Report = &rep
	if t, err := os.ReadFile(filepath.Join(r.dir, "metrics.txt")); err == nil {
		res.Metrics = t
	}
	return res, runErr
}

// startRun creates a new run's folder with its early settings (resumable
// from here on, even if killed while the gallery is indexed), or takes the
// resumed one, and opens its run.log.
func (a *App) startRun(p *EvalPlan, ds *dataset.Dataset, stderr io.Writer) (*evalRun, error) {
	r := &evalRun{plan: p, dir: p.Spec.Resume, fresh: p.Spec.Resume == ""}
	if r.fresh {
		clipTag := a.Model.ID()
		if filepath.IsAbs(clipTag) || strings.HasPrefix(clipTag, ".") {
			clipTag = filepath.Base(clipTag) // a local checkpoint folder
		}
		var err error
		r.dir, err = evalrun.NewDir(p.Spec.RunsRoot, ds.Name, ds.Split, clipTag, p.Spec.RunName, time.Now())
		if err != nil {
			return nil, err
		}
		if err := evalrun.Prepare(r.dir, p.Settings, p.Options, a.Roles.Names(), a.Prompts, a.runRecord()); err != nil {
			_ = os.RemoveAll(r.dir)
			return nil, err
		}
	}
	logf, err := os.OpenFile(filepath.Join(r.dir, "run.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run log: %w", err)
	}
	r.logf = logf
	r.log = slog.New(slog.NewTextHandler(io.MultiWriter(stderr, logf), &slog.HandlerOptions{Level: slog.LevelInfo}))
	a.Log = r.log
	return r, nil
}

// runRecord is what a run folder records of the configuration (merged into
// its config.json).
func (a *App) runRecord() map[string]any {
	cfg := a.Config
	return map[string]any{"clip_model": a.Model.ID(), "roles_config": RoleModels(cfg), "config_file": cfg.Path,
		"clip_threads": cfg.CLIP.Threads, "answer_cache": map[string]any{"path": cfg.Cache.Path, "disabled": cfg.Cache.Disabled}}
}

// evalRunner opens the split's gallery and wires the engine and the run;
// the caller closes the gallery after the run.
func (a *App) evalRunner(ctx context.Context, r *evalRun, ds *dataset.Dataset, src *Source) (*evalrun.Runner, *Gallery, error) {
	log, weaviate := r.log, r.plan.Spec.Weaviate
	log.Info("eval", "dir", r.dir, "dataset", ds.Name, "split", ds.Split, "queries", len(ds.Queries), "gallery", len(ds.Gallery), "clip", a.Model.ID())
	g, err := a.OpenGallery(ctx, src, ds.Domain)
	if err != nil {
		if weaviate != "" {
			return nil, nil, r.refuse(err)
		}
		if ctx.Err() != nil {
			return nil, nil, ErrInterruptedIndexing
		}
		return nil, nil, err
	}
	if !g.Index.HasCaption {
		log.Warn("the gallery has no captions: the caption term is dropped (tau treated as 0)")
	}
	eng, err := a.Engine(g, r.plan.Options, log)
	if err != nil {
		g.Close()
		return nil, nil, err
	}
	extra := a.runRecord()
	extra["image_db"], extra["weaviate_collection"], extra["caption_set"], extra["gallery_images"] = g.Where, weaviate, g.Info.CaptionKey, g.Info.Images
	s := r.plan.Settings
	runner, err := evalrun.New(evalrun.Config{
		Engine: eng, Dataset: ds, Dir: r.dir, Settings: s, Log: log, Extra: extra,
		Score:      scoreWithMetrics(metrics.Options{ReferenceCode: s.KeepReference && ds.Name == dataset.CIRR}),
		Submit:     submitters(),
		ModelStats: a.Roles.Counters,
		Progress: func(stage, done, total int) {
			if done == total || done%max(1, total/20) == 0 {
				log.Info("progress", "stage", stage, "done", done, "total", total)
			}
		},
	})
	if err != nil {
		g.Close()
		return nil, nil, r.refuse(err)
	}
	return runner, g, nil
}

// scoreWithMetrics scores rankings with the metrics package (the numbers
// 'imagescope score' prints). A run that keeps the reference image in its
// rankings (--keep-reference) also gets the reference code's recall
// (refcode_recall@K) beside the official one.
func scoreWithMetrics(opt metrics.Options) evalrun.Scorer {
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
