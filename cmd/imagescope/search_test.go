package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/internal/adapt"
	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/pipeline"
)

func TestSearchCommand(t *testing.T) {
	f := newEvalFixture(t, true)
	gal := testutil.Data(t, "datasets", "CIRCO", "unlabeled2017")

	// Composed query with every role configured, JSON output.
	out, errs, code := f.search(t, "is blue instead of red", "--ref", filepath.Join(gal, "000000001001.jpg"), "--gallery", gal, "--json", "-n", "5")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	var res struct {
		Ranking []struct {
			Name    string `json:"name"`
			Verdict string `json:"verdict"`
		} `json:"ranking"`
		Stages  []map[string]any  `json:"stages"`
		Skipped map[string]string `json:"skipped"`
		Paths   map[string]string `json:"paths"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(res.Ranking) != 5 || len(res.Stages) != 3 || len(res.Skipped) != 0 {
		t.Fatalf("ranking %d stages %d skipped %v", len(res.Ranking), len(res.Stages), res.Skipped)
	}
	for _, c := range res.Ranking {
		if c.Name == "000000001001.jpg" {
			t.Error("the reference image is ranked")
		}
		if res.Paths[c.Name] == "" {
			t.Errorf("no path for %s", c.Name)
		}
	}

	// Only CLIP configured: stages 2 and 3 and the reasoner are skipped, and the output says why.
	cfg := filepath.Join(f.root, "clip-only.yaml")
	os.WriteFile(cfg, []byte("home: "+f.home+"\nclip:\n  model: "+testutil.CLIP(t, "tiny-clip-quickgelu")+"\n"), 0o644)
	out, errs, code = f.searchWith(t, cfg, "a red circle", "--gallery", gal)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	// Each skipped stage is said once; no reference line without a
	// reference; the score columns name their stage.
	for _, want := range []string{"stage 2: verify skipped: no reasoner or proposer configured", "stage 3: evaluate skipped: no evaluator configured", "skipped reasoning", "ranking:", "s1 score", "s1 rank"} {
		if n := strings.Count(out, want); n != 1 {
			t.Errorf("output holds %q %d times, want once:\n%s", want, n, out)
		}
	}
	for _, unwanted := range []string{"reference caption", "no evaluator configured\nskipped", "s2 agree"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("output holds %q:\n%s", unwanted, out)
		}
	}
	if n := strings.Count(out, "no evaluator configured"); n != 1 {
		t.Errorf("the evaluator's absence is said %d times:\n%s", n, out)
	}

	// More like this: a reference and no text; stages 2 and 3 skipped,
	// the reference left out, no model asked.
	out, errs, code = f.search(t, "--ref", "000000001001.jpg", "--gallery", gal, "-n", "3")
	if code != 0 {
		t.Fatalf("more like this: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"retrieve by image", "stage 2: verify skipped: no text to verify", "stage 3: evaluate skipped: no text to verify", "reference caption"} {
		if n := strings.Count(out, want); n != 1 {
			t.Errorf("more like this: output holds %q %d times, want once:\n%s", want, n, out)
		}
	}
	rank := out[strings.Index(out, "ranking:"):]
	if strings.Contains(rank, "000000001001.jpg ") || strings.Count(rank, "\n") != 5 {
		t.Errorf("more like this ranking:\n%s", rank)
	}

	// A chat from a file.
	dlg := filepath.Join(f.root, "dialog.txt")
	os.WriteFile(dlg, []byte("a single shape\nwhat color is it? blue\n"), 0o644)
	out, errs, code = f.search(t, "is it round? yes", "--dialog", dlg, "--gallery", gal, "--stages", "s1")
	if code != 0 || !strings.Contains(out, "stage 1 round 2") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}

	// Asking back, in German: the question offered is the one whose
	// answer best splits the probed top candidates (yes-fraction closest
	// to 1/2, ties to the earlier question), and it is shown in German.
	os.WriteFile(dlg, []byte("eine einzelne Form\n"), 0o644)
	out, errs, code = f.search(t, "--dialog", dlg, "--gallery", gal, "--stages", "s1", "--ask", "--set", "ask.probe=6")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	checkAskedBest(t, out)
	if !strings.Contains(out, " of 6 top candidates]") {
		t.Errorf("ask.probe=6 not applied:\n%s", out)
	}
	if !strings.Contains(out, "next question: Ist die Form ") {
		t.Errorf("the question is not shown in German:\n%s", out)
	}
	if f.srv.noLanguageRule != 0 {
		t.Errorf("%d reasoner prompts without the language rule", f.srv.noLanguageRule)
	}

	// Bad usage.
	if _, _, code := f.search(t, "x"); code != 2 {
		t.Errorf("no gallery: exit %d, want 2", code)
	}
	if _, errs, code := f.search(t, "x", "--gallery", gal, "--dialog", filepath.Join(f.root, "missing.txt")); code != 1 || !strings.Contains(errs, "missing.txt") {
		t.Errorf("missing dialog file: exit %d: %s", code, errs)
	}
}

// checkAskedBest reads the "asking back" lines of search's output and
// checks that the starred question has the best split.
func checkAskedBest(t *testing.T, out string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^ ([ *]) (.*)  \[yes on (\d+) of (\d+) top candidates\]$`)
	m := re.FindAllStringSubmatch(out, -1)
	if len(m) < 2 {
		t.Fatalf("fewer than two questions proposed:\n%s", out)
	}
	best, chosen := -1, -1
	split := func(i int) float64 {
		y, _ := strconv.Atoi(m[i][3])
		n, _ := strconv.Atoi(m[i][4])
		return math.Abs(float64(y)/float64(n) - 0.5)
	}
	for i := range m {
		if best < 0 || split(i) < split(best) {
			best = i
		}
		if m[i][1] == "*" {
			chosen = i
		}
	}
	if chosen != best {
		t.Errorf("chose question %d, the best split is %d:\n%s", chosen, best, out)
	}
	worst := 0
	for i := range m {
		if split(i) > split(worst) {
			worst = i
		}
	}
	if split(worst) == split(best) {
		t.Errorf("the questions do not differ in how they split the candidates:\n%s", out)
	}
}

func (f *evalFixture) search(t *testing.T, args ...string) (string, string, int) {
	return f.searchWith(t, f.cfgPath, args...)
}

func (f *evalFixture) searchWith(t *testing.T, cfg string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb strings.Builder
	code := run(t.Context(), append([]string{"search", "--config", cfg}, args...), strings.NewReader(""), &out, &errb, f.env)
	return out.String(), errb.String(), code
}

func TestPrintRankingColumns(t *testing.T) {
	two, one := 2, 1
	ranking := []pipeline.Candidate{
		{Name: "b.jpg", Score: 0.31, Agreement: &two, Verdict: "yes", Ranks: []pipeline.StageRank{{Stage: 1, Rank: 2}, {Stage: 2, Rank: 1}, {Stage: 3, Rank: 1}}},
		{Name: "a.jpg", Score: 0.35, Agreement: &one, Verdict: "no", Ranks: []pipeline.StageRank{{Stage: 1, Rank: 1}, {Stage: 2, Rank: 2}, {Stage: 3, Rank: 2}}},
	}
	var b strings.Builder
	printRanking(&b, ranking, adapt.FileImages{"a.jpg": "/p/a.jpg"})
	want := "\nranking:\n" +
		"rank  name                            s1 score s1 rank s2 agree s2 rank s3 verdict  file\n" +
		"   1  b.jpg                             0.3100       2        2       1 yes         \n" +
		"   2  a.jpg                             0.3500       1        1       2 no          /p/a.jpg\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	var first strings.Builder
	printFirstResults(&env{stdout: &first}, ranking, 1)
	if got := first.String(); !strings.Contains(got, "first results (stage 1") || !strings.Contains(got, "b.jpg") || strings.Contains(got, "a.jpg") {
		t.Errorf("first results:\n%s", got)
	}
}

// TestFirstRunGalleryChecks: a missing or image-less gallery folder is
// reported before any CLIP model is loaded (here the default hub model with
// the hub out of reach, which would otherwise be the first error).
func TestFirstRunGalleryChecks(t *testing.T) {
	home := t.TempDir()
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"IMAGESCOPE_HOME": home}
	// The hub client reads the process environment.
	t.Setenv("HF_HOME", filepath.Join(home, "hf"))
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_HUB_OFFLINE", "")
	t.Setenv("HF_ENDPOINT", "http://127.0.0.1:1")
	for _, c := range []struct{ dir, want string }{
		{filepath.Join(empty, "nope"), "does not exist"},
		{empty, "holds no images"},
	} {
		for _, cmd := range []string{"search", "serve"} {
			args := []string{cmd, "--gallery", c.dir}
			if cmd == "search" {
				args = append(args, "a cat")
			}
			code, _, errOut := runCmd(t, env, args...)
			if code != 1 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "CLIP") {
				t.Errorf("%s --gallery %s: exit %d, stderr %q; want 1 and %q before any model loads", cmd, c.dir, code, errOut, c.want)
			}
		}
	}
	// With a gallery but no model reachable: the hint says what to do.
	gal := testutil.Data(t, "datasets", "CIRCO", "unlabeled2017")
	code, _, errOut := runCmd(t, env, "search", "--gallery", gal, "a cat")
	if code != 1 || !strings.Contains(errOut, "--clip DIR") || !strings.Contains(errOut, "HF_HUB_OFFLINE") {
		t.Errorf("unreachable hub: exit %d, stderr %q", code, errOut)
	}
}

// TestSearchGalleryShowsIndexProgress: search --gallery reports indexing
// progress the way index does (here: not a terminal, so progress log lines).
func TestSearchGalleryShowsIndexProgress(t *testing.T) {
	env := map[string]string{"IMAGESCOPE_HOME": t.TempDir()}
	gal := testutil.Data(t, "datasets", "CIRCO", "unlabeled2017")
	code, out, errOut := runCmd(t, env, "search", "a teal square", "--gallery", gal, "--clip", testutil.CLIP(t, "tiny-clip-quickgelu"))
	if code != 0 || !strings.Contains(out, "ranking:") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if !regexp.MustCompile(`msg="index folder_unlabeled2017_[0-9a-f]+ finished" done=10 total=10`).MatchString(errOut) {
		t.Errorf("no indexing progress on stderr:\n%s", errOut)
	}
}
