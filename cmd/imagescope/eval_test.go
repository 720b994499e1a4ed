package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/dataset"
	"github.com/imagescope/imagescope/internal/testutil"
)

type evalFixture struct {
	root, home, cfgPath, data, clipDir string
	srv                                *scriptedServer
}

func newEvalFixture(t *testing.T, cache bool) *evalFixture {
	t.Helper()
	f := &evalFixture{root: t.TempDir(), srv: newScriptedServer(t)}
	if d := os.Getenv("IMAGESCOPE_TEST_KEEP"); d != "" {
		// Keep the run folders for inspection.
		f.root = filepath.Join(d, t.Name())
		os.RemoveAll(f.root)
		os.MkdirAll(f.root, 0o755)
	}
	f.home = filepath.Join(f.root, "home")
	f.data = testutil.Datasets(t)
	f.clipDir = testutil.CLIP(t, "tiny-clip-quickgelu")
	f.cfgPath = filepath.Join(f.root, "config.yaml")
	if err := os.WriteFile(f.cfgPath, []byte(f.srv.configYAML(f.home, f.clipDir, cache)), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *evalFixture) env(k string) string {
	if k == "IMAGESCOPE_HOME" {
		return f.home
	}
	if k == "HF_HUB_OFFLINE" {
		return "1"
	}
	return ""
}

func (f *evalFixture) eval(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"eval", "--config", f.cfgPath}, args...), strings.NewReader(""), &out, &errb, f.env)
	return out.String(), errb.String(), code
}

// runDir finds the single run folder under runs/<dataset>_<split>/.
func runDir(t *testing.T, runs string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(runs, "*", "*"))
	if len(m) != 1 {
		t.Fatalf("run folders: %v", m)
	}
	return m[0]
}

func TestEvalEndToEndAllFixtures(t *testing.T) {
	cases := []struct {
		dataset, split string
		chat, test     bool
		submissions    []string
		extra          []string
	}{
		{"CIRR", "val", false, false, nil, nil},
		{"CIRR", "val", false, false, nil, []string{"--subset", "--run-name", "subset"}},
		{"CIRR", "test", false, true, []string{"stage3.recall_subset.json"}, []string{"--subset", "--run-name", "subset"}},
		{"CIRR", "test", false, true, []string{"stage1.recall.json", "stage3.recall_subset.json"}, nil},
		{"CIRCO", "val", false, false, nil, nil},
		{"CIRCO", "test", false, true, []string{"stage2.circo.json"}, nil},
		{"FashionIQ-dress", "val", false, false, nil, nil},
		{"FashionIQ-dress", "val", false, false, nil, []string{"--barrier", "--run-name", "barrier"}},
		{"FashionIQ-shirt", "val", false, false, nil, nil},
		{"FashionIQ-toptee", "val", false, false, nil, nil},
		{"Flickr30K", "test", false, false, nil, []string{"--limit", "6"}},
		{"MSCOCO", "test", false, false, nil, []string{"--limit", "6"}},
		{"VisDial", "val", true, false, nil, nil},
	}
	f := newEvalFixture(t, true)
	for _, tc := range cases {
		name := tc.dataset + "_" + tc.split + strings.Join(tc.extra, "")
		t.Run(name, func(t *testing.T) {
			runs := filepath.Join(f.root, "runs-"+name)
			args := append([]string{"--dataset", tc.dataset, "--data", f.data, "--split", tc.split, "--runs", runs, "--run-name", "e2e"}, tc.extra...)
			out, errs, code := f.eval(t, args...)
			if code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
			}
			dir := runDir(t, runs)
			t.Logf("stdout:\n%s", out)
			for _, name := range []string{"run.log", "config.json", "trace.jsonl", "report.txt", "report.json",
				"rankings.stage1.json", "rankings.stage2.json", "rankings.stage3.json", "prompts/general/reason.txt", "prompts/SOURCES.txt"} {
				if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
					t.Errorf("missing %s", name)
				}
			}
			if tc.dataset == "CIRR" && tc.test && tc.extra == nil {
				checkCIRRSubmissions(t, f.data, dir)
			}
			for _, s := range tc.submissions {
				b, err := os.ReadFile(filepath.Join(dir, "submissions", s))
				if err != nil || len(b) < 10 {
					t.Errorf("submission %s: %v", s, err)
				}
			}
			var rankings map[string]json.RawMessage
			b, _ := os.ReadFile(filepath.Join(dir, "rankings.stage3.json"))
			if err := json.Unmarshal(b, &rankings); err != nil || len(rankings) == 0 {
				t.Fatalf("rankings: %v %s", err, b)
			}
			if slices.Contains(tc.extra, "--subset") { // five candidates per query, no reference
				for id, raw := range rankings {
					var l []string
					if err := json.Unmarshal(raw, &l); err != nil || len(l) != 5 {
						t.Errorf("subset ranking %s: %s", id, raw)
					}
				}
			}
			if tc.chat {
				for id, raw := range rankings {
					var rounds [][]string
					if err := json.Unmarshal(raw, &rounds); err != nil || len(rounds) != 11 {
						t.Errorf("dialogue %s: %d rounds (%v)", id, len(rounds), err)
					}
				}
			}
			trace, _ := os.ReadFile(filepath.Join(dir, "trace.jsonl"))
			lines := strings.Split(strings.TrimSpace(string(trace)), "\n")
			wantLines := len(rankings)
			if tc.chat {
				wantLines *= 11
			}
			if len(lines) != wantLines {
				t.Errorf("trace has %d lines, want %d", len(lines), wantLines)
			}
			var first map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"stage1", "stage2", "stage3", "calls", "instruction"} {
				if _, ok := first[k]; !ok {
					t.Errorf("trace line lacks %q: %s", k, lines[0])
				}
			}
			if !tc.test {
				m, err := os.ReadFile(filepath.Join(dir, "metrics.json"))
				if err != nil {
					t.Fatal(err)
				}
				var metrics map[string]map[string]any
				if err := json.Unmarshal(m, &metrics); err != nil {
					t.Fatal(err)
				}
				for _, st := range []string{"stage1", "stage2", "stage3"} {
					if _, ok := metrics[st]; !ok {
						t.Errorf("metrics.json lacks %s: %s", st, m)
					}
				}
				if _, err := os.Stat(filepath.Join(dir, "recall.svg")); err != nil {
					t.Error("no plot")
				}
				if !strings.Contains(out, "stage 3") {
					t.Errorf("stdout lacks the metrics table:\n%s", out)
				}
			}
		})
	}
}

// checkCIRRSubmissions: the reference never appears; recall_subset lists
// hold at most 3 of the query's other img_set members.
func checkCIRRSubmissions(t *testing.T, data, dir string) {
	t.Helper()
	ds, err := dataset.Load(context.Background(), "CIRR", data, "test")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{"stage1", "stage2", "stage3"} {
		for _, metric := range []string{"recall", "recall_subset"} {
			b, err := os.ReadFile(filepath.Join(dir, "submissions", st+"."+metric+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var sub map[string]json.RawMessage
			if err := json.Unmarshal(b, &sub); err != nil {
				t.Fatal(err)
			}
			if string(sub["metric"]) != `"`+metric+`"` || string(sub["version"]) != `"rc2"` {
				t.Errorf("%s %s: header %s %s", st, metric, sub["metric"], sub["version"])
			}
			for _, q := range ds.Queries {
				var list []string
				if err := json.Unmarshal(sub[q.ID], &list); err != nil {
					t.Fatalf("%s %s query %s: %v", st, metric, q.ID, err)
				}
				for _, n := range list {
					if n == q.Reference {
						t.Errorf("%s %s query %s lists its reference", st, metric, q.ID)
					}
					if metric == "recall_subset" && !slices.Contains(q.Subset, n) {
						t.Errorf("%s query %s: %s is not a subset member", st, q.ID, n)
					}
				}
				if metric == "recall_subset" && len(list) != 3 {
					t.Errorf("%s query %s: %d subset names, want 3", st, q.ID, len(list))
				}
			}
		}
	}
}

// TestEvalInteractiveBeside runs VisDial over its own dialogues, then with
// generated questions answered by the simulated user, reported beside it.
func TestEvalInteractiveBeside(t *testing.T) {
	f := newEvalFixture(t, true)
	common := []string{"--dataset", "VisDial", "--data", f.data, "--split", "val"}
	givenRuns := filepath.Join(f.root, "runs-given")
	if out, errs, code := f.eval(t, append(common, "--runs", givenRuns)...); code != 0 {
		t.Fatalf("given dialogues: exit %d\n%s\n%s", code, out, errs)
	}
	given := runDir(t, givenRuns)
	runs := filepath.Join(f.root, "runs-interactive")
	out, errs, code := f.eval(t, append(common, "--runs", runs, "--interactive", "--beside", given)...)
	if code != 0 {
		t.Fatalf("interactive: exit %d\n%s\n%s", code, out, errs)
	}
	dir := runDir(t, runs)
	beside, err := os.ReadFile(filepath.Join(dir, "beside.txt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s\nbeside.txt:\n%s", out, beside)
	for _, want := range []string{"== stage1", "== stage3", "hits@10 giv"} {
		if !strings.Contains(string(beside), want) {
			t.Errorf("beside.txt lacks %q", want)
		}
	}
	var rep struct {
		Calls map[string]int `json:"calls"`
		Units int            `json:"units"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "report.json"))
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	// Every round after the caption asked one questioner call.
	if dialogues := rep.Units / 11; rep.Calls["questioner"] != 10*dialogues {
		t.Errorf("questioner calls %d for %d dialogues: %v", rep.Calls["questioner"], dialogues, rep.Calls)
	}
	// Bad combinations are refused before a run folder is made.
	if _, errs, code := f.eval(t, "--dataset", "CIRR", "--data", f.data, "--split", "val", "--runs", filepath.Join(f.root, "runs-bad"), "--interactive"); code == 0 || !strings.Contains(errs, "chat dataset") {
		t.Errorf("--interactive on CIRR: exit %d: %s", code, errs)
	}
}
