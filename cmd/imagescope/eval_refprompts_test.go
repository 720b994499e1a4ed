package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeReferencePrompts writes sample prompt files of our own in the
// reference implementation's layout (a folder per dataset, [[...]]
// placeholders). The lines the scripted server reads ("Request:", ...)
// are in them so that its replies make sense.
func writeReferencePrompts(t *testing.T, dir string, datasets ...string) {
	t.Helper()
	for _, ds := range datasets {
		ref := "Starting picture (as a caption): [[REF_IMAGE_DESC]]"
		if ds == "VisDial" {
			ref = "Running description so far: [[REF_IMAGE_DESC]]"
		}
		instr := "Request: [[INSTRUCTION]]"
		if ds == "VisDial" {
			instr = "New piece of the conversation: [[INSTRUCTION]]"
		}
		files := map[string]string{
			"prompt1_stage1_reasoner.txt":  "Sample " + ds + " reasoner prompt.\n" + ref + "\n" + instr + "\nReply with step1 and step2 in JSON.\n",
			"prompt2_stage2_reasoner.txt":  "Sample " + ds + " proposer prompt.\nRequest: [[INSTRUCTION]]\nInstructions:[[ATOMIC_INST]]Write step2 as [question, answer] pairs.\n",
			"prompt3_stage3_evaluator.txt": "Sample " + ds + " evaluator prompt.\nRequest: [[INSTRUCTION]]\nStart with ANSWER: Yes or ANSWER: No.\n",
			"caption.txt":                  "Sample " + ds + " caption prompt: one sentence.\n",
		}
		if err := os.MkdirAll(filepath.Join(dir, ds), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(dir, ds, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

type traceUnit struct {
	Instruction string `json:"instruction"`
	Stage1      *struct {
		ReferenceCaption string `json:"reference_caption"`
		Atomic           []struct {
			Type    string `json:"type"`
			Content string `json:"content"`
		} `json:"atomic"`
	} `json:"stage1"`
	Stage2 *struct {
		Propositions []struct {
			Question string `json:"question"`
		} `json:"propositions"`
	} `json:"stage2"`
	Stage3 *struct {
		Instruction string `json:"instruction"`
		Evaluations []any  `json:"evaluations"`
	} `json:"stage3"`
}

func readTrace(t *testing.T, dir string) []traceUnit {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "trace.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []traceUnit
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var u traceUnit
		if err := json.Unmarshal(sc.Bytes(), &u); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

// TestEvalReferencePrompts runs fixture benchmarks with a prompts folder in
// the reference layout and checks that every request's text is the
// placeholders substituted into those files, that the run folder records
// them, and that a resume leaves that record alone.
func TestEvalReferencePrompts(t *testing.T) {
	f := newEvalFixture(t, false)
	prompts := filepath.Join(f.root, "refprompts")
	writeReferencePrompts(t, prompts, "CIRCO", "VisDial")
	file := func(ds, name string) string {
		b, err := os.ReadFile(filepath.Join(prompts, ds, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, ds := range []string{"CIRCO", "VisDial"} {
		t.Run(ds, func(t *testing.T) {
			before := map[string]int{}
			for _, m := range []string{"captioner", "reasoner", "verifier", "evaluator"} {
				before[m] = len(f.srv.requestTexts(m))
			}
			split := "val"
			runs := filepath.Join(f.root, "runs-"+ds)
			args := []string{"--dataset", ds, "--data", f.data, "--split", split, "--runs", runs, "--prompts", prompts, "--db", filepath.Join(f.root, ds+".db")}
			if ds == "VisDial" {
				args = append(args, "--limit", "1")
			}
			out, errs, code := f.eval(t, append(args, "--stages", "s1")...)
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out, errs)
			}
			dir := runDir(t, runs)
			sources, err := os.ReadFile(filepath.Join(dir, "prompts", "SOURCES.txt"))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"# layout: reference", ds + "/prompt1_stage1_reasoner.txt\t" + filepath.Join(prompts, ds, "prompt1_stage1_reasoner.txt"), ds + "/verify.txt\tembedded:"} {
				if !strings.Contains(string(sources), want) {
					t.Errorf("SOURCES.txt lacks %q:\n%s", want, sources)
				}
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "prompts", ds, "prompt2_stage2_reasoner.txt")); string(b) != file(ds, "prompt2_stage2_reasoner.txt") {
				t.Errorf("run copy of prompt2 = %q", b)
			}
			// Extend the run to stages 2 and 3: the record of the prompts
			// stays as the first run wrote it.
			out, errs, code = f.eval(t, "--resume", dir, "--stages", "s1,s2,s3")
			if code != 0 {
				t.Fatalf("resume: exit %d\n%s\n%s", code, out, errs)
			}
			if again, _ := os.ReadFile(filepath.Join(dir, "prompts", "SOURCES.txt")); !bytes.Equal(again, sources) {
				t.Errorf("resume rewrote SOURCES.txt:\n%s\nwas:\n%s", again, sources)
			}

			sent := map[string][]string{}
			for m, n := range before {
				sent[m] = f.srv.requestTexts(m)[n:]
			}
			if len(sent["captioner"]) == 0 {
				t.Error("no captioner request")
			}
			for _, c := range sent["captioner"] {
				if c != file(ds, "caption.txt") {
					t.Fatalf("captioner request %q, want caption.txt as written", c)
				}
			}
			var want1, want2, want3 []string
			for _, u := range readTrace(t, dir) {
				if u.Stage1 == nil || u.Stage2 == nil || u.Stage3 == nil {
					t.Fatalf("unit not finished: %+v", u)
				}
				p1 := strings.ReplaceAll(file(ds, "prompt1_stage1_reasoner.txt"), "[[INSTRUCTION]]", u.Instruction)
				want1 = append(want1, strings.ReplaceAll(p1, "[[REF_IMAGE_DESC]]", strings.TrimSpace(u.Stage1.ReferenceCaption)))
				atomic := "\n"
				for i, a := range u.Stage1.Atomic {
					atomic += fmt.Sprintf("   (%d) %s: %s\n", i+1, a.Type, a.Content)
				}
				p2 := strings.ReplaceAll(file(ds, "prompt2_stage2_reasoner.txt"), "[[INSTRUCTION]]", u.Instruction)
				want2 = append(want2, strings.ReplaceAll(p2, "[[ATOMIC_INST]]", atomic))
				if len(u.Stage3.Evaluations) > 0 {
					want3 = append(want3, strings.ReplaceAll(file(ds, "prompt3_stage3_evaluator.txt"), "[[INSTRUCTION]]", u.Stage3.Instruction))
				}
				if ds == "VisDial" && u.Stage1.ReferenceCaption == "" {
					t.Error("chat round without a carried description")
				}
			}
			got := sent["reasoner"]
			want := append(append([]string(nil), want1...), want2...)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("reasoner requests differ from the substituted files:\ngot  %q\nwant %q", got, want)
			}
			got3 := slices.Compact(slices.Sorted(slices.Values(sent["evaluator"])))
			want3 = slices.Compact(slices.Sorted(slices.Values(want3)))
			if len(want3) == 0 || !slices.Equal(got3, want3) {
				t.Errorf("evaluator requests:\ngot  %q\nwant %q", got3, want3)
			}
			// The budget config.json records for each role is what its
			// requests carried.
			var cfgJSON struct {
				Roles map[string]struct {
					MaxTokens int `json:"max_tokens"`
				} `json:"roles_config"`
			}
			b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
			if err := json.Unmarshal(b, &cfgJSON); err != nil {
				t.Fatal(err)
			}
			for _, role := range []string{"captioner", "reasoner", "verifier", "evaluator"} {
				want := cfgJSON.Roles[role].MaxTokens
				if got := f.srv.maxTokensSeen(role); want == 0 || !slices.Equal(got, []int{want}) {
					t.Errorf("%s: requests carried max_tokens %v, config.json says %d", role, got, want)
				}
			}
			for _, v := range sent["verifier"] {
				if !strings.HasPrefix(v, "Look at the picture and reply with a single word, yes or no.") {
					t.Fatalf("verifier request %q: want our verifier prompt", v)
				}
			}
		})
	}
}

// TestEvalTraceCallsAreRequestsSent checks the counters a run folder shows:
// trace.jsonl and report.json count in `calls` the requests that reached a
// model server and in `cache_hits` the answers the answer cache gave.
func TestEvalTraceCallsAreRequestsSent(t *testing.T) {
	f := newEvalFixture(t, true)
	total := func() int {
		n := 0
		for _, m := range []string{"reasoner", "verifier", "evaluator"} {
			n += f.srv.count(m)
		}
		return n
	}
	sums := func(dir string) (calls, hits int) {
		b, err := os.ReadFile(filepath.Join(dir, "trace.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var u struct {
				Calls     map[string]int `json:"calls"`
				CacheHits map[string]int `json:"cache_hits"`
			}
			if err := json.Unmarshal([]byte(line), &u); err != nil {
				t.Fatal(err)
			}
			for role, v := range u.Calls {
				if role != "captioner" { // the gallery's captions are not per unit
					calls += v
				}
			}
			for role, v := range u.CacheHits {
				if role != "captioner" {
					hits += v
				}
			}
		}
		var rep struct {
			Calls     map[string]int `json:"calls"`
			CacheHits map[string]int `json:"cache_hits"`
		}
		b, _ = os.ReadFile(filepath.Join(dir, "report.json"))
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		var rc, rh int
		for role, v := range rep.Calls {
			if role != "captioner" {
				rc += v
			}
		}
		for role, v := range rep.CacheHits {
			if role != "captioner" {
				rh += v
			}
		}
		if rc != calls || rh != hits {
			t.Errorf("report.json calls %d / cache hits %d, trace %d / %d", rc, rh, calls, hits)
		}
		return calls, hits
	}
	db := filepath.Join(f.root, "circo.db")
	var dirs []string
	var sent []int
	for i := range 2 {
		runs := filepath.Join(f.root, fmt.Sprintf("runs%d", i))
		before := total()
		out, errs, code := f.eval(t, "--dataset", "CIRCO", "--data", f.data, "--split", "val", "--runs", runs, "--db", db)
		if code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, out, errs)
		}
		dirs = append(dirs, runDir(t, runs))
		sent = append(sent, total()-before)
	}
	calls0, hits0 := sums(dirs[0])
	calls1, hits1 := sums(dirs[1])
	if calls0 == 0 || calls0 != sent[0] {
		t.Errorf("first run: trace calls %d, requests the servers received %d", calls0, sent[0])
	}
	if sent[1] != 0 || calls1 != 0 || hits1 != calls0+hits0 {
		t.Errorf("second run: %d requests received, trace calls %d, cache hits %d (first run: %d calls, %d hits)", sent[1], calls1, hits1, calls0, hits0)
	}
}

// TestEvalKeepReferenceMetrics: a CIRR run that keeps the reference image
// reports the official recall (reference removed) and the reference code's
// recall (reference kept) under their own keys, and metrics.txt says which
// is which.
func TestEvalKeepReferenceMetrics(t *testing.T) {
	f := newEvalFixture(t, true)
	runs := filepath.Join(f.root, "runs")
	out, errs, code := f.eval(t, "--dataset", "CIRR", "--data", f.data, "--split", "val", "--runs", runs, "--stages", "s1", "--keep-reference")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	dir := runDir(t, runs)
	var m map[string]map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, "metrics.json"))
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"recall@1", "recall@50", "recall_subset@1", "refcode_recall@1", "refcode_recall@50"} {
		if _, ok := m["stage1"][k]; !ok {
			t.Errorf("metrics.json stage1 lacks %s: %s", k, b)
		}
	}
	txt, _ := os.ReadFile(filepath.Join(dir, "metrics.txt"))
	if !strings.Contains(string(txt), "recall@K: official protocol; refcode_*: the reference ImageScope code's variant (the reference image left in the ranking)") {
		t.Errorf("metrics.txt does not say which recall is which:\n%s", txt)
	}
}

// TestIndexReferencePrompts: index captions a benchmark's gallery with the
// reference layout's caption.txt of that benchmark, as eval does.
func TestIndexReferencePrompts(t *testing.T) {
	f := newEvalFixture(t, false)
	prompts := filepath.Join(f.root, "refprompts")
	writeReferencePrompts(t, prompts, "CIRCO")
	want, _ := os.ReadFile(filepath.Join(prompts, "CIRCO", "caption.txt"))
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"index", "--config", f.cfgPath, "--dataset", "CIRCO", "--data", f.data, "--split", "val",
		"--prompts", prompts, "--db", filepath.Join(f.root, "circo.db")}, strings.NewReader(""), &out, &errb, f.env)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errb.String())
	}
	sent := f.srv.requestTexts("captioner")
	if len(sent) == 0 {
		t.Fatal("no captioner request")
	}
	for _, s := range sent {
		if s != string(want) {
			t.Fatalf("captioner request %q, want %q", s, want)
		}
	}
}
