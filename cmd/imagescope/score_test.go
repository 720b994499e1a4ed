package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/metrics"
)

// runCmd runs the CLI in-process from the repository root.
func runCmd(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Chdir(testutil.RepoRoot(t))
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

func fixturesRoot(t *testing.T) string { return testutil.Datasets(t) }

// TestScoreQuickStart runs the README's quick-start command and checks the
// exact JSON it prints.
func TestScoreQuickStart(t *testing.T) {
	code, out, errOut := runCmd(t, nil, "score", "--dataset", "CIRR", "--data", "testdata/datasets", "--split", "val",
		"--ranking", "testdata/sample/cirr_val_ranking.json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := `{"dataset":"CIRR","split":"val","queries":3,"missing":0,"labelled":true,` +
		`"recall@1":0.3333333333333333,"recall@2":0.6666666666666666,"recall@3":1,"recall@5":1,"recall@10":1,"recall@20":1,"recall@50":1,"recall@100":1,` +
		`"recall_subset@1":0.3333333333333333,"recall_subset@2":0.6666666666666666,"recall_subset@3":1}` + "\n"
	if out != want {
		t.Errorf("stdout =\n%s\nwant\n%s", out, want)
	}
	for _, w := range []string{"CIRR val: 3 queries scored", "recall@1", "33.33", "recall_subset@3", "100.00"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr table lacks %q:\n%s", w, errOut)
		}
	}
}

func TestScoreSamples(t *testing.T) {
	third, two := 1.0/3, 2.0/3
	ap := (1 + (1+2.0/3+3.0/5)/3 + (1.0/3+2.0/4)/2) / 3
	cases := []struct {
		args    []string
		want    map[string]any
		warning string
	}{
		{[]string{"--dataset", "cirr", "--split", "valid", "--ranking", "testdata/sample/cirr_val_ranking.json", "--soft", "--reference-code", "--recall-k", "1,2,3"},
			map[string]any{"recall@1": third, "recall@2": two, "recall@3": 1.0, "recall_subset@2": two, "soft_recall@2": 2.5 / 3, "refcode_recall@1": 0.0, "refcode_recall@3": two, "recall@5": nil}, ""},
		{[]string{"--dataset", "CIRCO", "--split", "val", "--ranking", "testdata/sample/circo_val_ranking.json"},
			map[string]any{"map@5": ap, "map@10": ap, "map@25": ap, "map@50": ap, "recall@1": two, "recall@5": 1.0}, ""},
		{[]string{"--dataset", "CIRCO", "--split", "val", "--ranking", "testdata/sample/circo_val_submission.json", "--map-k", "5"},
			map[string]any{"map@5": ap, "map@10": nil}, ""},
		{[]string{"--dataset", "CIRCO", "--split", "test", "--ranking", "testdata/sample/circo_test_submission.json"},
			map[string]any{"labelled": false, "queries": 2.0, "map@5": nil}, ""},
		{[]string{"--dataset", "FashionIQ", "--split", "val", "--ranking", "testdata/sample/fashioniq_val_ranking.json", "--recall-k", "1,10,50"},
			map[string]any{"recall@10": two, "recall@50": two, "recall@1": 1.0 / 3, "recall@10/dress": 0.5, "recall@10/shirt": 1.0, "recall@10/toptee": 0.5, "queries": 6.0, "missing": 1.0},
			"1 of 2 FashionIQ-toptee val queries have no ranking"},
		{[]string{"--dataset", "FashionIQ-dress", "--split", "val", "--ranking", "testdata/sample/fashioniq_dress_val_ranking.json"},
			map[string]any{"recall@10": 0.5, "recall@50": 0.5}, ""},
		{[]string{"--dataset", "Flickr30K", "--split", "test", "--ranking", "testdata/sample/flickr30k_test_ranking.json"},
			map[string]any{"recall@1": 10.0 / 15, "recall@5": 1.0, "recall@10": 1.0, "queries": 15.0}, ""},
		{[]string{"--dataset", "MSCOCO", "--split", "test", "--ranking", "testdata/sample/mscoco_test_ranking.json"},
			map[string]any{"recall@1": 0.875, "recall@5": 0.9375, "recall@10": 0.9375, "queries": 16.0, "missing": 1.0},
			"1 of 16 MSCOCO test queries have no ranking in testdata/sample/mscoco_test_ranking.json; counted as misses"},
		{[]string{"--dataset", "VisDial", "--split", "val", "--ranking", "testdata/sample/visdial_val_ranking.json", "--reference-code"},
			map[string]any{
				"hits@1":         []any{0.0, 0.0, 0.0, 0.0, .5, .5, .5, .5, .5, .5, .5},
				"hits@10":        []any{1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
				"hits@3":         []any{.5, .5, .5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
				"refcode_hits@1": []any{0.0, 0.0, 0.0, .5, .5, .5, .5, .5, .5, .5},
			}, ""},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args[:2], " "), func(t *testing.T) {
			code, out, errOut := runCmd(t, nil, append([]string{"score", "--data", fixturesRoot(t)}, c.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
			}
			for k, w := range c.want {
				g, ok := got[k]
				switch {
				case w == nil && ok:
					t.Errorf("%s present (%v), want absent", k, g)
				case w == nil:
				case !ok:
					t.Errorf("%s missing", k)
				default:
					if !approxEqual(g, w) {
						t.Errorf("%s = %v, want %v", k, g, w)
					}
				}
			}
			if c.warning != "" && !strings.Contains(errOut, c.warning) {
				t.Errorf("stderr lacks warning %q:\n%s", c.warning, errOut)
			}
			if c.warning == "" && strings.Contains(errOut, "warning") {
				t.Errorf("unexpected warning:\n%s", errOut)
			}
		})
	}
}

func approxEqual(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && x-y < 1e-12 && y-x < 1e-12
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !approxEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}

// TestScoreCIRRSubmissions writes the two CIRR server files for test1 and
// validates them with 'score' (no labels, so no metrics), without images.
func TestScoreCIRRSubmissionsWithoutImages(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(fixturesRoot(t), "CIRR")
	for _, rel := range []string{"captions/cap.rc2.test1.json", "image_splits/split.rc2.test1.json", "captions/cap.rc2.val.json", "image_splits/split.rc2.val.json"} {
		data, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, "CIRR", rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gal := []string{"test1-902-3-img1", "test1-40-0-img0", "test1-40-0-img1", "test1-41-2-img0", "test1-41-2-img1", "test1-902-1-img0"}
	lists := map[string][]string{"201": gal, "202": gal, "203": gal}
	ds, err := dataset.Load(context.Background(), "CIRR", root, "test")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, m := range []string{metrics.CIRRRecall, metrics.CIRRRecallSubset} {
		sub, err := metrics.CIRRSubmissionLists(ds, lists, m)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := metrics.WriteCIRRSubmission(&buf, m, sub, 50); err != nil {
			t.Fatal(err)
		}
		files[m] = filepath.Join(root, m+".json")
		if err := os.WriteFile(files[m], buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := runCmd(t, nil, "score", "--dataset", "CIRR", "--data", filepath.Join(root, "CIRR"), "--split", "test",
		"--ranking", files[metrics.CIRRRecall], "--ranking", files[metrics.CIRRRecallSubset])
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if out != `{"dataset":"CIRR","split":"test1","queries":3,"missing":0,"labelled":false}`+"\n" {
		t.Errorf("stdout = %s", out)
	}
	// The val split scores from annotations alone too (no image files here).
	code, _, errOut = runCmd(t, nil, "score", "--dataset", "CIRR", "--data", root, "--ranking", "testdata/sample/cirr_val_ranking.json")
	if code != 0 {
		t.Fatalf("val without images: exit %d: %s", code, errOut)
	}
}
