package pipeline

import (
	"context"
	"errors"
	"image"
	"reflect"
	"strings"
	"testing"

	"github.com/imagescope/imagescope/modelrole"
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
	// Earlier rounds run stage 1 only (the carried description is all a
	// later round takes from them); the last round runs every stage.
	if len(prompts) != 4 || len(events) != 6 || len(res.Stages) != 6 || res.Stages[3].Stage1 == nil || res.Stages[3].Round != 3 || res.Stages[4].Skipped == "" {
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
	if fb := res.Stages[2].Stage1.Fallbacks; !reflect.DeepEqual(fb, []string{FallbackUnparseable}) {
		t.Errorf("round 2 fallbacks %v", fb)
	}
}

func TestSearchChatResumes(t *testing.T) {
	// Each turn continues from the state the previous turn returned: it
	// asks the reasoner once (its own round) whatever the dialogue's
	// length, and ends where a full replay ends.
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
		return `{"step1": [["Addition", "x"]], "step2": ["desc after ` + instr + `"]}`, nil
	}}
	vec := map[string][]float32{}
	for _, s := range []string{"desc after caption", "desc after t1", "desc after t2", "desc after t3", "desc after other"} {
		vec[s] = []float32{1, 0}
	}
	e := newTestEngine(t, handIndex(), &tableEmbedder{vec: vec}, Roles{Reasoner: reasoner}, Options{})
	dialogue := []string{"caption", "t1", "t2", "t3"}
	var state *ChatState
	var res *Result
	for n := 1; n <= len(dialogue); n++ {
		prompts = nil
		var err error
		res, err = e.Search(context.Background(), Request{Dialogue: dialogue[:n], Resume: state}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(prompts) != 1 || len(res.Stages) != 3 || res.Resumed != n-1 {
			t.Fatalf("turn %d: %d reasoner calls, %d stage traces, resumed %d; want 1, 3, %d", n, len(prompts), len(res.Stages), res.Resumed, n-1)
		}
		state = res.Chat
	}
	if state.Carry != "desc after t3" || len(state.Turns) != 4 {
		t.Fatalf("state after 4 turns: %+v", state)
	}
	prompts = nil
	full, err := e.Search(context.Background(), Request{Dialogue: dialogue}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(full.Ranking, res.Ranking) || !reflect.DeepEqual(full.Chat, res.Chat) || len(prompts) != 4 {
		t.Fatalf("replay differs from the resumed chat (%d prompts):\n%+v\n%+v", len(prompts), full.Chat, res.Chat)
	}
	// A state from another conversation is not used: the dialogue is replayed.
	prompts = nil
	other, err := e.Search(context.Background(), Request{Dialogue: []string{"other", "t1"}, Resume: &ChatState{Turns: []string{"caption"}, Carry: "desc after caption"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if other.Resumed != 0 || len(prompts) != 2 {
		t.Fatalf("mismatched state used: resumed %d, %d prompts", other.Resumed, len(prompts))
	}
}

func TestSearchByImage(t *testing.T) {
	// No instruction, a gallery reference: stage 1 ranks by the reference's
	// image vector (from a = (1,0), c = (1,1) scores .85*.71+.15*1 and b = (0,1) .15),
	// the reference left out; stages 2 and 3 are skipped and no model is asked.
	calls := 0
	any := &scripted{reply: func(req ChatRequest) (string, error) { calls++; return "yes", nil }}
	ix := handIndex()
	e, err := New(Config{Embedder: &tableEmbedder{}, Searcher: ix, Gallery: ix, Images: pngImages{},
		Roles: Roles{Reasoner: any, Verifier: any, Evaluator: any}})
	if err != nil {
		t.Fatal(err)
	}
	var events []StageEvent
	res, err := e.Search(context.Background(), Request{Reference: "a"}, func(ev StageEvent) {
		if !ev.Started {
			events = append(events, ev)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Errorf("%d model calls for an image-only query", calls)
	}
	for _, k := range []string{"stage2", "stage3"} {
		if res.Skipped[k] != NoTextToVerify {
			t.Errorf("%s skipped %q, want %q", k, res.Skipped[k], NoTextToVerify)
		}
	}
	var names []string
	for _, c := range res.Ranking {
		names = append(names, c.Name)
	}
	if len(names) == 0 || names[0] != "c" || slicesContains(names, "a") {
		t.Fatalf("ranking %v: want c first and no a", names)
	}
	if s1 := res.Stages[0].Stage1; !s1.ByImage || !s1.ReferenceExcluded {
		t.Errorf("stage 1 trace %+v", s1)
	}
	if len(events) != 3 || len(events[0].Ranking) == 0 || events[1].Skipped != NoTextToVerify {
		t.Errorf("events %+v", events)
	}
	// An upload needs the image embedder.
	if _, err := e.Search(context.Background(), Request{ReferenceImage: image.NewGray(image.Rect(0, 0, 2, 2))}, nil); err == nil || !strings.Contains(err.Error(), "image embedder") {
		t.Errorf("upload without an image embedder: %v", err)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
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

// TestSearchDegrades: with the reasoner and the verifier unavailable, a
// search still answers: CLIP ranks the raw text, stage 2 is skipped, and
// the result says which stages did without which role; when the roles are
// back the next search is full again.
func TestSearchDegrades(t *testing.T) {
	down := true
	reasoner := &scripted{reply: func(req ChatRequest) (string, error) {
		if down {
			return "", &RoleDownError{Role: modelrole.Reasoner, Last: errors.New("reasoner (model m): model role unavailable: connection refused")}
		}
		if strings.Contains(textOf(req), "[question,") {
			return `{"step1": ["s"], "step2": [["Is it b?", "True"]]}`, nil
		}
		return "```json\n{\"step1\": [[\"Modification\", \"x\"]], \"step2\": [\"d1\"]}\n```", nil
	}}
	verifier := &scripted{reply: func(req ChatRequest) (string, error) {
		if down {
			return "", &RoleDownError{Role: modelrole.Verifier, Last: errors.New("circuit open")}
		}
		return "yes", nil
	}}
	emb := &tableEmbedder{vec: map[string][]float32{"d1": {1, 0}, "make it b": {0, 1}}}
	ix := handIndex()
	e, err := New(Config{Embedder: emb, Searcher: ix, Gallery: ix, Images: nameImages{}, Roles: Roles{Reasoner: reasoner, Verifier: verifier}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Search(context.Background(), Request{Instruction: "make it b", MaxStage: 2}, nil)
	if err != nil {
		t.Fatalf("search failed instead of degrading: %v", err)
	}
	s1 := res.Stages[0].Stage1
	if !reflect.DeepEqual(s1.Embedded, []string{"make it b"}) || !reflect.DeepEqual(s1.Fallbacks, []string{FallbackReasonerDown}) {
		t.Errorf("stage 1 did not fall back to the raw text: %+v", s1)
	}
	if len(res.Degraded) != 2 || res.Degraded[0].Stage != 1 || !strings.Contains(res.Degraded[0].Reason, "raw query text") ||
		res.Degraded[1].Stage != 2 || !strings.Contains(res.Degraded[1].Reason, "unavailable") {
		t.Errorf("degraded = %+v", res.Degraded)
	}
	if strings.Count(res.Degraded[0].Reason, "reasoner") != 2 { // "reasoner unavailable, ...: reasoner (model m): ..."
		t.Errorf("cause repeated: %q", res.Degraded[0].Reason)
	}
	if len(res.Ranking) == 0 {
		t.Error("no ranking")
	}
	down = false
	res, err = e.Search(context.Background(), Request{Instruction: "make it b", MaxStage: 2}, nil)
	if err != nil || len(res.Degraded) != 0 || res.Stages[1].Stage2 == nil || res.Stages[1].Stage2.Skipped != "" {
		t.Fatalf("after recovery: %v %+v", err, res)
	}
	// A benchmark unit (no degrading) fails instead, so it stays resumable.
	down = true
	if _, err := e.Stage1(context.Background(), Query{ID: "q", Round: -1, Domain: "general", Instruction: "x"}); !errors.Is(err, ErrRoleDown) {
		t.Errorf("Stage1 with the reasoner down: %v", err)
	}
}
