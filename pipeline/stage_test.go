package pipeline

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagescope/imagescope/modelrole"
)

// A 3-image gallery in 2-D: image vectors and caption vectors chosen so
// the fused, description-averaged score can be worked out by hand.
func handIndex() *memIndex {
	return &memIndex{
		names:    []string{"a", "b", "c"},
		img:      [][]float32{{1, 0}, {0, 1}, {1, 1}},
		cap:      [][]float32{{0, 1}, {1, 0}, {1, 0}},
		captions: map[string]string{"a": "cap a", "b": "cap b", "c": "cap c"},
	}
}

func newTestEngine(t *testing.T, ix *memIndex, emb TextEmbedder, roles Roles, opt Options) *Engine {
	t.Helper()
	e, err := New(Config{Embedder: emb, Searcher: ix, Gallery: ix, Images: nameImages{}, Roles: roles, Options: opt})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestStage1FusedMeanHandWorked(t *testing.T) {
	// Descriptions d1 = (1,0), d2 = (0,1); tau = 0.5.
	// a: img (1,0) cap (0,1): s(d1) = .5*1 + .5*0 = .5; s(d2) = .5*0+.5*1 = .5; mean .5
	// b: img (0,1) cap (1,0): s(d1) = .5; s(d2) = .5; mean .5
	// c: img (1,1)/√2 cap (1,0): s(d1) = .5*.7071+.5*1 = .85355; s(d2) = .5*.7071 = .35355; mean .60355
	// Ranking: c, a, b (a before b: tie keeps gallery order).
	reasoner := &scripted{reply: func(ChatRequest) (string, error) {
		return "```json\n{\"step1\": [[\"Addition\", \"x\"]], \"step2\": [\"d1\", \"d2\"]}\n```", nil
	}}
	emb := &tableEmbedder{vec: map[string][]float32{"d1": {2, 0}, "d2": {0, 3}}}
	e := newTestEngine(t, handIndex(), emb, Roles{Reasoner: reasoner}, Options{Tau: 0.5})
	s1, err := e.Stage1(context.Background(), Query{ID: "q", Round: -1, Domain: "general", Instruction: "find"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s1.Names(); !reflect.DeepEqual(got, []string{"c", "a", "b"}) {
		t.Fatalf("ranking %v", got)
	}
	want := []float64{(0.5*math.Sqrt(0.5) + 0.5 + 0.5*math.Sqrt(0.5)) / 2, 0.5, 0.5}
	for i, w := range want {
		if math.Abs(float64(s1.Ranking[i].Score)-w) > 1e-6 {
			t.Errorf("score %d = %v, want %v", i, s1.Ranking[i].Score, w)
		}
	}
	if !reflect.DeepEqual(s1.Embedded, []string{"d1", "d2"}) || s1.ReferenceCaption != "a blank image" {
		t.Errorf("embedded %v ref %q", s1.Embedded, s1.ReferenceCaption)
	}
	// tau = 0 ranks by image similarity only: d1,d2 mean = (img·d1 + img·d2)/2:
	// a .5, b .5, c .7071.
	e0 := newTestEngine(t, &memIndex{names: []string{"a", "b", "c"}, img: handIndex().img, cap: handIndex().cap, noCaps: true}, emb, Roles{Reasoner: reasoner}, Options{Tau: 0.5})
	s0, err := e0.Stage1(context.Background(), Query{ID: "q", Round: -1, Domain: "general", Instruction: "find"})
	if err != nil {
		t.Fatal(err)
	}
	if s0.Tau != 0 || math.Abs(float64(s0.Ranking[0].Score)-math.Sqrt(0.5)) > 1e-6 {
		t.Errorf("no-caption gallery: tau %v top %+v", s0.Tau, s0.Ranking[0])
	}
}

func TestStage1Fallbacks(t *testing.T) {
	emb := &tableEmbedder{vec: map[string][]float32{"cap a": {1, 0}, "find red": {0, 1}, "only": {1, 1}}}
	cases := []struct {
		name      string
		reply     string
		err       error
		roles     bool
		wantDesc  []string
		wantEmbed []string
		wantFB    []string
		wantAtom  []Atomic
	}{
		{"unparseable", "I cannot help", nil, true, []string{"cap a"}, []string{"cap a"}, []string{FallbackUnparseable}, []Atomic{{"Modification", "find red"}}},
		{"step2 empty", `{"step1": [["Addition", "red"], ["Bogus", "x"], ["Removal"]], "step2": []}`, nil, true, []string{"cap a"}, []string{"cap a"}, []string{FallbackNoDescriptions}, []Atomic{{"Addition", "red"}, {"Bogus", "x"}}},
		{"call failed", "", errors.New("boom"), true, []string{"cap a"}, []string{"cap a"}, []string{FallbackReasonerFailed}, []Atomic{{"Modification", "find red"}}},
		{"repaired", "{'step1': [['addition', 'red'],], 'step2': ['only',]}", nil, true, []string{"only"}, []string{"only"}, nil, []Atomic{{"Addition", "red"}}},
		{"no reasoner", "", nil, false, nil, []string{"find red"}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var roles Roles
			if tc.roles {
				roles.Reasoner = &scripted{reply: func(ChatRequest) (string, error) { return tc.reply, tc.err }}
			}
			e := newTestEngine(t, handIndex(), emb, roles, Options{})
			s1, err := e.Stage1(context.Background(), Query{ID: "q", Round: -1, Domain: "cirr", Instruction: "find red", Reference: "a", ExcludeReference: true})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(s1.Descriptions, tc.wantDesc) || !reflect.DeepEqual(s1.Embedded, tc.wantEmbed) ||
				!reflect.DeepEqual(s1.Fallbacks, tc.wantFB) || !reflect.DeepEqual(s1.Atomic, tc.wantAtom) {
				t.Errorf("desc %q embed %q fallbacks %q atomic %v", s1.Descriptions, s1.Embedded, s1.Fallbacks, s1.Atomic)
			}
			if !s1.ReferenceExcluded || len(s1.Ranking) != 2 {
				t.Errorf("reference not excluded: %v", s1.Names())
			}
			for _, r := range s1.Ranking {
				if r.Name == "a" {
					t.Error("reference a ranked")
				}
			}
		})
	}
}

func TestStage1Subset(t *testing.T) {
	emb := &tableEmbedder{vec: map[string][]float32{"x": {1, 0}}}
	e := newTestEngine(t, handIndex(), emb, Roles{}, Options{})
	s1, err := e.Stage1(context.Background(), Query{ID: "q", Round: -1, Domain: "cirr", Instruction: "x", Reference: "a", Subset: []string{"a", "b", "zz"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s1.Names(); !reflect.DeepEqual(got, []string{"b"}) || s1.Restricted != 1 {
		t.Errorf("subset ranking %v restricted %d", got, s1.Restricted)
	}
}

func TestRerankStable(t *testing.T) {
	names := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	// Only the top 4 are re-ranked; n2 and n4 tie at 2 (n2 first), n1 and n3 tie at 1.
	got := Rerank(names, []int{1, 2, 1, 2}, 4)
	want := []string{"n2", "n4", "n1", "n3", "n5", "n6"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Rerank = %v, want %v", got, want)
	}
	if got := Rerank(names[:2], []int{0, 5, 9}, 9); !reflect.DeepEqual(got, []string{"n2", "n1"}) {
		t.Errorf("short list: %v", got)
	}
}

func TestMoveToFront(t *testing.T) {
	if got := MoveToFront([]string{"a", "b", "c", "d"}, 2); !reflect.DeepEqual(got, []string{"c", "a", "b", "d"}) {
		t.Errorf("MoveToFront = %v", got)
	}
	if got := MoveToFront([]string{"a", "b"}, 0); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("MoveToFront(0) = %v", got)
	}
}

func TestSaysYes(t *testing.T) {
	cases := []struct {
		reply       string
		word, subst bool
	}{
		{"Yes", true, true}, {"yes.", true, true}, {"No", false, false},
		{"The eyes are blue", false, true}, {"no, yesterday", false, true}, {"YES!", true, true},
	}
	for _, c := range cases {
		if SaysYes(c.reply, "word") != c.word || SaysYes(c.reply, "substring") != c.subst {
			t.Errorf("%q: word %v subst %v", c.reply, SaysYes(c.reply, "word"), SaysYes(c.reply, "substring"))
		}
	}
}

// stage-2 fixture: 4 candidates, 2 questions (expected True, False).
func stage2Engine(t *testing.T, verifier Chatter, opt Options) (*Engine, *Stage1) {
	proposer := &scripted{reply: func(ChatRequest) (string, error) {
		return "```json\n{\"step1\": [\"s1\", \"s2\"], \"step2\": [[\"Is it red?\", \"True\"], [\"Is there a dog?\", \"False\"], [\"bad entry\"], \"x\"]}\n```", nil
	}}
	ix := &memIndex{names: []string{"c1", "c2", "c3", "c4", "c5"}, img: make([][]float32, 5), cap: make([][]float32, 5)}
	e := newTestEngine(t, ix, &tableEmbedder{}, Roles{Reasoner: proposer, Verifier: verifier}, opt)
	s1 := &Stage1{Atomic: []Atomic{{"Addition", "red"}}, Ranking: []Scored{{"c1", .9}, {"c2", .8}, {"c3", .7}, {"c4", .6}, {"c5", .5}}}
	return e, s1
}

func TestStage2Scoring(t *testing.T) {
	// c1: red? no, dog? yes -> 0 agree; c2: yes/no -> 2; c3: verifier error -> 0 (failed);
	// c4: yes/yes -> 1; c5 is below K=4 and stays last.
	answers := map[string][2]string{"c1": {"no", "yes"}, "c2": {"Yes.", "No"}, "c4": {"yes", "eyes: yes"}}
	verifier := &scripted{reply: func(req ChatRequest) (string, error) {
		cand := string(imageOf(req))
		if cand == "c3" {
			return "", errors.New("HTTP 500")
		}
		if strings.Contains(textOf(req), "red") {
			return answers[cand][0], nil
		}
		return answers[cand][1], nil
	}}
	e, s1 := stage2Engine(t, verifier, Options{TopK: 4})
	s2, err := e.Stage2(context.Background(), Query{ID: "q", Round: -1, Domain: "general", Instruction: "red"}, s1)
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.Propositions) != 2 || s2.Propositions[0].Expected != true || s2.Propositions[1].Expected != false {
		t.Fatalf("propositions %+v", s2.Propositions)
	}
	if got := verifier.count(); got != 8 {
		t.Errorf("verifier calls %d, want 4x2", got)
	}
	want := []string{"c2", "c4", "c1", "c3", "c5"}
	if !reflect.DeepEqual(s2.Ranking, want) {
		t.Errorf("ranking %v, want %v", s2.Ranking, want)
	}
	got := map[string]CandidateScore{}
	for _, cs := range s2.Scores {
		got[cs.Name] = cs
	}
	if got["c2"].Agreement != 2 || got["c4"].Agreement != 1 || got["c1"].Agreement != 0 || !got["c3"].Failed {
		t.Errorf("scores %+v", s2.Scores)
	}
	if s2.Calls.Calls[string(modelrole.Verifier)] != 8 || s2.Calls.Failures[string(modelrole.Verifier)] != 2 {
		t.Errorf("calls %+v", s2.Calls)
	}
	// The substring rule counts "eyes: yes"... and "no, yesterday"-style replies as yes.
	e2, _ := stage2Engine(t, verifier, Options{TopK: 4, YesRule: "substring"})
	answers["c1"] = [2]string{"the eyes", "no"} // red? -> yes by substring -> agrees; dog? no -> agrees
	s2b, err := e2.Stage2(context.Background(), Query{ID: "q", Round: -1, Domain: "general", Instruction: "red"}, s1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s2b.Ranking, []string{"c1", "c2", "c4", "c3", "c5"}) {
		t.Errorf("substring ranking %v", s2b.Ranking)
	}
}

func TestStage2RoleDown(t *testing.T) {
	verifier := &scripted{reply: func(ChatRequest) (string, error) { return "", errors.New("connection refused") }}
	e, s1 := stage2Engine(t, verifier, Options{TopK: 4, FailureThreshold: 3, InFlight: map[modelrole.Name]int{modelrole.Verifier: 1}})
	_, err := e.Stage2(context.Background(), Query{ID: "q", Round: -1, Domain: "general", Instruction: "red"}, s1)
	if !errors.Is(err, ErrRoleDown) {
		t.Fatalf("err = %v, want role down", err)
	}
	if n := verifier.count(); n != 3 {
		t.Errorf("calls after the breaker tripped: %d, want 3", n)
	}
	if d := e.Down(); !reflect.DeepEqual(d, []modelrole.Name{modelrole.Verifier}) {
		t.Errorf("down = %v", d)
	}
}

type pngImages struct{ missing map[string]bool }

func (p pngImages) Image(ctx context.Context, name string) (ImageData, error) {
	if p.missing[name] {
		return ImageData{}, errors.New("missing")
	}
	img := image.NewRGBA(image.Rect(0, 0, 4, 4))
	img.Set(0, 0, color.RGBA{uint8(len(name)), 0, 0, 255})
	d, err := encodeJPEG(img)
	return d, err
}

func TestStage3MoveToFrontEarlyStop(t *testing.T) {
	ranking := []string{"r1", "r2", "r3", "r4"}
	cases := []struct {
		name    string
		replies map[int]string // call index -> reply; "ERR" = failure
		calls   int
		want    []string
		chosen  string
	}{
		{"second says yes", map[int]string{0: "ANSWER: No\nno", 1: "ANSWER: Yes\nfits"}, 2, []string{"r2", "r1", "r3", "r4"}, "r2"},
		{"first yes stops", map[int]string{0: "ANSWER: Yes"}, 1, ranking, "r1"},
		{"none", map[int]string{0: "ANSWER: No", 1: "answer: yes", 2: "ANSWER: No"}, 3, ranking, ""},
		{"failure is no", map[int]string{0: "ERR", 1: "ERR", 2: "ANSWER: Yes"}, 3, []string{"r3", "r1", "r2", "r4"}, "r3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			ev := &scripted{reply: func(req ChatRequest) (string, error) {
				r := tc.replies[n]
				n++
				if r == "ERR" {
					return "", errors.New("timeout")
				}
				if !strings.Contains(textOf(req), "make it blue") {
					t.Errorf("prompt lacks the cleaned instruction: %s", textOf(req))
				}
				return r, nil
			}}
			ix := handIndex()
			e, err := New(Config{Embedder: &tableEmbedder{}, Searcher: ix, Gallery: ix, Images: pngImages{}, Roles: Roles{Evaluator: ev}, Options: Options{InFlight: map[modelrole.Name]int{modelrole.Evaluator: 1}}})
			if err != nil {
				t.Fatal(err)
			}
			s3, err := e.Stage3(context.Background(), Query{ID: "q", Round: -1, Domain: "general", Instruction: "Make it blue. ", Reference: "ref"}, ranking)
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.calls || !reflect.DeepEqual(s3.Ranking, tc.want) || s3.Chosen != tc.chosen {
				t.Errorf("calls %d ranking %v chosen %q", n, s3.Ranking, s3.Chosen)
			}
			if s3.Instruction != "make it blue" {
				t.Errorf("instruction %q", s3.Instruction)
			}
		})
	}
}

func TestChatCarry(t *testing.T) {
	dlg := []string{"a caption", "q1? a1", "q2? a2", "q3? a3"}
	good := &Stage1{Descriptions: []string{"desc r1"}}
	bad := &Stage1{Descriptions: []string{"desc r1"}, Calls: Calls{Fallbacks: []string{FallbackUnparseable}}}
	if p := ChatPrevious(0, dlg, ""); p != "" {
		t.Errorf("round 0 previous %q", p)
	}
	if p := ChatPrevious(1, dlg, "whatever"); p != "a caption" {
		t.Errorf("round 1 previous %q", p)
	}
	c := NextCarry(1, dlg, "", good)
	if c != "desc r1" {
		t.Errorf("carry %q", c)
	}
	if c2 := NextCarry(2, dlg, c, bad); c2 != "desc r1" {
		t.Errorf("carry after failure %q", c2)
	}
	if p := ChatPrevious(3, dlg, "desc r2"); p != "desc r2" {
		t.Errorf("round 3 previous %q", p)
	}
}

func TestEvaluatorReasoning(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"ANSWER: Yes\nThe right image shows a dog.", "The right image shows a dog."},
		{"**ANSWER: No**. It is a cat.", "It is a cat."},
		{"The image shows a dog.\nANSWER: Yes", "The image shows a dog."},
		{"ANSWER: Yes", ""},
		{"no decision line", "no decision line"},
	} {
		if got := EvaluatorReasoning(c.in); got != c.want {
			t.Errorf("EvaluatorReasoning(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestRoleDownErrorOnce: a role-down error names the role, endpoint and
// last cause once, however often it was wrapped on the way.
func TestRoleDownErrorOnce(t *testing.T) {
	cause := errors.New("verifier (model m): model role unavailable at http://h/v1: connection refused")
	nested := &RoleDownError{Role: modelrole.Verifier, Last: &RoleDownError{Role: modelrole.Verifier, Last: cause}}
	if got := nested.Error(); got != cause.Error() {
		t.Errorf("nested: %q", got)
	}
	if got := (&RoleDownError{Role: modelrole.Verifier, Last: errors.New("HTTP 503")}).Error(); got != "verifier is unavailable: HTTP 503" {
		t.Errorf("plain cause: %q", got)
	}
	// Through the engine: consecutive failures report the role once.
	verifier := &scripted{reply: func(ChatRequest) (string, error) { return "", cause }}
	e, s1 := stage2Engine(t, verifier, Options{TopK: 4, FailureThreshold: 2, InFlight: map[modelrole.Name]int{modelrole.Verifier: 1}})
	_, err := e.Stage2(context.Background(), Query{ID: "q", Round: -1, Domain: "general", Instruction: "red"}, s1)
	if !errors.Is(err, ErrRoleDown) || strings.Count(err.Error(), "verifier") != 1 {
		t.Errorf("err = %v", err)
	}
}

// TestVerifierDownCancelsOutstandingCalls: once the verifier fails for
// good, the verifications still in flight are cancelled rather than left
// to run (they would block here until the test's deadline).
func TestVerifierDownCancelsOutstandingCalls(t *testing.T) {
	var mu sync.Mutex
	first := true
	cancelled := 0
	verifier := &scriptedCtx{reply: func(ctx context.Context, _ ChatRequest) (string, error) {
		mu.Lock()
		down := first
		first = false
		mu.Unlock()
		if down {
			time.Sleep(20 * time.Millisecond) // let the others start
			return "", fmt.Errorf("verifier at http://h/v1: %w", ErrRoleDown)
		}
		select {
		case <-ctx.Done():
			mu.Lock()
			cancelled++
			mu.Unlock()
			return "", ctx.Err()
		case <-time.After(20 * time.Second):
			return "yes", nil
		}
	}}
	e, s1 := stage2Engine(t, verifier, Options{TopK: 4, InFlight: map[modelrole.Name]int{modelrole.Verifier: 16}})
	start := time.Now()
	_, err := e.Stage2(context.Background(), Query{ID: "q", Round: -1, Domain: "general", Instruction: "red"}, s1)
	if !errors.Is(err, ErrRoleDown) {
		t.Fatalf("err = %v, want the role-down error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("stage 2 returned after %v: outstanding calls were not cancelled", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if cancelled == 0 {
		t.Error("no outstanding verification saw its context cancelled")
	}
}

// scriptedCtx is scripted with the call's context.
type scriptedCtx struct {
	reply func(ctx context.Context, req ChatRequest) (string, error)
}

func (s *scriptedCtx) Chat(ctx context.Context, req ChatRequest) (*ChatResponse, error) {
	text, err := s.reply(ctx, req)
	if err != nil {
		return nil, err
	}
	return &ChatResponse{Text: text}, nil
}
