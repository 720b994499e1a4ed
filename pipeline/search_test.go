package pipeline

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

func TestSearchChatCarriesDescriptions(t *testing.T) {
	// The reasoner echoes what it was given, so the prompt of each round
	// shows which description was carried in.
	var prompts []string
	reasoner := &scripted{reply: func(req ChatRequest) (string, error) {
		p := textOf(req)
		prompts = append(prompts, p)
		instr := ""
		for _, l := range strings.Split(p, "\n") {
			if s, ok := strings.CutPrefix(l, "New piece of the conversation: "); ok {
				instr = s
				break
			}
		}
		if instr == "bad turn" {
			return "garbage", nil
		}
		return `{"step1": [["Addition", "x"]], "step2": ["desc after ` + instr + `"]}`, nil
	}}
	vec := map[string][]float32{}
	for _, s := range []string{"desc after caption", "desc after t1", "desc after t3", "the caption", "desc after bad turn"} {
		vec[s] = []float32{1, 0}
	}
	emb := &tableEmbedder{vec: vec}
	e := newTestEngine(t, handIndex(), emb, Roles{Reasoner: reasoner}, Options{})
	var events []StageEvent
	res, err := e.Search(context.Background(), Request{Dialogue: []string{"caption", "t1", "bad turn", "t3"}}, func(ev StageEvent) {
		if !ev.Started {
			events = append(events, ev)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(prompts) != 4 || len(events) != 12 || len(res.Stages) != 12 || res.Stages[3].Stage1 == nil || res.Stages[4].Skipped == "" {
		t.Fatalf("prompts %d events %d stages %d", len(prompts), len(events), len(res.Stages))
	}
	wantPrev := []string{"a blank image", "caption", "desc after t1", "desc after t1"}
	for i, p := range prompts {
		if !strings.Contains(p, "Running description so far: "+wantPrev[i]+"\n") {
			t.Errorf("round %d prompt does not carry %q:\n%s", i, wantPrev[i], p)
		}
	}
	if res.Skipped["stage2"] == "" || res.Skipped["stage3"] == "" {
		t.Errorf("skipped stages not reported: %v", res.Skipped)
	}
	if fb := res.Stages[6].Stage1.Fallbacks; !reflect.DeepEqual(fb, []string{FallbackUnparseable}) {
		t.Errorf("round 2 fallbacks %v", fb)
	}
}

func TestSearchComposedAllStages(t *testing.T) {
	reasoner := &scripted{reply: func(req ChatRequest) (string, error) {
		if strings.Contains(textOf(req), "[question,") {
			return `{"step1": ["s"], "step2": [["Is it b?", "True"]]}`, nil
		}
		return "```json\n{\"step1\": [[\"Modification\", \"x\"]], \"step2\": [\"d1\"]}\n```", nil
	}}
	verifier := &scripted{reply: func(req ChatRequest) (string, error) {
		if string(imageOf(req)) == "b" {
			return "yes", nil
		}
		return "no", nil
	}}
	evaluator := &scripted{reply: func(req ChatRequest) (string, error) { return "ANSWER: No", nil }}
	// d1 = (1,0): c scores highest, then a; the reference a is excluded.
	emb := &tableEmbedder{vec: map[string][]float32{"d1": {1, 0}}}
	ix := handIndex()
	e, err := New(Config{Embedder: emb, Searcher: ix, Gallery: ix, Images: pngImages{}, Roles: Roles{Reasoner: reasoner, Verifier: verifier, Evaluator: evaluator}})
	if err != nil {
		t.Fatal(err)
	}
	// The verifier sees JPEG bytes from pngImages, never "b": use nameImages for stage 2.
	e.cfg.Images = nameImages{}
	res, err := e.Search(context.Background(), Request{Instruction: "make it b", Reference: "a", ExcludeReference: true, MaxStage: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, c := range res.Ranking {
		got = append(got, c.Name)
	}
	if !reflect.DeepEqual(got, []string{"b", "c"}) {
		t.Errorf("ranking %v, want b (verified) before c", got)
	}
	if res.Ranking[0].Agreement == nil || *res.Ranking[0].Agreement != 1 {
		t.Errorf("agreement %+v", res.Ranking[0])
	}
	if res.Skipped["stage3"] == "" {
		t.Error("stage 3 not reported as not requested")
	}
	if _, err := e.Search(context.Background(), Request{}, nil); err == nil {
		t.Error("empty request accepted")
	}
}
