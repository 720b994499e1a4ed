package pipeline

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagescope/imagescope/modelrole"
)

// oracle is a verifier that knows, for each image, which questions are
// true of it; it reads the image name from the request's image bytes.
type oracle struct {
	truth map[string][]string // image -> questions answered yes
	fail  map[string]bool     // "image|question" -> the call fails
}

func (o oracle) chatter() *scripted {
	return &scripted{reply: func(req ChatRequest) (string, error) {
		name := string(imageOf(req))
		text := textOf(req)
		q := text[strings.LastIndex(text, "yes or no. ")+len("yes or no. "):]
		if o.fail[name+"|"+q] {
			return "", errors.New("verifier broke")
		}
		for _, t := range o.truth[name] {
			if t == q {
				return "Yes.", nil
			}
		}
		return "No.", nil
	}}
}

func askGallery() *memIndex {
	names := []string{"a", "b", "c", "d", "e"}
	ix := &memIndex{names: names, captions: map[string]string{}}
	for _, n := range names {
		ix.img = append(ix.img, []float32{1, 0})
		ix.cap = append(ix.cap, []float32{1, 0})
		ix.captions[n] = "a dog, picture " + n
	}
	return ix
}

const askReply = "Some thinking.\n```json\n" + `{"language": "German", "yes": "ja", "no": "nein", "questions": [
 {"en": "Is there a dog?", "user": "Ist da ein Hund?"},
 {"en": "Is it on a beach?", "user": "Ist es am Strand?"},
 {"en": "is there a dog", "user": "Hund?"},
 {"en": "Is it outdoors?", "user": "Ist es draussen?"},
 {"en": "Is the dog black?", "user": "Ist der Hund schwarz?"},
 {"en": "Is it night?", "user": "Ist es Nacht?"}]}` + "\n```"

func TestAskNextChoosesTheBestSplit(t *testing.T) {
	// Top 4 probed (a..d); e is ranked 5th and must not be looked at.
	//   Is there a dog?    a b c d -> 4/4, split .5
	//   (Is it on a beach? was asked already: dropped)
	//   (is there a dog: a duplicate: dropped)
	//   Is it outdoors?    a       -> 1/4, split .25
	//   Is the dog black?  a c     -> 2/4, split 0   <- chosen
	//   Is it night?       b d     -> 2/4, split 0   (tie: later in order)
	or := oracle{truth: map[string][]string{
		"a": {"Is there a dog?", "Is it outdoors?", "Is the dog black?"},
		"b": {"Is there a dog?", "Is it night?"},
		"c": {"Is there a dog?", "Is the dog black?"},
		"d": {"Is there a dog?", "Is it night?"},
		"e": {"Is the dog black?"},
	}}
	verifier := or.chatter()
	var askPrompt string
	questioner := &scripted{reply: func(req ChatRequest) (string, error) { askPrompt = textOf(req); return askReply, nil }}
	e := newTestEngine(t, askGallery(), &tableEmbedder{}, Roles{Reasoner: &scripted{reply: func(ChatRequest) (string, error) { return "", errors.New("the reasoner must not be asked") }}, Questioner: questioner, Verifier: verifier}, Options{AskQuestions: 4, AskProbe: 4})
	dialogue := []string{"ein Hund", "Ist es am Strand? nein"}
	a, err := e.AskNext(context.Background(), dialogue, []string{"a", "b", "c", "d", "e"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range a.Questions {
		got = append(got, q.English)
	}
	want := []string{"Is there a dog?", "Is it outdoors?", "Is the dog black?", "Is it night?"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("questions %q, want %q", got, want)
	}
	best := a.Best()
	if a.Rule != AskRuleSplit || best == nil || best.English != "Is the dog black?" || best.Shown != "Ist der Hund schwarz?" {
		t.Fatalf("chose %+v by %s", best, a.Rule)
	}
	if !reflect.DeepEqual(best.YesNames, []string{"a", "c"}) || best.Yes != 2 || best.Answered != 4 || best.Split != 0 {
		t.Errorf("chosen question's split %+v", best)
	}
	splits := []float64{a.Questions[0].Split, a.Questions[1].Split, a.Questions[3].Split}
	if !reflect.DeepEqual(splits, []float64{0.5, 0.25, 0}) {
		t.Errorf("splits %v", splits)
	}
	if a.Language != "German" || a.Yes != "ja" || a.No != "nein" || !reflect.DeepEqual(a.Probed, []string{"a", "b", "c", "d"}) {
		t.Errorf("language %q probed %v", a.Language, a.Probed)
	}
	// Cost: one questioner call and questions x probed verifier calls.
	if a.Calls.Calls[string(modelrole.Questioner)] != 1 || a.Calls.Calls[string(modelrole.Verifier)] != 16 || verifier.count() != 16 {
		t.Errorf("calls %v (verifier saw %d)", a.Calls.Calls, verifier.count())
	}
	for _, req := range verifier.reqs {
		if string(imageOf(req)) == "e" {
			t.Error("the 5th candidate was probed")
		}
	}
	for _, s := range []string{"(0) ein Hund\n(1) Ist es am Strand? nein", "(4) a dog, picture d", "up to 4 questions", "English"} {
		if !strings.Contains(askPrompt, s) {
			t.Errorf("questioner prompt lacks %q:\n%s", s, askPrompt)
		}
	}
	if strings.Contains(askPrompt, "picture e") {
		t.Error("questioner saw a caption beyond the probed candidates")
	}
}

func TestAskNextFailuresAndFallbacks(t *testing.T) {
	ctx := context.Background()
	reply := func(s string) *scripted { return &scripted{reply: func(ChatRequest) (string, error) { return s, nil }} }
	two := "```json\n" + `{"questions": ["Is it red?", "Is it big?"]}` + "\n```"
	// A failed verification leaves that question less evidence: "Is it
	// red?" answered yes by a only (b failed) = 1/1, split .5; "Is it
	// big?" yes on a, no on b = 1/2, split 0.
	or := oracle{truth: map[string][]string{"a": {"Is it red?", "Is it big?"}}, fail: map[string]bool{"b|Is it red?": true}}
	e := newTestEngine(t, askGallery(), &tableEmbedder{}, Roles{Reasoner: reply(two), Verifier: or.chatter()}, Options{AskProbe: 2})
	a, err := e.AskNext(ctx, []string{"something"}, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if b := a.Best(); b == nil || b.English != "Is it big?" || b.Shown != "Is it big?" || a.Questions[0].Answered != 1 || a.Calls.Failures[string(modelrole.Verifier)] != 1 {
		t.Errorf("with a failed verification: %+v", a)
	}
	// No verifier: the questioner's first question, by rule "first".
	e = newTestEngine(t, askGallery(), &tableEmbedder{}, Roles{Reasoner: reply(two)}, Options{})
	if a, err = e.AskNext(ctx, []string{"something"}, []string{"a"}); err != nil || a.Rule != AskRuleFirst || a.Best().English != "Is it red?" || a.Yes != "yes" || a.No != "no" {
		t.Errorf("no verifier: %+v %v", a, err)
	}
	// Unparseable reply and failed questioner: no question, a fallback.
	e = newTestEngine(t, askGallery(), &tableEmbedder{}, Roles{Reasoner: reply("I have no idea")}, Options{})
	if a, err = e.AskNext(ctx, []string{"x"}, []string{"a"}); err != nil || a.Best() != nil || !reflect.DeepEqual(a.Fallbacks, []string{FallbackNoQuestions}) {
		t.Errorf("unparseable: %+v %v", a, err)
	}
	broken := &scripted{reply: func(ChatRequest) (string, error) { return "", errors.New("boom") }}
	e = newTestEngine(t, askGallery(), &tableEmbedder{}, Roles{Reasoner: broken}, Options{})
	if a, err = e.AskNext(ctx, []string{"x"}, []string{"a"}); err != nil || a.Best() != nil || a.Error == "" {
		t.Errorf("failed questioner: %+v %v", a, err)
	}
	// No questioner at all.
	e = newTestEngine(t, askGallery(), &tableEmbedder{}, Roles{}, Options{})
	if _, err = e.AskNext(ctx, []string{"x"}, []string{"a"}); err == nil {
		t.Error("asked back without a questioner")
	}
}

func TestParseQuestionsAndTurn(t *testing.T) {
	lang, qs, ok := ParseQuestions(`{"language":"French","questions":[{"user":"Y a-t-il un chat ?"}, 7, {"en":"  "}, "Is it red?"]}`, []string{"un chat", "is it red? non"}, 0)
	if !ok || lang != "French" || len(qs) != 1 || qs[0].English != "Y a-t-il un chat ?" {
		t.Errorf("got %q %+v %v", lang, qs, ok)
	}
	if _, _, ok := ParseQuestions("nothing", nil, 0); ok {
		t.Error("no JSON parsed as questions")
	}
	for _, c := range [][3]string{{"Is it red?", "yes", "Is it red? yes"}, {"Est-ce rouge ?", "oui", "Est-ce rouge? oui"}, {" Is it big ", " no ", "Is it big? no"}} {
		if got := Turn(c[0], c[1]); got != c[2] {
			t.Errorf("Turn(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
	if ChooseQuestion(nil) != -1 {
		t.Error("chose from nothing")
	}
}

// A query in another language reaches the reasoner as written, with the
// rule to answer in English; CLIP only sees the English descriptions, and
// the question offered back is in the user's language.
func TestSearchAnyLanguageAsksBack(t *testing.T) {
	var reasonPrompts []string
	reasoner := &scripted{reply: func(req ChatRequest) (string, error) {
		p := textOf(req)
		if strings.Contains(p, "Propose up to") {
			if !strings.Contains(p, "(0) un chien noir sur la plage\n(1) Est-ce la nuit ? non") {
				return "", errors.New("questioner prompt lacks the dialogue: " + p)
			}
			return `{"language": "French", "questions": [{"en": "Is the dog running?", "user": "Le chien court-il ?"}]}`, nil
		}
		reasonPrompts = append(reasonPrompts, p)
		if !strings.Contains(p, "write every atomic instruction and the description in English") {
			return "", errors.New("reasoner prompt lacks the language rule")
		}
		return `{"step1": [["Addition", "a black dog on a beach"]], "step2": ["A black dog on a beach."]}`, nil
	}}
	emb := &tableEmbedder{vec: map[string][]float32{"A black dog on a beach.": {1, 0}}}
	or := oracle{truth: map[string][]string{"b": {"Is the dog running?"}}}
	e := newTestEngine(t, askGallery(), emb, Roles{Reasoner: reasoner, Verifier: or.chatter()}, Options{})
	res, err := e.Search(context.Background(), Request{Dialogue: []string{"un chien noir sur la plage", "Est-ce la nuit ? non"}, MaxStage: 1, Ask: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(reasonPrompts) != 2 || !strings.Contains(reasonPrompts[0], "un chien noir sur la plage") || !strings.Contains(reasonPrompts[1], "Est-ce la nuit ? non") {
		t.Fatalf("reasoner prompts %q", reasonPrompts)
	}
	for _, s := range emb.texts {
		if s != "A black dog on a beach." {
			t.Errorf("CLIP was given %q", s)
		}
	}
	b := res.Ask.Best()
	if b == nil || b.Shown != "Le chien court-il ?" || b.English != "Is the dog running?" || b.Yes != 1 || b.Answered != 5 {
		t.Fatalf("asked back %+v", res.Ask)
	}
	if _, err := e.Search(context.Background(), Request{Instruction: "x", Reference: "a", Ask: true}, nil); err == nil {
		t.Error("a composed query was asked back")
	}
}

func ExampleTurn() {
	fmt.Println(Turn("Is the dog black?", "yes"))
	fmt.Println(Turn("Ist der Hund schwarz?", "nein"))
	// Output:
	// Is the dog black? yes
	// Ist der Hund schwarz? nein
}

// TestAskProbeVerifierDownCancelsOutstandingCalls: the probe shares stage
// 2's fan-out, so a verifier that fails for good ends it at once too.
func TestAskProbeVerifierDownCancelsOutstandingCalls(t *testing.T) {
	var mu sync.Mutex
	first, cancelled := true, 0
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
	two := "```json\n" + `{"questions": ["Is it red?", "Is it big?"]}` + "\n```"
	questioner := &scripted{reply: func(ChatRequest) (string, error) { return two, nil }}
	e := newTestEngine(t, askGallery(), &tableEmbedder{}, Roles{Reasoner: questioner, Verifier: verifier},
		Options{AskProbe: 4, InFlight: map[modelrole.Name]int{modelrole.Verifier: 16}})
	start := time.Now()
	_, err := e.AskNext(context.Background(), []string{"something"}, []string{"a", "b", "c", "d"})
	if !errors.Is(err, ErrRoleDown) {
		t.Fatalf("err = %v, want the role-down error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the probe returned after %v: outstanding calls were not cancelled", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if cancelled == 0 {
		t.Error("no outstanding probe call saw its context cancelled")
	}
}
