//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagescope/imagescope/internal/testutil"
	"github.com/imagescope/imagescope/llm"
	"github.com/imagescope/imagescope/pipeline"
	evalrun "github.com/imagescope/imagescope/run"
)

// The tests below run imagescope against a real Ollama server
// (scripts/ollama.sh, started by .ci/run) with configs/ollama.yaml, the
// model names replaced by the tiny random-weight models the script
// imports. Their replies are noise, so every fallback of the method is
// taken. Environment:
//
//	IMAGESCOPE_OLLAMA_URL           base URL (http://127.0.0.1:11534)
//	IMAGESCOPE_OLLAMA_TEXT_MODEL    text model (reasoner)
//	IMAGESCOPE_OLLAMA_VISION_MODEL  vision model (captioner, verifier, evaluator)
//	IMAGESCOPE_OLLAMA_STOP, _START  shell commands stopping and starting the server
type ollamaFixture struct {
	url, text, vision, stop, start string
}

func newOllamaFixture(t *testing.T) *ollamaFixture {
	t.Helper()
	f := &ollamaFixture{url: os.Getenv("IMAGESCOPE_OLLAMA_URL"), text: os.Getenv("IMAGESCOPE_OLLAMA_TEXT_MODEL"),
		vision: os.Getenv("IMAGESCOPE_OLLAMA_VISION_MODEL"), stop: os.Getenv("IMAGESCOPE_OLLAMA_STOP"), start: os.Getenv("IMAGESCOPE_OLLAMA_START")}
	if f.url == "" || f.text == "" || f.vision == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("IMAGESCOPE_OLLAMA_URL, _TEXT_MODEL and _VISION_MODEL must be set under CI (scripts/ollama.sh)")
		}
		t.Skip("IMAGESCOPE_OLLAMA_URL, _TEXT_MODEL or _VISION_MODEL not set")
	}
	return f
}

// config writes configs/ollama.yaml with the server, the models and the
// test CLIP substituted, the commented-out verifier enabled and an
// evaluator added (both on the vision model), home under dir.
func (f *ollamaFixture) config(t *testing.T, dir string, edit func(string) string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "configs", "ollama.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, must := range []string{"http://localhost:11434/v1", "llava:7b", "llama3:8b", "openai/clip-vit-base-patch32", "# verifier:"} {
		if !strings.Contains(s, must) {
			t.Fatalf("configs/ollama.yaml no longer holds %q: update this test", must)
		}
	}
	// Uncomment the verifier block.
	var out []string
	inVerifier := false
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "  # verifier:") {
			inVerifier = true
		}
		if inVerifier && strings.HasPrefix(l, "  #") {
			l = "  " + strings.TrimPrefix(l, "  # ")
		} else if inVerifier && strings.TrimSpace(l) != "" {
			inVerifier = false
		}
		out = append(out, l)
	}
	s = strings.Join(out, "\n")
	s = strings.NewReplacer("http://localhost:11434/v1", f.url+"/v1", "llava:7b", f.vision, "llama3:8b", f.text,
		"openai/clip-vit-base-patch32", testutil.CLIP(t, "tiny-clip-quickgelu")).Replace(s)
	s += fmt.Sprintf(`
  evaluator:
    endpoints: [%s/v1]
    model: %s
    max_in_flight: 1
    timeout: 120s
    max_tokens: 16
home: %s
`, f.url, f.vision, filepath.Join(dir, "home"))
	if edit != nil {
		s = edit(s)
	}
	p := filepath.Join(dir, "config.yaml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// short caps the reply lengths of configs/ollama.yaml (256 caption tokens,
// 1024 reasoner tokens): noise never stops early, and the tests only need
// replies, not long ones.
func short(s string) string {
	return strings.NewReplacer("max_tokens: 256", "max_tokens: 12", "max_tokens: 1024", "max_tokens: 48").Replace(s)
}

// sharedHome points a configuration at another test's home (its image DB,
// captions included) with an answer cache of its own.
func sharedHome(home, cache string) func(string) string {
	return func(s string) string {
		i := strings.LastIndex(s, "\nhome: ")
		return short(s[:i]) + "\nhome: " + home + "\ncache:\n  path: " + cache + "\n"
	}
}

func ollamaEnv(k string) string {
	if k == "HF_HUB_OFFLINE" {
		return "1"
	}
	return ""
}

func runCLI(ctx context.Context, t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, args, strings.NewReader(""), &out, &errb, ollamaEnv)
	return out.String(), errb.String(), code
}

// evalOllama runs eval of the first two queries of the CIRCO fixture split
// (all stages) and returns the run folder.
func evalOllama(ctx context.Context, t *testing.T, cfg, runs, name string, extra ...string) (string, string, int) {
	t.Helper()
	args := append([]string{"eval", "--config", cfg, "--dataset", "CIRCO", "--data", testutil.Datasets(t), "--split", "val",
		"--runs", runs, "--run-name", name, "--limit", "2"}, extra...)
	_, errs, code := runCLI(ctx, t, args...)
	m, _ := filepath.Glob(filepath.Join(runs, "*", "*-"+name+"_*"))
	if len(m) != 1 {
		return "", errs, code
	}
	return m[0], errs, code
}

func readRankings(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	for _, st := range []string{"stage1", "stage2", "stage3"} {
		r, err := os.ReadFile(filepath.Join(dir, "rankings."+st+".json"))
		if err != nil {
			t.Fatal(err)
		}
		b.Write(r)
	}
	return b.String()
}

func llmStats(t *testing.T, dir string) map[string]llm.Stats {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "llm_stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]llm.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// checkFallbacks reads trace.jsonl and checks that every fallback the
// replies call for is recorded, and that no call failed on the wire.
func checkFallbacks(t *testing.T, dir string) (lines int, fallbacks map[string]int) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fallbacks = map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var tl evalrun.TraceLine
		if err := json.Unmarshal(sc.Bytes(), &tl); err != nil {
			t.Fatal(err)
		}
		lines++
		for _, fb := range tl.Fallbacks {
			fallbacks[strings.SplitN(fb, ":", 2)[0]]++
		}
		if tl.Unfinished != "" {
			t.Errorf("query %s unfinished: %s", tl.ID, tl.Unfinished)
		}
		s1 := tl.Stage1
		if s1 == nil {
			t.Errorf("query %s: no stage 1", tl.ID)
			continue
		}
		if s1.Error != "" {
			t.Errorf("query %s: reasoner call failed: %s", tl.ID, s1.Error)
		}
		if _, _, fb := pipeline.ParseReasoning(s1.Reply, tl.Instruction, s1.ReferenceCaption); fb != "" && !slices.Contains(tl.Fallbacks, fb) {
			t.Errorf("query %s: the reasoner reply calls for fallback %q, trace records %v", tl.ID, fb, tl.Fallbacks)
		}
		if s2 := tl.Stage2; s2 != nil && s2.Skipped == "" {
			if s2.Error != "" {
				t.Errorf("query %s: proposer call failed: %s", tl.ID, s2.Error)
			}
			if _, props, ok := pipeline.ParsePropositions(s2.Reply); (!ok || len(props) == 0) && !slices.Contains(tl.Fallbacks, "propositions-missing") && !slices.Contains(tl.Fallbacks, "proposer-failed") {
				t.Errorf("query %s: no propositions in the proposer reply, trace records %v", tl.ID, tl.Fallbacks)
			}
			for _, v := range s2.Verifications {
				if v.Error != "" {
					t.Errorf("query %s: verification failed: %s", tl.ID, v.Error)
				}
			}
		}
		if s3 := tl.Stage3; s3 != nil {
			for _, ev := range s3.Evaluations {
				if ev.Error != "" {
					t.Errorf("query %s: evaluation of %s failed: %s", tl.ID, ev.Candidate, ev.Error)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines, fallbacks
}

// TestIntegrationOllamaEval: eval against real Ollama completes with no
// wire errors and every fallback recorded; a second run from the answer
// cache, a run interrupted and resumed, and a run across a server restart
// all write the same rankings.
func TestIntegrationOllamaEval(t *testing.T) {
	f := newOllamaFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	root := t.TempDir()

	// A: a fresh run.
	dirA := filepath.Join(root, "a")
	cfgA := f.config(t, dirA, short)
	runA, errs, code := evalOllama(ctx, t, cfgA, filepath.Join(dirA, "runs"), "first")
	if code != 0 {
		t.Fatalf("eval: exit %d\n%s", code, errs)
	}
	want := readRankings(t, runA)
	n, fbs := checkFallbacks(t, runA)
	t.Logf("run A: %d queries, fallbacks %v", n, fbs)
	if n != 2 || fbs["reasoner-unparseable"] == 0 {
		t.Errorf("trace: %d lines, fallbacks %v (the tiny reasoner's noise must take the parse fallback)", n, fbs)
	}
	stA := llmStats(t, runA)
	for role, st := range stA {
		if st.Failures != 0 || st.Retries != 0 {
			t.Errorf("%s: %d failures, %d retries against a healthy server", role, st.Failures, st.Retries)
		}
	}
	for _, role := range []string{"captioner", "reasoner", "evaluator"} {
		if stA[role].CacheMisses == 0 {
			t.Errorf("role %s never called the server: %+v", role, stA[role])
		}
	}

	// B: the same configuration again: every answer from the cache.
	runB, errs, code := evalOllama(ctx, t, cfgA, filepath.Join(dirA, "runs"), "second")
	if code != 0 {
		t.Fatalf("eval from cache: exit %d\n%s", code, errs)
	}
	if got := readRankings(t, runB); got != want {
		t.Errorf("second run from the answer cache ranks differently:\n%s\nfirst:\n%s", got, want)
	}
	for role, st := range llmStats(t, runB) {
		if st.CacheMisses != 0 {
			t.Errorf("second run: %s made %d calls to the server", role, st.CacheMisses)
		}
	}

	// C: A's image DB (captions made) with a fresh answer cache,
	// interrupted after the first stage-1 checkpoint, then resumed.
	dirC := filepath.Join(root, "c")
	cfgC := f.config(t, dirC, sharedHome(filepath.Join(dirA, "home"), filepath.Join(dirC, "answers.db")))
	runsC := filepath.Join(dirC, "runs")
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		_, _, code := evalOllama(cctx, t, cfgC, runsC, "interrupted")
		done <- code
	}()
	interrupted := false
	for !interrupted {
		select {
		case code := <-done:
			t.Logf("the run ended (exit %d) before it could be interrupted", code)
			interrupted = true
			continue
		case <-time.After(100 * time.Millisecond):
		}
		if m, _ := filepath.Glob(filepath.Join(runsC, "*", "*", "checkpoints", "stage1.jsonl")); len(m) == 1 {
			if b, _ := os.ReadFile(m[0]); bytes.Count(b, []byte("\n")) >= 1 {
				ccancel()
				<-done
				interrupted = true
			}
		}
	}
	ccancel()
	m, _ := filepath.Glob(filepath.Join(runsC, "*", "*-interrupted_*"))
	if len(m) != 1 {
		t.Fatalf("interrupted run folder: %v", m)
	}
	if _, errs, code := runCLI(ctx, t, "eval", "--config", cfgC, "--resume", m[0]); code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, errs)
	}
	if got := readRankings(t, m[0]); got != want {
		t.Errorf("interrupted and resumed run ranks differently:\n%s\nuninterrupted:\n%s", got, want)
	}
	checkFallbacks(t, m[0])

	// D: A's image DB with a fresh answer cache; the server is stopped and
	// started again while the run is in progress. The run rides it out.
	if f.stop == "" || f.start == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("IMAGESCOPE_OLLAMA_STOP and _START must be set under CI")
		}
		t.Skip("IMAGESCOPE_OLLAMA_STOP/_START not set: restart not tested")
	}
	dirD := filepath.Join(root, "d")
	cfgD := f.config(t, dirD, sharedHome(filepath.Join(dirA, "home"), filepath.Join(dirD, "answers.db")))
	runsD := filepath.Join(dirD, "runs")
	type result struct {
		dir, errs string
		code      int
	}
	res := make(chan result, 1)
	go func() {
		d, e, c := evalOllama(ctx, t, cfgD, runsD, "restart")
		res <- result{d, e, c}
	}()
	// Wait until the run is under way (its folder exists), then let its
	// first model calls start.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if m, _ := filepath.Glob(filepath.Join(runsD, "*", "*", "run.log")); len(m) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run made no model call in 2 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	if out, err := exec.Command("sh", "-c", f.stop).CombinedOutput(); err != nil {
		t.Fatalf("stop Ollama: %v\n%s", err, out)
	}
	time.Sleep(3 * time.Second)
	if out, err := exec.Command("sh", "-c", f.start).CombinedOutput(); err != nil {
		t.Fatalf("start Ollama: %v\n%s", err, out)
	}
	r := <-res
	if r.code != 0 {
		t.Fatalf("eval across a server restart: exit %d\n%s", r.code, r.errs)
	}
	checkFallbacks(t, r.dir)
	retries := int64(0)
	for role, st := range llmStats(t, r.dir) {
		if st.Failures != 0 {
			t.Errorf("%s: %d failed calls across the restart", role, st.Failures)
		}
		retries += st.Retries
	}
	if retries == 0 {
		t.Errorf("no call was retried: the restart happened outside the run")
	}
	if got := readRankings(t, r.dir); got != want {
		t.Errorf("run across a server restart ranks differently:\n%s\nundisturbed:\n%s", got, want)
	}
}

// TestIntegrationOllamaSearchServe: search and serve with configs/ollama.yaml
// against real Ollama; misconfigured models give errors naming the role,
// endpoint and model.
func TestIntegrationOllamaSearchServe(t *testing.T) {
	f := newOllamaFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfg := f.config(t, dir, short)
	photos := copyFixtureImages(t, false)

	out, errs, code := runCLI(ctx, t, "search", "a bright square", "--config", cfg, "--gallery", photos, "--json")
	if code != 0 {
		t.Fatalf("search: exit %d\n%s", code, errs)
	}
	var res pipeline.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("search --json: %v\n%s", err, out)
	}
	if len(res.Ranking) != 4 {
		t.Errorf("search ranked %d images, want 4", len(res.Ranking))
	}
	var s1 *pipeline.Stage1
	for _, st := range res.Stages {
		if st.Stage1 != nil {
			s1 = st.Stage1
		}
	}
	if s1 == nil || s1.Error != "" || len(s1.Fallbacks) == 0 {
		t.Errorf("stage 1: %+v (want a reasoner reply and its fallback recorded)", s1)
	}

	base, _, stop := startServe(t, ctx, ollamaEnv, []string{"serve", "--config", cfg, "--gallery", photos, "--addr", "127.0.0.1:0"})
	resp, err := http.Post(base+"api/search", "application/json", strings.NewReader(`{"text":"a gray picture","limit":3}`))
	if err != nil {
		t.Fatal(err)
	}
	var sres struct {
		Results []struct{ Name string } `json:"results"`
		Stages  []struct{ Name, Status, Reason string }
	}
	err = json.NewDecoder(resp.Body).Decode(&sres)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(sres.Results) != 3 {
		t.Fatalf("serve search: HTTP %d %v %+v", resp.StatusCode, err, sres)
	}
	for _, st := range sres.Stages {
		if st.Status == "failed" || st.Status == "error" {
			t.Errorf("serve stage %+v", st)
		}
	}
	stop()

	// An unknown model names role, endpoint and model, and what is served.
	bad := f.config(t, filepath.Join(dir, "bad"), func(s string) string { return strings.Replace(s, "model: "+f.text, "model: llama-not-pulled", 1) })
	_, errs, code = runCLI(ctx, t, "search", "x", "--config", bad, "--gallery", photos)
	for _, want := range []string{"reasoner", "llama-not-pulled", f.url + "/v1", f.text} {
		if code == 0 || !strings.Contains(errs, want) {
			t.Errorf("unknown model: exit %d, stderr lacks %q:\n%s", code, want, errs)
		}
	}
	// A text-only model as captioner is refused before any call.
	blind := f.config(t, filepath.Join(dir, "blind"), func(s string) string { return strings.Replace(s, "model: "+f.vision, "model: "+f.text, 1) })
	_, errs, code = runCLI(ctx, t, "search", "x", "--config", blind, "--gallery", photos)
	for _, want := range []string{"captioner", f.text, "cannot take images"} {
		if code == 0 || !strings.Contains(errs, want) {
			t.Errorf("text model as captioner: exit %d, stderr lacks %q:\n%s", code, want, errs)
		}
	}
}
