package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/config"
	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/pipeline"
	evalrun "github.com/imagescope/imagescope/run"
)

func TestPlanEvalNewRun(t *testing.T) {
	spec := EvalSpec{Settings: evalrun.Settings{Dataset: "CIRR", Stages: 2}, Tau: 0.3, TopK: 7, Alpha: 2, YesRule: "substring", Soft: true, PromptDir: "p"}
	p, err := PlanEval(spec)
	if err != nil {
		t.Fatal(err)
	}
	o := p.Options
	if o.Tau != 0.3 || o.TopK != 7 || o.Alpha != 2 || o.YesRule != "substring" || !o.Soft {
		t.Errorf("options %+v", o)
	}
	if p.Settings != spec.Settings || p.Saved != nil || p.Spec.PromptDir != "p" {
		t.Errorf("plan %+v", p)
	}
}

func TestPlanEvalResume(t *testing.T) {
	dir := t.TempDir()
	saved := evalrun.Settings{Dataset: "CIRR", Split: "val", Data: "d", Stages: 2, Active: 8}
	opt := pipeline.DefaultOptions()
	opt.TopK = 11
	if err := evalrun.Prepare(dir, saved, opt, nil, nil, map[string]any{"clip_model": "m", "weaviate_collection": "Coll"}); err != nil {
		t.Fatal(err)
	}
	asked := evalrun.Settings{Dataset: "x", Stages: 3, Barrier: true, Active: 2}
	cases := []struct {
		name    string
		given   []string
		want    evalrun.Settings
		wantErr string
	}{
		{"nothing given keeps the run", nil, saved, ""},
		{"stages extend, barrier and active change", []string{"stages", "barrier", "active"},
			evalrun.Settings{Dataset: "CIRR", Split: "val", Data: "d", Stages: 3, Barrier: true, Active: 2}, ""},
		{"a fixed setting is refused", []string{"top-k"}, evalrun.Settings{}, "--top-k cannot change on --resume"},
		{"the dataset is fixed", []string{"dataset"}, evalrun.Settings{}, "--dataset cannot change on --resume"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			given := map[string]bool{}
			for _, g := range c.given {
				given[g] = true
			}
			p, err := PlanEval(EvalSpec{Resume: dir, Given: given, Settings: asked, TopK: 99})
			if c.wantErr != "" {
				var ue *UsageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want a usage error with %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Settings != c.want {
				t.Errorf("settings %+v, want %+v", p.Settings, c.want)
			}
			if p.Options.TopK != 11 {
				t.Errorf("top-k %d: a resumed run keeps its options", p.Options.TopK)
			}
			if p.Spec.Weaviate != "Coll" || p.Spec.PromptDir != filepath.Join(dir, "prompts") {
				t.Errorf("weaviate %q prompts %q", p.Spec.Weaviate, p.Spec.PromptDir)
			}
		})
	}
	// A run can only be extended.
	short := asked
	short.Stages = 1
	if _, err := PlanEval(EvalSpec{Resume: dir, Given: map[string]bool{"stages": true}, Settings: short}); err == nil || !strings.Contains(err.Error(), "can only be extended") {
		t.Errorf("shortening the stages: %v", err)
	}
	if _, err := PlanEval(EvalSpec{Resume: filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "resume") {
		t.Errorf("missing run folder: %v", err)
	}
}

// A new run gets its folder with the run's record and model counters; a
// fresh run that cannot start leaves no folder behind.
func TestRunEvalFolder(t *testing.T) {
	ctx := context.Background()
	newCfg := func() *config.Config {
		cfg := config.Default(func(string) string { return "" })
		cfg.Home, cfg.Cache.Disabled = t.TempDir(), true
		cfg.CLIP.Model = testutil.CLIP(t, "tiny-clip-quickgelu")
		return cfg
	}
	spec := EvalSpec{Settings: evalrun.Settings{Dataset: "CIRR", Split: "val", Data: testutil.Datasets(t), Stages: 1, Active: 4, Limit: 2},
		Tau: 0.15, TopK: 5, Alpha: 1, YesRule: "word", RunName: "t", RunsRoot: t.TempDir()}
	p, err := PlanEval(spec)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	res, err := RunEval(ctx, newCfg(), p, EvalIO{Stderr: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if res.Report == nil || res.Metrics == nil || filepath.Dir(filepath.Dir(res.Dir)) != spec.RunsRoot ||
		!strings.HasPrefix(filepath.Base(res.Dir), "tiny-clip-quickgelu-t_") {
		t.Errorf("result %+v", res)
	}
	for _, f := range []string{"config.json", "run.log", "llm_stats.json", "metrics.txt"} {
		if _, err := os.Stat(filepath.Join(res.Dir, f)); err != nil {
			t.Errorf("run folder: %v", err)
		}
	}
	_, saved, err := evalrun.ReadSettings(res.Dir)
	if err != nil || saved["clip_model"] == nil || saved["image_db"] == nil {
		t.Errorf("config.json %v (%v)", saved, err)
	}

	spec.RunsRoot, spec.Weaviate = t.TempDir(), "Gallery"
	p, _ = PlanEval(spec)
	if res, err := RunEval(ctx, newCfg(), p, EvalIO{Stderr: io.Discard}); err == nil || (res != nil && res.Report != nil) {
		t.Fatalf("a run on an unreachable Weaviate started: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(spec.RunsRoot, "*", "*"))
	if len(left) != 0 {
		t.Errorf("a run that could not start left %v", left)
	}
}
